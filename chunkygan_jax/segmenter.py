"""The segment generator G^S (paper sec. 3): soft masks from the image generator's own features.

    S = G^S(X^S) = upsample( mean_e softmax( head_e( phi(X^S) ) / T ) )        [n, R, R]

phi(X^S): the code X^S (a W+ code [num_ws, w_dim], starting at w_avg) goes through the image generator's
synthesis blocks at a few middle resolutions (`layers`); only the blocks up to the largest one run and no
ToRGB. Each block's activation is bilinearly upsampled to the mask resolution h = max(layers),
normalised to unit L2 norm over its channels at every pixel (so every block weighs the same whatever its
channel count or activation scale), and the blocks are concatenated per pixel and divided by
sqrt(#blocks): phi is a unit vector of D = sum of the blocks' channels at each of the h x h pixels.

Heads (per-pixel, shared over pixels):
  - KMeansHead (unsupervised, no annotation): n centroids of a spherical k-means over phi of many random
    samples (z -> mapping -> synthesis); logits are cosine similarities, T is chosen at fit time so that
    the median sampled pixel gives its nearest centroid 9x the weight of the runner-up.
  - MLPHead (DatasetGAN-style): an ensemble of small per-pixel MLPs trained with optax on generated
    samples with label maps; the members' softmaxes are averaged.
The per-pixel probabilities at h are bilinearly upsampled to the generator's resolution R; bilinear
weights are convex, so the masks still sum to 1.

`Segmenter` is a mask source (see masks.py): init(n) -> {"segment_code": X^S} ({} when frozen),
masks(params) -> [n, R, R]; it is a pytree (generator and head are leaves, the layer choice is static), so
an inversion closes over it in jit and optimises X^S with the segment codes. Because X^S lives in the
generator's own W+ space, an edit direction can move it (`masks_for_code`) so that the segments follow.

Checkpoints (trained heads and the k-means cache) are directories with `head.npz` and `segmenter.json`
(format version, head kind, n, layers, temperature, fit/training settings and the generator's identity:
a sha256 of its config and parameters). A head only loads onto the generator it was fitted on.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import io
from .errors import CheckpointError, ConfigError, ImageError
from .results import flatten_tree, unflatten_tree

FORMAT_VERSION = 1
RECORD_NAME = "segmenter.json"
HEAD_NAME = "head.npz"
HEAD_KINDS = ("kmeans", "mlp")
LATENT_KINDS = ("auto", "z", "w", "ws")
# T is set so that, at the median sampled pixel, the nearest centroid gets this many times the weight of
# the second nearest (0.9 vs 0.1 with two segments): soft enough for gradients to move the borders.
KMEANS_MEDIAN_ODDS = 9.0
# Features are taken without the synthesis noise inputs: the segment layout should follow the image's
# structure, not per-pixel stochastic detail (with random weights, "const" noise scatters single pixels
# into their own segment; see docs/segmenter.md).
DEFAULT_NOISE_MODE = "none"
_EPS = 1e-8


# ---------------------------------------------------------------------------------------- features
def default_layers(generator) -> tuple[int, ...]:
    """Up to three middle resolutions: the largest blocks with 8 <= res <= min(R / 2, 256)
    (64 px: 8, 16, 32; 256 px: 32, 64, 128; 1024 px: 64, 128, 256)."""
    blocks = generator.config.block_resolutions
    usable = [r for r in blocks if 8 <= r <= min(generator.resolution // 2, 256)] or blocks[-1:]
    return tuple(usable[-3:])


def resolve_layers(generator, layers=None) -> tuple[int, ...]:
    """Validated, sorted feature layers (`default_layers` when None)."""
    if not (hasattr(generator, "features") and hasattr(generator, "w_avg")):
        raise ConfigError(f"the segment generator needs a StyleGAN generator (W+ codes and synthesis block "
                          f"features); got {type(generator).__name__}")
    layers = tuple(sorted(set(int(r) for r in (default_layers(generator) if layers is None else layers))))
    blocks = generator.config.block_resolutions
    if not layers or any(r not in blocks for r in layers):
        raise ConfigError(f"segmenter layers must be synthesis block resolutions {blocks}, got {list(layers)}")
    return layers


def pixel_features(generator, ws, layers, *, noise_mode=DEFAULT_NOISE_MODE):
    """phi: W+ codes [N, num_ws, w_dim] -> unit per-pixel features [N, h, h, D], h = max(layers)."""
    feats = generator.features(ws, layers, noise_mode=noise_mode)
    h = max(layers)
    parts = []
    for r in sorted(feats):
        f = feats[r].astype(jnp.float32)
        if r != h:
            f = jax.image.resize(f, (f.shape[0], h, h, f.shape[-1]), method="bilinear")
        f = f * jax.lax.rsqrt(jnp.sum(jnp.square(f), axis=-1, keepdims=True) + _EPS)
        parts.append(f)
    return jnp.concatenate(parts, axis=-1) / math.sqrt(len(parts))


def feature_dim(generator, layers) -> int:
    return int(sum(generator.config.channels_at(r) for r in layers))


@jax.jit
def _map_z(generator, z):
    return generator.mapping(z)


def sample_ws(generator, num: int, seed: int) -> np.ndarray:
    """W+ codes [num, num_ws, w_dim] of random samples: z ~ N(0, I) from numpy RandomState(seed)."""
    z = np.random.RandomState(seed).randn(num, generator.config.z_dim).astype(np.float32)
    return np.asarray(_map_z(generator, jnp.asarray(z)))


def generator_fingerprint(generator) -> str:
    """sha256 over the generator's config and every parameter (name, shape, dtype, bytes)."""
    h = hashlib.sha256()
    config = generator.config.to_dict() if hasattr(generator.config, "to_dict") else repr(generator.config)
    h.update(json.dumps(config, sort_keys=True).encode())
    for name, value in sorted(flatten_tree(generator.params).items()):
        a = np.ascontiguousarray(np.asarray(value))
        h.update(f"{name}|{a.shape}|{a.dtype.str}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------- heads
@flax.struct.dataclass
class KMeansHead:
    """Spherical k-means: logits = cosine similarity to each centroid / temperature."""

    centroids: jax.Array  # [n, D], unit rows
    temperature: jax.Array  # scalar

    kind = "kmeans"

    @property
    def segments(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.centroids.shape[1])

    def probabilities(self, feats):
        return jax.nn.softmax(feats @ self.centroids.T / self.temperature, axis=-1)

    def arrays(self) -> dict:
        return {"centroids": self.centroids, "temperature": self.temperature}

    @classmethod
    def from_arrays(cls, arrays):
        return cls(centroids=jnp.asarray(arrays["centroids"], jnp.float32),
                   temperature=jnp.asarray(arrays["temperature"], jnp.float32))


@flax.struct.dataclass
class MLPHead:
    """An ensemble of per-pixel MLPs (ReLU), members stacked on the leading axis of every weight; the
    masks are the members' softmaxes averaged. Inputs are scaled by sqrt(D) so that unit phi vectors
    have entries of about unit variance."""

    params: dict  # {"layer<i>": {"w": [E, in, out], "b": [E, out]}}
    temperature: jax.Array  # scalar

    kind = "mlp"

    @property
    def segments(self) -> int:
        return int(self.params[f"layer{len(self.params) - 1}"]["b"].shape[-1])

    @property
    def input_dim(self) -> int:
        return int(self.params["layer0"]["w"].shape[1])

    @property
    def members(self) -> int:
        return int(self.params["layer0"]["b"].shape[0])

    def member_logits(self, feats):
        """[..., D] -> [E, ..., n]."""
        x = feats * math.sqrt(feats.shape[-1])
        x = jnp.broadcast_to(x, (self.members,) + x.shape)
        depth = len(self.params)
        for i in range(depth):
            p = self.params[f"layer{i}"]
            extra = (1,) * (x.ndim - 2)
            x = jnp.einsum("e...i,eio->e...o", x, p["w"]) + p["b"].reshape((p["b"].shape[0],) + extra + (-1,))
            if i < depth - 1:
                x = jax.nn.relu(x)
        return x

    def probabilities(self, feats):
        return jnp.mean(jax.nn.softmax(self.member_logits(feats) / self.temperature, axis=-1), axis=0)

    def arrays(self) -> dict:
        return {"params": self.params, "temperature": self.temperature}

    @classmethod
    def from_arrays(cls, arrays):
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), arrays["params"])
        return cls(params=params, temperature=jnp.asarray(arrays["temperature"], jnp.float32))


