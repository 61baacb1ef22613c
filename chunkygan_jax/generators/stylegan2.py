"""StyleGAN2 (config-f and smaller, 'skip' architecture), numerically identical to NVIDIA's
stylegan2-ada-pytorch `Generator` in fp32.

Parameters are a plain nested dict that mirrors the official state-dict names with the official tensor
layouts (`params["synthesis"]["b8"]["conv0"]["weight"]` is `synthesis.b8.conv0.weight`, [out, in, 3, 3]),
so a converted checkpoint holds exactly the official numbers; the FIR filter buffers are not stored (they
are always [1, 3, 3, 1]). `statedict.py` maps NVIDIA and rosinality names onto this tree.

The generator is a pytree (`StyleGAN2`): its params are leaves and its config is static, so one jitted
function serves every image and every checkpoint of the same shape.

Entry points: `mapping` (z [and a class label] -> ws), `styles_from_ws` (ws -> S space), `synthesis`
(W+ ws -> image), `synthesis_from_styles` (S -> image), `features` (ws -> block activations, stopping
early).
Only the 'skip' architecture exists (what NVIDIA's config-f and rosinality's models use); checkpoints of
the 'orig' or 'resnet' architectures are refused by the state-dict mapping with a clear message.

Conditional generators (c_dim > 0, StyleGAN2-ADA) embed a class label as NVIDIA's mapping does. They
also hold `class_w_avg` [c_dim, w_dim], every class's mean w. `with_label(k)` binds a class: the bound
generator maps z with that class, its `w_avg` is that class's, and it serves the inversion, editing
and G^S like an unconditional one. An unbound conditional generator refuses to map without a label.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from .. import compute
from ..errors import ConfigError
from ..trees import flat_leaves
from . import ops

NOISE_MODES = ("const", "none", "random")


@dataclasses.dataclass(frozen=True)
class StyleGAN2Config:
    """Architecture record. Shapes come from the weights (see `config_from_params`); conv_clamp and the
    mapping lr multiplier cannot be read from shapes and travel in the checkpoint's record."""

    resolution: int
    z_dim: int
    w_dim: int
    mapping_layers: int
    channels: tuple[tuple[int, int], ...]  # (resolution, channels) per synthesis block
    conv_clamp: float | None = None
    mapping_lr_multiplier: float = 0.01
    img_channels: int = 3
    architecture: str = "skip"
    c_dim: int = 0  # number of classes of a conditional generator (0: unconditional)
    embed_features: int = 0  # width of the label embedding, concatenated to the normalised z
    label: int | None = None  # the class a conditional generator is bound to (`with_label`)

    @property
    def mapping_input_dim(self) -> int:
        return self.z_dim + self.embed_features

    @property
    def log2_resolution(self) -> int:
        return int(math.log2(self.resolution))

    @property
    def block_resolutions(self) -> list[int]:
        return [2 ** i for i in range(2, self.log2_resolution + 1)]

    @property
    def num_ws(self) -> int:
        return 2 * self.log2_resolution - 2

    def channels_at(self, res: int) -> int:
        return dict(self.channels)[res]

    def layer_names(self) -> list[str]:
        """Style layers in generator order (ToRGB included): b4.conv1, b4.torgb, b8.conv0, ..."""
        names = []
        for res in self.block_resolutions:
            names += [f"b{res}.conv1"] if res == 4 else [f"b{res}.conv0", f"b{res}.conv1"]
            names.append(f"b{res}.torgb")
        return names

    def ws_index(self) -> dict[str, int]:
        """The ws row each layer reads. A block's ToRGB shares the row of the next block's conv0."""
        index, w_idx = {}, 0
        for res in self.block_resolutions:
            convs = ["conv1"] if res == 4 else ["conv0", "conv1"]
            for j, conv in enumerate(convs):
                index[f"b{res}.{conv}"] = w_idx + j
            index[f"b{res}.torgb"] = w_idx + len(convs)
            w_idx += len(convs)
        return index

    def style_dims(self) -> dict[str, int]:
        """Width of every style vector (the layer's input channels)."""
        dims = {}
        for res in self.block_resolutions:
            c_in = self.channels_at(res // 2) if res > 4 else self.channels_at(4)
            c_out = self.channels_at(res)
            if res == 4:
                dims["b4.conv1"] = c_out
            else:
                dims[f"b{res}.conv0"] = c_in
                dims[f"b{res}.conv1"] = c_out
            dims[f"b{res}.torgb"] = c_out
        return dims

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channels"] = [list(c) for c in self.channels]
        # Unconditional records (and so fingerprints and caches) stay as they were before labels.
        for key in ("c_dim", "embed_features", "label"):
            if not d[key]:
                d.pop(key)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StyleGAN2Config":
        d = dict(d)
        d["channels"] = tuple(tuple(int(v) for v in c) for c in d["channels"])
        return cls(**d)


def check_space(generator, space: str) -> None:
    if space not in generator.latent_spaces:
        raise ConfigError(f"unknown latent space {space!r} for this generator; "
                          f"choose one of {generator.latent_spaces}")


def config_from_params(params, *, conv_clamp=None, mapping_lr_multiplier=0.01) -> StyleGAN2Config:
    """Read the architecture from the parameter shapes (never from a channel formula)."""
    mapping = params["mapping"]
    fcs = sorted((k for k in mapping if k.startswith("fc")), key=lambda k: int(k[2:]))
    embed = mapping.get("embed")
    c_dim, embed_features = (0, 0) if embed is None else (int(s) for s in embed["weight"].shape[::-1])
    z_dim = int(mapping[fcs[0]]["weight"].shape[1]) - embed_features
    w_dim = int(mapping[fcs[-1]]["weight"].shape[0])
    synth = params["synthesis"]
    resolutions = sorted(int(k[1:]) for k in synth)
    channels = tuple((r, int(synth[f"b{r}"]["conv1"]["weight"].shape[0])) for r in resolutions)
    img_channels = int(synth[f"b{resolutions[-1]}"]["torgb"]["weight"].shape[0])
    return StyleGAN2Config(resolution=resolutions[-1], z_dim=z_dim, w_dim=w_dim,
                           mapping_layers=len(fcs), channels=channels, conv_clamp=conv_clamp,
                           mapping_lr_multiplier=mapping_lr_multiplier, img_channels=img_channels,
                           c_dim=c_dim, embed_features=embed_features)


@flax.struct.dataclass
class StyleGAN2:
    """A StyleGAN2 generator: static config + parameter pytree."""

    config: StyleGAN2Config = flax.struct.field(pytree_node=False)
    params: dict

    # ------------------------------------------------------------------ latent space facts
    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    @property
    def w_dim(self) -> int:
        return self.config.w_dim

    @property
    def resolution(self) -> int:
        return self.config.resolution

    @property
    def w_avg(self):
        """The mean w: the checkpoint's, or for a conditional generator the bound class's."""
        if not self.config.c_dim:
            return self.params["mapping"]["w_avg"]
        return self.params["mapping"]["class_w_avg"][self._bound_label()]

    # ------------------------------------------------------------------ classes
    @property
    def num_classes(self) -> int:
        """0 for an unconditional generator, else the number of class labels it takes."""
        return self.config.c_dim

    @property
    def label(self) -> int | None:
        """The class this generator is bound to (`with_label`), or None."""
        return self.config.label

    def with_label(self, label: int) -> "StyleGAN2":
        """This conditional generator bound to class `label`: it maps z with that class and its w_avg is
        that class's mean w, so it behaves as an unconditional generator of that class."""
        return self.replace(config=dataclasses.replace(self.config, label=self._check_label(label)))

    def _check_label(self, label) -> int:
        cfg = self.config
        if not cfg.c_dim:
            raise ConfigError(f"this generator is unconditional; a class label ({label!r}) applies only to "
                              "a conditional generator")
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)) \
                or not 0 <= int(label) < cfg.c_dim:
            raise ConfigError(f"label must be a class index 0..{cfg.c_dim - 1} of this generator, got {label!r}")
        return int(label)

    def _bound_label(self) -> int:
        if self.config.label is None:
            raise ConfigError(f"this generator is conditional ({self.config.c_dim} classes): give a class "
                              f"label 0..{self.config.c_dim - 1} (label=K, --label=K, or with_label(K))")
        return self.config.label

    def _class_vectors(self, label, n: int):
        """The official c [n, c_dim] for `label`: None (the bound class), an int, ints [n], or c itself."""
        cfg = self.config
        if not cfg.c_dim:
            if label is not None:
                self._check_label(label)  # raises: unconditional
            return None
        if label is None:
            label = self._bound_label()
        if isinstance(label, (int, np.integer, bool, np.bool_)):
            label = self._check_label(label)
        label = jnp.asarray(label)
        if label.ndim == 2 and label.shape[1] == cfg.c_dim and jnp.issubdtype(label.dtype, jnp.floating):
            return label.astype(jnp.float32)
        if label.ndim > 1 or not jnp.issubdtype(label.dtype, jnp.integer):
            raise ConfigError(f"label must be a class index, [N] class indices or c [N, {cfg.c_dim}], "
                              f"got shape {tuple(label.shape)} {label.dtype}")
        if not isinstance(label, jax.core.Tracer) and label.size and not (
                0 <= int(label.min()) and int(label.max()) < cfg.c_dim):
            raise ConfigError(f"labels must be class indices 0..{cfg.c_dim - 1}, got {np.asarray(label)}")
        return jax.nn.one_hot(jnp.broadcast_to(label, (n,)), cfg.c_dim, dtype=jnp.float32)

    # ------------------------------------------------------------------ the inversion protocol
    latent_spaces = ("w", "w+", "s")
    default_space = "w+"
    default_lambda_reg = 1.0  # the paper's value, tuned for FFHQ's W space

    def drawing_params(self) -> tuple[str, ...]:
        """The flat names (trees.flatten_tree) of the parameters that draw the image: what pivotal tuning
        may change. The synthesis network without its constant noise buffers; the mapping stays, so W
        and its directions keep their meaning."""
        names = flat_leaves(self.params["synthesis"], prefix="synthesis/")
        return tuple(sorted(k for k in names if not k.endswith("/noise_const")))

    def check_space(self, space: str) -> None:
        check_space(self, space)

    def noise_buffers(self) -> dict:
        """{conv layer name: its constant noise [res, res]}: the buffers NVIDIA's projector optimises."""
        return {name: self._layer(name)["noise_const"] for name in self.config.layer_names()
                if not name.endswith(".torgb")}

    def with_noise(self, noise: dict) -> "StyleGAN2":
        """This generator with its constant noise buffers replaced by `noise` ({layer: [res, res]}, every
        conv layer of `noise_buffers`); what renders a result whose noise was optimised."""
        own = self.noise_buffers()
        if set(noise) != set(own):
            raise ConfigError(f"noise must hold the buffers of layers {sorted(own)}, got {sorted(noise)}")
        params = jax.tree_util.tree_map(lambda x: x, self.params)  # a new tree; leaves are shared
        for name, buf in noise.items():
            if tuple(np.shape(buf)) != tuple(own[name].shape):
                raise ConfigError(f"noise of layer {name} must be {tuple(own[name].shape)}, got {tuple(np.shape(buf))}")
            block, layer = name.split(".")
            params["synthesis"][block][layer] = dict(params["synthesis"][block][layer],
                                                     noise_const=jnp.asarray(buf, jnp.float32))
        return self.replace(params=params)

    def initial_codes(self, space: str, n: int, w=None):
        """n copies of one starting code (w_avg unless `w` [w_dim] is given) in the requested space:
        'w' -> [n, 1, w_dim] (broadcast to every layer), 'w+' -> [n, num_ws, w_dim],
        's' -> {layer: [n, channels]} (the affine outputs of that w)."""
        check_space(self, space)
        w = self.w_avg if w is None else jnp.asarray(w, jnp.float32).reshape(self.w_dim)
        rows = 1 if space == "w" else self.num_ws
        ws = jnp.broadcast_to(w, (n, rows, self.w_dim)).astype(jnp.float32)
        return self.styles_from_ws(jnp.broadcast_to(w, (n, self.num_ws, self.w_dim))) if space == "s" else ws

    # ------------------------------------------------------------------ the features protocol (G^S)
    segment_space = "w+"  # X^S, the segment generator's code, is a W+ code starting at w_avg
    checkerboard_features = False  # FIR-filtered up-sampling: no period-2 pattern for phi to remove

    @property
    def feature_layers(self) -> tuple:
        """Resolutions whose activations `features` offers: every synthesis block's."""
        return tuple(self.config.block_resolutions)

    def feature_channels(self, layer: int) -> int:
        return self.config.channels_at(layer)

    def sample_codes(self, num: int, seed: int) -> np.ndarray:
        """Codes of `segment_space` [num, num_ws, w_dim] of random samples (see `sample_ws`)."""
        return sample_ws(self, num, seed)

    def to_ws(self, codes, space: str):
        """W or W+ codes -> [N, num_ws, w_dim]."""
        if space == "w":
            return jnp.broadcast_to(codes, (codes.shape[0], self.num_ws, self.w_dim))
        return codes

    def synthesize(self, codes, space: str, *, noise_mode="const", key=None, dtype=jnp.float32,
                   remat=False, noise=None):
        """Images [N, H, W, 3] from codes of `space` (the generic entry point the inversion uses).
        noise: {conv layer: [N, res, res]}, each image's own noise in place of the constant buffers."""
        kw = dict(noise_mode=noise_mode, key=key, dtype=dtype, remat=remat, noise=noise)
        if space == "s":
            return self.synthesis_from_styles(codes, **kw)
        return self.synthesis(self.to_ws(codes, space), **kw)

    def prepare(self, dtype=jnp.float32) -> "StyleGAN2":
        """This generator with every layer's weight-only preprocessing (compute-dtype kernels, fused
        up-sampling kernels, squared weights for demodulation) done once, for synthesis in `dtype`.
        For loops that synthesise many times from unchanged weights, such as an inversion."""
        prepared = {}
        for name in self.config.layer_names():
            up = 2 if name.endswith(".conv0") else 1
            prepared[name] = ops.prepare_conv(self._layer(name)["weight"], up=up,
                                              demodulate=not name.endswith(".torgb"),
                                              dtype=compute.storage_dtype(dtype))
        return PreparedStyleGAN2(self.config, self.params, prepared)

    # ------------------------------------------------------------------ mapping
    def mapping(self, z, *, label=None, truncation_psi=1.0, truncation_cutoff=None):
        """z [N, z_dim] -> ws [N, num_ws, w_dim], with truncation towards the checkpoint's w_avg on the
        first `truncation_cutoff` rows (all rows when None), as NVIDIA's mapping does.

        label: conditional generators only: a class index, class indices [N], or NVIDIA's c [N, c_dim];
        None means the bound class (`with_label`). An unconditional generator takes no label."""
        cfg = self.config
        if z.ndim != 2 or z.shape[1] != cfg.z_dim:
            raise ConfigError(f"z must have shape [N, {cfg.z_dim}], got {tuple(z.shape)}")
        c = self._class_vectors(label, z.shape[0])
        lr = cfg.mapping_lr_multiplier
        x = ops.normalize_2nd_moment(z.astype(jnp.float32))
        hp = jax.lax.Precision.HIGHEST
        if c is not None:  # NVIDIA: normalize(embed(c)), concatenated after the normalised z
            embed = self.params["mapping"]["embed"]
            y = ops.dense(c, embed["weight"], embed["bias"], weight_gain=1.0 / math.sqrt(cfg.c_dim), precision=hp)
            x = jnp.concatenate([x, ops.normalize_2nd_moment(y)], axis=1)
        for i in range(cfg.mapping_layers):
            layer = self.params["mapping"][f"fc{i}"]
            gain = lr / math.sqrt(layer["weight"].shape[1])
            x = ops.dense(x, layer["weight"], jnp.zeros_like(layer["bias"]), weight_gain=gain,
                          precision=hp)
            x = ops.bias_lrelu_clamp(x, layer["bias"] * lr, gain=1.0, clamp=None)
        ws = jnp.broadcast_to(x[:, None, :], (x.shape[0], cfg.num_ws, cfg.w_dim))
        if truncation_psi != 1:
            w_avg = self.params["mapping"]["w_avg"]
            rows = cfg.num_ws if truncation_cutoff is None else truncation_cutoff
            trunc = w_avg + truncation_psi * (ws[:, :rows] - w_avg)
            ws = jnp.concatenate([trunc, ws[:, rows:]], axis=1)
        return ws

    # ------------------------------------------------------------------ S space
    def styles_from_ws(self, ws) -> dict:
        """ws [N, num_ws, w_dim] -> {layer name: [N, in_channels]}: every layer's affine output A(w).

        ToRGB styles are stored before their 1/sqrt(in_channels) weight gain (as NVIDIA's affine
        outputs them and as the authors' StyleSpace presets expect)."""
        cfg = self.config
        self._check_ws(ws)
        styles = {}
        for name, idx in cfg.ws_index().items():
            affine = self._layer(name)["affine"]
            gain = 1.0 / math.sqrt(affine["weight"].shape[1])
            styles[name] = ops.dense(ws[:, idx].astype(jnp.float32), affine["weight"], affine["bias"],
                                     weight_gain=gain, precision=jax.lax.Precision.HIGHEST)
        return styles

    # ------------------------------------------------------------------ synthesis
    def synthesis(self, ws, *, noise_mode="const", key=None, dtype=jnp.float32, remat=False, noise=None):
        """W+ codes [N, num_ws, w_dim] -> images [N, H, W, C] float32 (about [-1, 1] for trained nets).

        dtype: compute dtype (compute.COMPUTE_DTYPES: 'float32', 'tf32', 'bfloat16' for speed, or a dtype;
            the image stays float32).
        remat: recompute each block's activations in the backward pass instead of storing them
        (jax.checkpoint per block), bounding memory at high resolution for some extra compute."""
        return self.synthesis_from_styles(self.styles_from_ws(ws), noise_mode=noise_mode, key=key,
                                          dtype=dtype, remat=remat, noise=noise)

    def synthesis_from_styles(self, styles, *, noise_mode="const", key=None, dtype=jnp.float32,
                              remat=False, noise=None):
        img, _ = self._run(styles, noise_mode=noise_mode, key=key, dtype=dtype,
                           feature_resolutions=(), stop_at=self.config.resolution, remat=remat, noise=noise)
        return img

    def features(self, ws, resolutions, *, noise_mode="const", key=None, dtype=jnp.float32) -> dict:
        """Block outputs {res: [N, res, res, C]} for the requested resolutions. Blocks above the largest
        requested resolution, and all ToRGB layers, are not computed."""
        resolutions = tuple(sorted(set(int(r) for r in resolutions)))
        bad = [r for r in resolutions if r not in self.config.block_resolutions]
        if bad:
            raise ConfigError(f"no synthesis block at resolution(s) {bad}; "
                              f"blocks are {self.config.block_resolutions}")
        styles = self.styles_from_ws(ws)
        _, feats = self._run(styles, noise_mode=noise_mode, key=key, dtype=dtype,
                             feature_resolutions=resolutions, stop_at=max(resolutions), rgb=False)
        return feats

    # ------------------------------------------------------------------ internals
    def _layer(self, name):
        block, layer = name.split(".")
        return self.params["synthesis"][block][layer]

    def _check_ws(self, ws):
        cfg = self.config
        if ws.ndim != 3 or ws.shape[1:] != (cfg.num_ws, cfg.w_dim):
            raise ConfigError(f"ws must have shape [N, {cfg.num_ws}, {cfg.w_dim}], got {tuple(ws.shape)}")

    def _run(self, styles, *, noise_mode, key, dtype, feature_resolutions, stop_at, rgb=True, remat=False,
             noise=None):
        cfg = self.config
        if noise_mode not in NOISE_MODES:
            raise ConfigError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if noise is not None and noise_mode != "const":
            raise ConfigError(f"given noise buffers replace the constant ones: noise_mode must be 'const', "
                              f"got {noise_mode!r}")
        if noise_mode == "random" and key is None:
            raise ConfigError("noise_mode='random' needs a PRNG key (key=jax.random.key(seed))")
        missing = [n for n in cfg.layer_names() if n not in styles]
        if missing:
            raise ConfigError(f"styles are missing layers {missing[:4]}{'...' if len(missing) > 4 else ''}")
        n = styles["b4.conv1"].shape[0]
        dtype, precision = compute.resolve(dtype)  # e.g. 'tf32': fp32 arrays, TF32 convolutions
        keys = iter(jax.random.split(key, 2 * cfg.num_ws)) if noise_mode == "random" else None
        prepared = getattr(self, "prepared", None) or {}

        def conv_layer(x, name, up):
            p = self._layer(name)
            y, dcoefs = ops.modulated_conv(x, p["weight"], styles[name], demodulate=True, up=up,
                                           precision=precision, prepared=prepared.get(name))
            y = y * dcoefs.astype(y.dtype)[:, None, None, :]
            res = y.shape[1]
            if noise is not None:
                y = y + (noise[name] * p["noise_strength"]).astype(y.dtype)[:, :, :, None]
            elif noise_mode == "const":
                y = y + (p["noise_const"] * p["noise_strength"]).astype(y.dtype)[None, :, :, None]
            elif noise_mode == "random":
                drawn = jax.random.normal(next(keys), (n, res, res, 1), jnp.float32)
                y = y + (drawn * p["noise_strength"]).astype(y.dtype)
            return ops.bias_lrelu_clamp(y, p["bias"], gain=1.0, clamp=cfg.conv_clamp)

        def torgb(x, name):
            p = self._layer(name)
            gain = 1.0 / math.sqrt(p["weight"].shape[1])
            y, _ = ops.modulated_conv(x, p["weight"], styles[name] * gain, demodulate=False, up=1,
                                      precision=precision, prepared=prepared.get(name))
            y = y.astype(jnp.float32) + p["bias"].astype(jnp.float32)
            if cfg.conv_clamp is not None:
                y = jnp.clip(y, -cfg.conv_clamp, cfg.conv_clamp)
            return y

        const = self.params["synthesis"]["b4"]["const"]  # [C, 4, 4]
        x = jnp.broadcast_to(jnp.transpose(const, (1, 2, 0))[None].astype(dtype),
                             (n,) + (4, 4, const.shape[0]))
        def block(x, img, res):
            if res == 4:
                x = conv_layer(x, "b4.conv1", up=1)
            else:
                x = conv_layer(x, f"b{res}.conv0", up=2)
                x = conv_layer(x, f"b{res}.conv1", up=1)
            if rgb:
                y = torgb(x, f"b{res}.torgb")
                img = y if img is None else ops.upsample_2x(img) + y
            return x, img

        img, feats = None, {}
        for res in cfg.block_resolutions:
            if res > stop_at:
                break
            run_block = block
            if remat and noise_mode != "random":  # random noise draws from an iterator: not re-traceable
                run_block = jax.checkpoint(block, static_argnums=(2,))
            x, img = run_block(x, img, res)
            if res in feature_resolutions:
                feats[res] = x
        return img, feats


