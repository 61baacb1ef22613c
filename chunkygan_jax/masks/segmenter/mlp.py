"""The DatasetGAN-style head: an MLP ensemble trained on generated samples with label maps (annotated
by hand, or labelled by the k-means head), and reading those annotations."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ... import io
from ...errors import CheckpointError, ConfigError, ImageError
from ...files import check_writable
from .features import DEFAULT_NOISE_MODE, code_shape, feature_dim, pixel_features, resolve_layers
from .heads import MASK_SMOOTHING, MLPHead, Segmenter, finish_masks, init_mlp, make_segmenter
from .kmeans import kmeans_segmenter
from .store import SEGMENTER_KIND, save_segmenter

LATENT_KINDS = ("auto", "z", "w", "ws")


@dataclasses.dataclass(frozen=True)
class MLPSettings:
    members: int = 3
    hidden: tuple = (64, 32)
    steps: int = 300
    lr: float = 3e-3
    batch_size: int = 4
    seed: int = 0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d


def _mlp_train_fns(generator, layers, noise_mode, smoothing, optimizer):
    def loss_fn(params, codes, labels):
        feats = jax.lax.stop_gradient(pixel_features(generator, codes, layers, noise_mode=noise_mode))  # [B, h, h, D]
        head = MLPHead(params=params, temperature=jnp.float32(1.0))
        probs = jax.nn.softmax(head.member_logits(feats), axis=-1)  # [E, B, h, h, n]
        probs = finish_masks(probs, smoothing, labels.shape[-1])  # as the segmenter outputs them
        picked = jnp.take_along_axis(probs, labels[None, ..., None], axis=-1)[..., 0]
        return -jnp.mean(jnp.log(picked + 1e-6)) * probs.shape[0]  # members train independently

    @jax.jit
    def step(params, opt_state, codes, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, codes, labels)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def train_mlp(generator, ws, labels, segments: int, *, layers=None, settings: MLPSettings | None = None,
              noise_mode: str = DEFAULT_NOISE_MODE, smoothing: float = MASK_SMOOTHING, callback=None) -> Segmenter:
    """Train the DatasetGAN-style head on generated samples: codes of the generator's segment space
    ws [N, *code_shape] (StyleGAN2 W+ [N, num_ws, w_dim], DCGAN z [N, z_dim]), labels [N, R, R]
    (indices 0..n-1 at the generator resolution). Cross-entropy is taken on the masks as the segmenter
    outputs them (smoothed, upsampled to R), so the trained head reproduces the label maps at full
    resolution."""
    settings = settings or MLPSettings()
    layers = resolve_layers(generator, layers)
    ws = np.asarray(ws, np.float32)
    labels = np.asarray(labels).astype(np.int32)
    r = generator.resolution
    shape = code_shape(generator)
    if ws.shape[1:] != shape:
        raise ConfigError(f"codes must be [N, {', '.join(map(str, shape))}], got {list(ws.shape)}")
    if labels.shape != (len(ws), r, r):
        raise ImageError(f"labels must be [{len(ws)}, {r}, {r}], got {labels.shape}")
    if labels.min() < 0 or labels.max() >= segments:
        raise ImageError(f"label maps hold indices {int(labels.min())}..{int(labels.max())}, "
                         f"expected 0..{segments - 1}")
    if settings.steps < 1 or settings.members < 1 or settings.batch_size < 1:
        raise ConfigError("MLP steps, members and batch_size must be >= 1")
    params = init_mlp(settings.seed, feature_dim(generator, layers), segments, members=settings.members,
                      hidden=settings.hidden)
    optimizer = optax.adam(optax.cosine_decay_schedule(settings.lr, settings.steps, alpha=0.05))
    opt_state = jax.jit(optimizer.init)(params)  # one compilation instead of one per leaf
    step = _mlp_train_fns(generator, layers, noise_mode, smoothing, optimizer)
    rng = np.random.RandomState(settings.seed)
    b = min(settings.batch_size, len(ws))
    order = np.array([], np.int64)
    for i in range(settings.steps):
        if len(order) < b:
            order = np.concatenate([order, rng.permutation(len(ws))])
        idx, order = order[:b], order[b:]
        params, opt_state, loss = step(params, opt_state, ws[idx], labels[idx])
        if callback is not None and ((i + 1) % 50 == 0 or i + 1 == settings.steps):
            callback(i + 1, settings.steps, float(loss) / settings.members)
    return make_segmenter(generator, MLPHead(params=params, temperature=jnp.float32(1.0)), layers=layers,
                          noise_mode=noise_mode, smoothing=smoothing)


def label_maps(segmenter: Segmenter, ws, batch_size: int = 8) -> np.ndarray:
    """argmax labels [N, R, R] of the segmenter's masks for codes ws [N, *code_shape]."""
    ws = np.asarray(ws, np.float32)
    return np.concatenate([np.argmax(np.asarray(segmenter.masks_for_code(ws[i:i + batch_size])), axis=1)
                           for i in range(0, len(ws), batch_size)]).astype(np.int32)