_HEADS = {"kmeans": KMeansHead, "mlp": MLPHead}


def init_mlp(seed: int, feature_dim: int, segments: int, *, members=3, hidden=(64, 32)) -> dict:
    """He-normal weights, zero biases (numpy RandomState(seed): no device work before training)."""
    rng = np.random.RandomState(seed)
    dims = (feature_dim,) + tuple(hidden) + (segments,)
    return {f"layer{i}": {"w": (rng.standard_normal((members, a, b)) * math.sqrt(2.0 / a)).astype(np.float32),
                          "b": np.zeros((members, b), np.float32)}
            for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))}


# ---------------------------------------------------------------------------------------- the mask source
@flax.struct.dataclass
class Segmenter:
    """G^S: masks from the generator's features for the segment code X^S, through a per-pixel head.

    Mask-source protocol: init(n) -> {"segment_code": X^S [num_ws, w_dim]} ({} when frozen; the fixed
    `code` is then used), masks(params) -> [n, R, R] summing to 1 per pixel. A frozen segmenter made by
    `freeze()` / `with_code()` keeps its masks, so an inversion does not recompute constant masks per step."""

    generator: Any
    head: Any  # KMeansHead | MLPHead
    code: jax.Array  # initial (or, when frozen, fixed) X^S [num_ws, w_dim]
    layers: tuple = flax.struct.field(pytree_node=False)
    frozen: bool = flax.struct.field(pytree_node=False, default=False)
    noise_mode: str = flax.struct.field(pytree_node=False, default=DEFAULT_NOISE_MODE)
    fixed_masks: Any = None  # [n, R, R] for `code`, kept when frozen (None: computed on demand)

    @property
    def segments(self) -> int:
        return self.head.segments

    @property
    def resolution(self) -> int:
        return self.generator.resolution

    @property
    def feature_resolution(self) -> int:
        return max(self.layers)

    def init(self, n: int) -> dict:
        if n != self.segments:
            raise ConfigError(f"this segmenter makes {self.segments} segments, {n} were asked for")
        return {} if self.frozen else {"segment_code": self.code}

    def masks(self, params: dict):
        if self.frozen:
            return self.fixed_masks if self.fixed_masks is not None else self.masks_for_code(self.code)
        return self.masks_for_code(params["segment_code"])

    def freeze(self, frozen: bool = True) -> "Segmenter":
        """The same segmenter with X^S fixed at `code` (frozen=True) or learned (False)."""
        fixed = self.masks_for_code(self.code) if frozen else None
        return self.replace(frozen=frozen, fixed_masks=fixed)

    def with_code(self, code) -> "Segmenter":
        """The same segmenter starting at (or, when frozen, fixed at) another X^S."""
        return self.replace(code=self._as_ws(code)[0], fixed_masks=None).freeze(self.frozen)

    def _as_ws(self, code):
        """[w_dim], [1, w_dim], [num_ws, w_dim] or [B, num_ws, w_dim] -> [B, num_ws, w_dim]."""
        g = self.generator
        code = jnp.asarray(code, jnp.float32)
        if code.ndim == 1:
            code = code[None]
        if code.ndim == 2:
            code = code[None]
        if code.ndim != 3 or code.shape[-1] != g.w_dim or code.shape[1] not in (1, g.num_ws):
            raise ConfigError(f"segment code must be [num_ws={g.num_ws}, w_dim={g.w_dim}] (or [w_dim], or "
                              f"batched), got {tuple(code.shape)}")
        return jnp.broadcast_to(code, (code.shape[0], g.num_ws, g.w_dim))

    def masks_for_code(self, code, resolution: int | None = None):
        """Masks for any segment code (e.g. X^S moved by an edit direction): [num_ws, w_dim] ->
        [n, R, R]; a batch [B, num_ws, w_dim] -> [B, n, R, R]. `resolution` defaults to the generator's;
        `feature_resolution` gives the head's own per-pixel decisions without upsampling."""
        batched = jnp.ndim(code) == 3
        r = self.resolution if resolution is None else int(resolution)
        m = head_masks(self.generator, self.head, self._as_ws(code), layers=self.layers,
                       noise_mode=self.noise_mode, resolution=r)
        return m if batched else m[0]