@flax.struct.dataclass
class PreparedStyleGAN2(StyleGAN2):
    """What `StyleGAN2.prepare` returns: the same generator plus {layer name: ops.prepare_conv(...)}.
    A subclass rather than a field, so a plain generator's pytree (and its fingerprint) is unchanged."""

    prepared: dict = None


@jax.jit
def _mapped(generator, z, labels):
    return generator.mapping(z, label=labels)


def sample_ws(generator, num: int, seed: int, *, label=None) -> np.ndarray:
    """W+ codes [num, num_ws, w_dim] of random samples, z ~ N(0, I) drawn from numpy RandomState(seed)
    (NVIDIA's projector and the authors' tool draw their 10,000 w_avg samples with seed 123).
    A conditional generator maps them with class `label` (default: the class it is bound to)."""
    z = np.random.RandomState(seed).randn(num, generator.config.z_dim).astype(np.float32)
    labels = None
    if label is not None or generator.config.c_dim:
        generator._class_vectors(label, num)  # a missing or wrong label: its ConfigError, before jit
        if label is not None:
            labels = jnp.full((num,), generator._check_label(label), jnp.int32)
    return np.asarray(_mapped(generator, jnp.asarray(z), labels))


def random_params(seed: int, config: StyleGAN2Config, *, scale=1.0) -> dict:
    """Randomly initialised parameters of the given architecture, in the official layouts.

    Initialised like NVIDIA's constructors (weights N(0, 1), lr-multiplied mapping weights N(0, 1/lr),
    affine biases 1) plus `scale` times N(0, 1) perturbations of biases, noise and w_avg so that every
    term is exercised. Used by tests and benchmarks; a real model comes from a converted checkpoint.
    """
    rng = np.random.RandomState(seed)  # numpy: one draw per tensor, no per-shape compilation
    normal = lambda shape, s=1.0: (s * rng.standard_normal(shape)).astype(np.float32)
    lr = config.mapping_lr_multiplier
    mapping = {}
    dims = [config.mapping_input_dim] + [config.w_dim] * config.mapping_layers
    for i in range(config.mapping_layers):
        mapping[f"fc{i}"] = {"weight": normal((dims[i + 1], dims[i]), 1.0 / lr),
                             "bias": normal((dims[i + 1],), 0.1 * scale / lr)}
    mapping["w_avg"] = normal((config.w_dim,), 0.1 * scale)
    if config.c_dim:
        mapping["embed"] = {"weight": normal((config.embed_features, config.c_dim)),
                            "bias": normal((config.embed_features,), 0.1 * scale)}
        mapping["class_w_avg"] = normal((config.c_dim, config.w_dim), 0.1 * scale)
    synthesis = {}
    style_dims = config.style_dims()

    def layer(name, c_out, k, res=None):
        c_in = style_dims[name]
        p = {"affine": {"weight": normal((c_in, config.w_dim)), "bias": 1.0 + normal((c_in,), 0.1 * scale)},
             "weight": normal((c_out, c_in, k, k)), "bias": normal((c_out,), 0.1 * scale)}
        if res is not None:
            p["noise_const"] = normal((res, res))
            p["noise_strength"] = normal((), 0.1 * scale)
        return p

    for res in config.block_resolutions:
        c = config.channels_at(res)
        block = {}
        if res == 4:
            block["const"] = normal((c, 4, 4))
            block["conv1"] = layer("b4.conv1", c, 3, 4)
        else:
            block["conv0"] = layer(f"b{res}.conv0", c, 3, res)
            block["conv1"] = layer(f"b{res}.conv1", c, 3, res)
        block["torgb"] = layer(f"b{res}.torgb", config.img_channels, 1)
        synthesis[f"b{res}"] = block
    return {"mapping": mapping, "synthesis": synthesis}


def ffhq_config(resolution=1024, *, channel_base=32768, channel_max=512, w_dim=512, mapping_layers=8,
                conv_clamp=256) -> StyleGAN2Config:
    """The config-f shape (NVIDIA's channel formula), for random-weight benchmarks and tests only;
    checkpoints always take their channels from the weights."""
    res_list = [2 ** i for i in range(2, int(math.log2(resolution)) + 1)]
    channels = tuple((r, min(channel_base // r, channel_max)) for r in res_list)
    return StyleGAN2Config(resolution=resolution, z_dim=w_dim, w_dim=w_dim, mapping_layers=mapping_layers,
                           channels=channels, conv_clamp=conv_clamp)