# ---------------------------------------------------------------------------------------- annotations
def read_latent(path, generator, latent: str = "auto") -> np.ndarray:
    """A `.npy` latent -> a code of the generator's segment space. StyleGAN2 (-> W+ [num_ws, w_dim]):
    z [z_dim], w [w_dim] (or [1, w_dim]), ws [num_ws, w_dim]; when z_dim == w_dim a 1-D file is
    ambiguous: pass latent='z' or 'w'. A generator without a mapping (the DCGAN): its code, z [z_dim]."""
    if latent not in LATENT_KINDS:
        raise ConfigError(f"latent must be one of {LATENT_KINDS}, got {latent!r}")
    g = generator
    if "w" not in g.latent_spaces:
        return _read_code(path, g, latent)
    a = _load_latent_file(path)
    if a.ndim == 2 and a.shape[0] == 1:
        a = a[0]
    kind = latent
    if kind == "auto":
        if a.ndim == 2:
            kind = "ws"
        elif a.ndim == 1 and g.config.z_dim == g.w_dim and a.shape[0] == g.w_dim:
            raise ConfigError(f"{path}: a 1-D latent of length {a.shape[0]} may be z or w for this generator "
                              "(z_dim == w_dim); say which with --latent=z or --latent=w")
        elif a.ndim == 1 and a.shape[0] == g.config.z_dim:
            kind = "z"
        elif a.ndim == 1 and a.shape[0] == g.w_dim:
            kind = "w"
    expected = {"z": (g.config.z_dim,), "w": (g.w_dim,), "ws": (g.num_ws, g.w_dim)}
    if kind == "auto" or a.shape != expected[kind]:
        raise ImageError(f"{path}: latent has shape {a.shape}; expected z {expected['z']}, w {expected['w']} "
                         f"or ws {expected['ws']}" + ("" if kind == "auto" else f" (reading it as {kind})"))
    if kind == "z":
        return np.asarray(g.mapping(jnp.asarray(a[None])))[0]
    if kind == "w":
        return np.broadcast_to(a, (g.num_ws, g.w_dim)).copy()
    return a


def _read_code(path, generator, latent):
    shape = code_shape(generator)
    if latent not in ("auto", generator.segment_space):
        raise ConfigError(f"this generator's latents are {generator.segment_space} codes; --latent={latent} "
                          "does not apply")
    a = _load_latent_file(path)
    if a.shape != shape and a.shape[1:] == shape and a.shape[0] == 1:
        a = a[0]
    if a.shape != shape:
        raise ImageError(f"{path}: latent has shape {a.shape}; expected a {generator.segment_space} code {shape}")
    return a


def _load_latent_file(path) -> np.ndarray:
    """A `.npy` of finite floats -> float32 (no pickles); anything else is one ImageError naming the file."""
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ImageError(f"{path}: not a readable .npy latent ({e})") from None
    if not np.issubdtype(a.dtype, np.floating) or not np.all(np.isfinite(a)):
        raise ImageError(f"{path}: latent must hold finite floats, got dtype {a.dtype}")
    return a.astype(np.float32)


def load_annotations(directory, generator, *, latent="auto", need_labels=True):
    """Pairs `<name>.npy` (latent) + `<name>.png` (label map) -> (names, codes [N, *code_shape],
    labels [N, R, R] int32 or None when need_labels is False)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ImageError(f"annotations directory not found: {directory}")
    latents = {p.stem: p for p in sorted(directory.glob("*.npy"))}
    pngs = {p.stem: p for p in sorted(directory.glob("*.png"))}
    if not latents:
        raise ImageError(f"{directory}: no <name>.npy latents found")
    if need_labels:
        missing = sorted(set(latents) ^ set(pngs))
        if missing:
            raise ImageError(f"{directory}: every <name>.npy needs a <name>.png label map and vice versa; "
                             f"unpaired: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    names = sorted(latents)
    ws = np.stack([read_latent(latents[n], generator, latent) for n in names])
    labels = np.stack([io.load_label_map(pngs[n], generator.resolution) for n in names]) if need_labels else None
    return names, ws, labels


def train_segmenter(generator, output, segments: int, *, annotations=None, from_kmeans=False, samples=16,
                    latent="auto", layers=None, settings: MLPSettings | None = None, cache_dir=None,
                    overwrite=False, callback=None) -> tuple[Segmenter, dict]:
    """Train an MLP head and save it to `output`. Labels come from the label maps in `annotations`, or
    with from_kmeans=True from the k-means head's argmax (for the annotation latents, or for `samples`
    random ones when no annotations are given). Returns (segmenter, record with training accuracy)."""
    settings = settings or MLPSettings()
    seed = settings.seed  # the samples, the k-means head and the MLP's initialisation
    if not isinstance(segments, (int, np.integer)) or segments < 1:
        raise ConfigError(f"segments must be an integer >= 1, got {segments!r}")
    layers = resolve_layers(generator, layers)
    output = Path(output)
    check_writable(output, overwrite, is_dir=True, kind=SEGMENTER_KIND, error=CheckpointError)  # before training
    if annotations is not None:
        names, ws, labels = load_annotations(annotations, generator, latent=latent, need_labels=not from_kmeans)
    elif from_kmeans:
        if not isinstance(samples, (int, np.integer)) or samples < 1:
            raise ConfigError(f"samples must be an integer >= 1, got {samples!r}")
        ws, labels = generator.sample_codes(samples, seed + 1), None
        names = [f"sample{i}" for i in range(samples)]
    else:
        raise ConfigError("give an annotations directory, or from_kmeans to label random samples")
    if from_kmeans:
        km = kmeans_segmenter(generator, segments, layers=layers, seed=seed, cache_dir=cache_dir)
        labels = label_maps(km, ws)
    seg = train_mlp(generator, ws, labels, segments, layers=layers, settings=settings, callback=callback)
    accuracy = float(np.mean(label_maps(seg, ws) == labels))
    record = save_segmenter(seg, output, overwrite=overwrite, info={
        "training": {**settings.to_dict(), "samples": len(names), "labels": "kmeans" if from_kmeans else "annotations",
                     "pixel_accuracy": accuracy}})
    return seg, record