# jitted so that eager calls (editing, label maps) do not run op by op; inside an outer jit (the inversion
# step) it is simply inlined.
@functools.partial(jax.jit, static_argnames=("layers", "noise_mode", "resolution"))
def head_masks(generator, head, ws, *, layers, noise_mode, resolution):
    """ws [B, num_ws, w_dim] -> masks [B, n, resolution, resolution] (features -> head -> upsampling)."""
    probs = head.probabilities(pixel_features(generator, ws, layers, noise_mode=noise_mode))  # [B, h, h, n]
    if resolution != probs.shape[1]:
        probs = jax.image.resize(probs, (probs.shape[0], resolution, resolution, probs.shape[-1]),
                                 method="bilinear")
    return jnp.moveaxis(probs, -1, 1)


def make_segmenter(generator, head, *, layers=None, code=None, frozen=False,
                   noise_mode=DEFAULT_NOISE_MODE) -> Segmenter:
    layers = resolve_layers(generator, layers)
    if noise_mode not in ("none", "const"):
        raise ConfigError(f"segmenter noise_mode must be 'none' or 'const', got {noise_mode!r}")
    d = feature_dim(generator, layers)
    if head.input_dim != d:
        raise ConfigError(f"head expects {head.input_dim} features per pixel, layers {list(layers)} give {d}")
    if code is None:
        code = jnp.broadcast_to(generator.w_avg, (generator.num_ws, generator.w_dim))
    seg = Segmenter(generator=generator, head=head, code=jnp.zeros((generator.num_ws, generator.w_dim)),
                    layers=layers, frozen=frozen, noise_mode=noise_mode)
    return seg.with_code(code)


# ---------------------------------------------------------------------------------------- k-means
@dataclasses.dataclass(frozen=True)
class KMeansSettings:
    samples: int = 64  # random generator samples
    pixels_per_sample: int = 256  # feature pixels drawn from each sample (bounds memory)
    iterations: int = 50
    restarts: int = 3
    batch_size: int = 8

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@functools.partial(jax.jit, static_argnames=("layers", "noise_mode"))
def _sampled_features(generator, ws, index, layers, noise_mode):
    f = pixel_features(generator, ws, layers, noise_mode=noise_mode)
    f = f.reshape(f.shape[0], -1, f.shape[-1])
    return jnp.take_along_axis(f, index[..., None], axis=1)


def collect_features(generator, layers, settings: KMeansSettings, seed: int, noise_mode: str) -> np.ndarray:
    """phi at `pixels_per_sample` random pixels of each of `samples` random samples -> [N, D] float32."""
    layers = resolve_layers(generator, layers)
    h = max(layers)
    rng = np.random.RandomState(seed)
    ws = sample_ws(generator, settings.samples, seed)
    per = min(settings.pixels_per_sample, h * h)
    index = np.stack([rng.choice(h * h, per, replace=False) for _ in range(settings.samples)]).astype(np.int32)
    out = []
    for i in range(0, settings.samples, settings.batch_size):
        out.append(np.asarray(_sampled_features(generator, jnp.asarray(ws[i:i + settings.batch_size]),
                                                jnp.asarray(index[i:i + settings.batch_size]), layers,
                                                noise_mode)))
    x = np.concatenate(out).reshape(-1, out[0].shape[-1])
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(_EPS)


@functools.partial(jax.jit, static_argnames=("iterations",))
def _lloyd(x, c, iterations):
    """Spherical Lloyd iterations until the assignment stops changing (at most `iterations`). A cluster
    that empties is re-seeded at the j-th worst-fitting point (j = its index, so several never collide)."""
    k = c.shape[0]

    def body(state):
        c, labels, _, i = state
        sims = x @ c.T
        new = jnp.argmax(sims, axis=1)
        onehot = jax.nn.one_hot(new, k, dtype=x.dtype)
        sums = onehot.T @ x
        counts = onehot.sum(axis=0)
        worst = jax.lax.top_k(-jnp.max(sims, axis=1), k)[1]
        sums = jnp.where(counts[:, None] > 0, sums, x[worst])
        c = sums * jax.lax.rsqrt(jnp.sum(jnp.square(sums), axis=1, keepdims=True) + 1e-20)
        return c, new, jnp.any(new != labels) | jnp.any(counts == 0), i + 1

    init = (c, jnp.full((x.shape[0],), -1, jnp.int32), jnp.bool_(True), 0)
    c, _, _, _ = jax.lax.while_loop(lambda s: s[2] & (s[3] < iterations), body, init)
    return c, jnp.mean(jnp.max(x @ c.T, axis=1))


def spherical_kmeans(x: np.ndarray, k: int, *, iterations=50, restarts=3, seed=0):
    """Unit rows x [N, D] -> (unit centroids [k, D] ordered by cluster size, largest first, objective).
    k-means++ seeding on cosine distance (numpy RandomState(seed)); the best of `restarts` runs (mean
    cosine similarity to the nearest centroid) is kept."""
    if k > len(x):
        raise ConfigError(f"cannot make {k} clusters from {len(x)} feature pixels")
    x = np.asarray(x, np.float32)
    xj = jnp.asarray(x)
    rng = np.random.RandomState(seed)
    best = None
    for _ in range(restarts):
        c = np.empty((k, x.shape[1]), np.float32)
        c[0] = x[rng.randint(len(x))]
        closest = 1.0 - x @ c[0]
        for j in range(1, k):
            p = np.clip(closest.astype(np.float64), 0, None)
            p = p / p.sum() if p.sum() > 0 else np.full(len(x), 1.0 / len(x))
            c[j] = x[rng.choice(len(x), p=p)]
            closest = np.minimum(closest, 1.0 - x @ c[j])
        c, objective = _lloyd(xj, jnp.asarray(c), iterations)
        if best is None or float(objective) > best[1]:
            best = (np.asarray(c), float(objective))
    c, objective = best
    sizes = np.bincount((x @ c.T).argmax(axis=1), minlength=k)
    order = np.argsort(-sizes, kind="stable")
    return c[order], objective


def kmeans_temperature(x: np.ndarray, centroids: np.ndarray, odds: float = KMEANS_MEDIAN_ODDS) -> float:
    """T such that the median pixel's top-1 over top-2 weight is `odds`: T = median(s1 - s2) / ln(odds)."""
    if len(centroids) < 2:
        return 1.0
    sims = np.sort(x @ centroids.T, axis=1)
    gap = float(np.median(sims[:, -1] - sims[:, -2]))
    return max(gap, 1e-4) / math.log(odds)


def fit_kmeans(generator, segments: int, *, layers=None, seed: int = 0, settings: KMeansSettings | None = None,
               noise_mode: str = DEFAULT_NOISE_MODE, frozen=False) -> Segmenter:
    """Fit the unsupervised head (deterministic for a seed); see `kmeans_segmenter` for the cached form."""
    if not isinstance(segments, (int, np.integer)) or segments < 1:
        raise ConfigError(f"segments must be an integer >= 1, got {segments!r}")
    settings = settings or KMeansSettings()
    layers = resolve_layers(generator, layers)
    x = collect_features(generator, layers, settings, seed, noise_mode)
    centroids, _ = spherical_kmeans(x, segments, iterations=settings.iterations, restarts=settings.restarts,
                                    seed=seed)
    head = KMeansHead(centroids=jnp.asarray(centroids, jnp.float32),
                      temperature=jnp.float32(kmeans_temperature(x, centroids)))
    return make_segmenter(generator, head, layers=layers, frozen=frozen, noise_mode=noise_mode)


def segmenter_cache_dir(cache_dir=None) -> Path:
    """`cache_dir`, else $CHUNKYGAN_CACHE/segmenters, else ~/.cache/chunkygan_jax/segmenters."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("CHUNKYGAN_CACHE"):
        return Path(os.environ["CHUNKYGAN_CACHE"]) / "segmenters"
    return Path.home() / ".cache" / "chunkygan_jax" / "segmenters"


def kmeans_segmenter(generator, segments: int, *, layers=None, seed: int = 0,
                     settings: KMeansSettings | None = None, noise_mode: str = DEFAULT_NOISE_MODE,
                     cache_dir=None, frozen=False) -> Segmenter:
    """The k-means segmenter for this generator and n: loaded from the cache, or fitted once and cached.
    The entry's name holds the generator fingerprint, n, layers, seed and a hash of the fit settings."""
    settings = settings or KMeansSettings()
    layers = resolve_layers(generator, layers)
    fingerprint = generator_fingerprint(generator)
    fit = json.dumps({**settings.to_dict(), "noise_mode": noise_mode}, sort_keys=True)
    name = (f"{fingerprint[:16]}-kmeans-n{segments}-l{'_'.join(map(str, layers))}-seed{seed}-"
            f"{hashlib.sha256(fit.encode()).hexdigest()[:8]}")
    entry = segmenter_cache_dir(cache_dir) / name
    if (entry / RECORD_NAME).is_file():
        try:
            return load_segmenter(entry, generator, frozen=frozen, fingerprint=fingerprint)
        except CheckpointError as e:
            warnings.warn(f"refitting: the cached k-means segmenter is unusable ({e})", stacklevel=2)
    seg = fit_kmeans(generator, segments, layers=layers, seed=seed, settings=settings, noise_mode=noise_mode,
                     frozen=frozen)
    try:
        save_segmenter(seg, entry, fingerprint=fingerprint, info={"seed": seed, "fit": settings.to_dict()},
                       overwrite=True)
    except (OSError, CheckpointError) as e:
        warnings.warn(f"could not cache the k-means segmenter at {entry}: {e}", stacklevel=2)
    return seg


# ---------------------------------------------------------------------------------------- save / load
def save_segmenter(segmenter: Segmenter, directory, *, fingerprint: str | None = None, info=None,
                   overwrite: bool = False) -> dict:
    """Write head.npz + segmenter.json into `directory` (atomically: complete or absent). An existing
    non-empty directory is replaced only with overwrite=True, and only if it is a segmenter checkpoint."""
    head = segmenter.head
    g = segmenter.generator
    record = {
        "format_version": FORMAT_VERSION,
        "kind": "chunkygan_segmenter",
        "head": head.kind,
        "segments": segmenter.segments,
        "layers": list(segmenter.layers),
        "feature_resolution": segmenter.feature_resolution,
        "temperature": float(head.temperature),
        "noise_mode": segmenter.noise_mode,
        "generator": {"sha256": fingerprint or generator_fingerprint(g), "resolution": g.resolution,
                      "num_ws": g.num_ws, "w_dim": g.w_dim},
        **(info or {}),
    }
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        if not overwrite:
            raise CheckpointError(f"{directory} already exists and is not empty (use overwrite / --overwrite)")
        if not (directory / RECORD_NAME).is_file():
            raise CheckpointError(f"refusing to overwrite {directory}: it is not a segmenter ({RECORD_NAME} missing)")
    try:
        with io.atomic_path(directory, is_dir=True) as tmp:
            with open(tmp / HEAD_NAME, "wb") as f:
                np.savez(f, **{k: np.asarray(v, np.float32) for k, v in flatten_tree(head.arrays()).items()},
                         code=np.asarray(segmenter.code, np.float32))
            (tmp / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
    except OSError as e:
        raise CheckpointError(f"cannot write segmenter {directory}: {e}") from None
    return record


def read_segmenter_record(directory) -> dict:
    path = Path(directory) / RECORD_NAME
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a segmenter checkpoint (no {RECORD_NAME})")
    from .checkpoints import load_json_record

    record = load_json_record(path)
    if not isinstance(record, dict) or record.get("kind") != "chunkygan_segmenter":
        raise CheckpointError(f"{path}: not a segmenter record")
    if record.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {record.get('format_version')!r} is not supported "
                              f"(this version reads {FORMAT_VERSION})")
    if record.get("head") not in HEAD_KINDS:
        raise CheckpointError(f"{path}: unknown head {record.get('head')!r} (known: {', '.join(HEAD_KINDS)})")
    return record


def load_segmenter(directory, generator, *, frozen=False, fingerprint: str | None = None) -> Segmenter:
    """A saved head on `generator`, which must be the generator it was fitted/trained on."""
    directory = Path(directory)
    record = read_segmenter_record(directory)
    want = record.get("generator", {}).get("sha256")
    have = fingerprint or generator_fingerprint(generator)
    if want != have:
        raise CheckpointError(f"{directory}: this segmenter belongs to another generator "
                              f"(sha256 {str(want)[:12]}..., this one is {have[:12]}...)")
    try:
        with np.load(directory / HEAD_NAME, allow_pickle=False) as data:
            flat = {k: data[k] for k in data.files}
        code = flat.pop("code")
        head = _HEADS[record["head"]].from_arrays(unflatten_tree(flat))
        seg = make_segmenter(generator, head, layers=record["layers"], code=code, frozen=frozen,
                             noise_mode=record["noise_mode"])
    except (OSError, ValueError, KeyError, ConfigError) as e:
        raise CheckpointError(f"{directory}: unreadable segmenter head ({type(e).__name__}: {e})") from None
    if seg.segments != record["segments"]:
        raise CheckpointError(f"{directory}: head has {seg.segments} segments, record says {record['segments']}")
    return seg


# ---------------------------------------------------------------------------------------- MLP training
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


def _mlp_train_fns(generator, layers, noise_mode, optimizer):
    def loss_fn(params, ws, labels):
        feats = jax.lax.stop_gradient(pixel_features(generator, ws, layers, noise_mode=noise_mode))  # [B, h, h, D]
        head = MLPHead(params=params, temperature=jnp.float32(1.0))
        probs = jax.nn.softmax(head.member_logits(feats), axis=-1)  # [E, B, h, h, n]
        r = labels.shape[-1]
        if probs.shape[2] != r:
            probs = jax.image.resize(probs, probs.shape[:2] + (r, r, probs.shape[-1]), method="bilinear")
        picked = jnp.take_along_axis(probs, labels[None, ..., None], axis=-1)[..., 0]
        return -jnp.mean(jnp.log(picked + 1e-6)) * probs.shape[0]  # members train independently

    @jax.jit
    def step(params, opt_state, ws, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, ws, labels)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def train_mlp(generator, ws, labels, segments: int, *, layers=None, settings: MLPSettings | None = None,
              noise_mode: str = DEFAULT_NOISE_MODE, callback=None) -> Segmenter:
    """Train the DatasetGAN-style head on generated samples: ws [N, num_ws, w_dim], labels [N, R, R]
    (indices 0..n-1 at the generator resolution). Cross-entropy is taken on the masks as the segmenter
    outputs them (upsampled to R), so the trained head reproduces the label maps at full resolution."""
    settings = settings or MLPSettings()
    layers = resolve_layers(generator, layers)
    ws = np.asarray(ws, np.float32)
    labels = np.asarray(labels).astype(np.int32)
    r = generator.resolution
    if ws.ndim != 3 or ws.shape[1:] != (generator.num_ws, generator.w_dim):
        raise ConfigError(f"ws must be [N, {generator.num_ws}, {generator.w_dim}], got {ws.shape}")
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
    step = _mlp_train_fns(generator, layers, noise_mode, optimizer)
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
                          noise_mode=noise_mode)


def label_maps(segmenter: Segmenter, ws, batch_size: int = 8) -> np.ndarray:
    """argmax labels [N, R, R] of the segmenter's masks for codes ws [N, num_ws, w_dim]."""
    ws = np.asarray(ws, np.float32)
    return np.concatenate([np.argmax(np.asarray(segmenter.masks_for_code(ws[i:i + batch_size])), axis=1)
                           for i in range(0, len(ws), batch_size)]).astype(np.int32)


# ---------------------------------------------------------------------------------------- annotations
def read_latent(path, generator, latent: str = "auto") -> np.ndarray:
    """A `.npy` latent -> W+ code [num_ws, w_dim]. Shapes: z [z_dim], w [w_dim] (or [1, w_dim]),
    ws [num_ws, w_dim]. When z_dim == w_dim a 1-D file is ambiguous: pass latent='z' or 'w'."""
    if latent not in LATENT_KINDS:
        raise ConfigError(f"latent must be one of {LATENT_KINDS}, got {latent!r}")
    g = generator
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ImageError(f"{path}: not a readable .npy latent ({e})") from None
    if not np.issubdtype(a.dtype, np.floating) or not np.all(np.isfinite(a)):
        raise ImageError(f"{path}: latent must hold finite floats, got dtype {a.dtype}")
    a = a.astype(np.float32)
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
        return np.asarray(_map_z(g, jnp.asarray(a[None])))[0]
    if kind == "w":
        return np.broadcast_to(a, (g.num_ws, g.w_dim)).copy()
    return a


def load_annotations(directory, generator, *, latent="auto", need_labels=True):
    """Pairs `<name>.npy` (latent) + `<name>.png` (label map) -> (names, ws [N, num_ws, w_dim],
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
                    latent="auto", layers=None, settings: MLPSettings | None = None, seed=0, cache_dir=None,
                    overwrite=False, callback=None) -> tuple[Segmenter, dict]:
    """Train an MLP head and save it to `output`. Labels come from the label maps in `annotations`, or
    with from_kmeans=True from the k-means head's argmax (for the annotation latents, or for `samples`
    random ones when no annotations are given). Returns (segmenter, record with training accuracy)."""
    settings = settings or MLPSettings(seed=seed)
    if not isinstance(segments, (int, np.integer)) or segments < 1:
        raise ConfigError(f"segments must be an integer >= 1, got {segments!r}")
    layers = resolve_layers(generator, layers)
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not overwrite:  # before training
        raise CheckpointError(f"{output} already exists and is not empty (use overwrite / --overwrite)")
    if annotations is not None:
        names, ws, labels = load_annotations(annotations, generator, latent=latent, need_labels=not from_kmeans)
    elif from_kmeans:
        if not isinstance(samples, (int, np.integer)) or samples < 1:
            raise ConfigError(f"samples must be an integer >= 1, got {samples!r}")
        ws, labels = sample_ws(generator, samples, seed + 1), None
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


# ---------------------------------------------------------------------------------------- coherence
def neighbour_agreement(labels) -> float:
    """Fraction of 4-neighbour pixel pairs with the same label in a label map [..., H, W]
    (1 - normalised boundary length)."""
    labels = np.asarray(labels)
    same = np.concatenate([(labels[..., 1:, :] == labels[..., :-1, :]).reshape(-1),
                           (labels[..., :, 1:] == labels[..., :, :-1]).reshape(-1)])
    return float(same.mean())
