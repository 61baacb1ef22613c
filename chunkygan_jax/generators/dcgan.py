"""A DCGAN generator (the demo face generator), numerically identical to its PyTorch original in fp32.

Architecture (the classic DCGAN generator): z [N, z_dim] as a 1x1 image, then

    ConvTranspose2d(z_dim, C0, 4, stride 1, pad 0)  ->  4x4      BatchNorm2d, ReLU
    ConvTranspose2d(C0, C1, 4, stride 2, pad 1)     ->  8x8      BatchNorm2d, ReLU
    ...                                                          (one block per entry of `channels`)
    ConvTranspose2d(C_last, 3, 4, stride 2, pad 1)  ->  4 * 2^len(channels)  Tanh

with eval-mode batch norm (running statistics, eps 1e-5) and no conv biases. Parameters are a nested
dict that mirrors the torch state-dict names and layouts (`params["main"]["3"]["weight"]` is
`main.3.weight`, ConvTranspose2d layout [in, out, kh, kw]), so a converted checkpoint holds exactly the
original numbers; `num_batches_tracked` is not stored (eval mode never reads it).

The generator is a pytree (`DCGAN`): params are leaves, the config is static. It has one latent space,
'z'; StyleGAN's W, W+ and S spaces do not exist here. For the segment generator G^S it offers the
activations of its batch-normed blocks for a z code (`features`), so X^S is a z code too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from .. import compute
from ..errors import CheckpointError, ConfigError
from ..trees import flat_leaves
from . import ops

__all__ = ["DCGAN", "DCGANConfig", "conv_transpose2d", "dcgan_from_state_dict", "random_params", "start_code"]

KERNEL = 4
NOISE_MODES = ("const", "none", "random")  # accepted for protocol compatibility; a DCGAN has no noise


@dataclasses.dataclass(frozen=True)
class DCGANConfig:
    z_dim: int = 100
    channels: tuple[int, ...] = (512, 256, 128, 64)  # feature maps of the batch-normed blocks
    img_channels: int = 3
    bn_eps: float = 1e-5

    @property
    def resolution(self) -> int:
        return 4 * 2 ** len(self.channels)

    def layer_index(self) -> list[tuple[int, int | None]]:
        """(conv index, batchnorm index or None) in torch's nn.Sequential numbering (conv, bn, relu)."""
        n = len(self.channels)
        return [(3 * i, 3 * i + 1) for i in range(n)] + [(3 * n, None)]

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """torch state-dict name -> shape (without num_batches_tracked)."""
        ins = (self.z_dim,) + self.channels
        outs = self.channels + (self.img_channels,)
        shapes = {}
        for (conv, bn), cin, cout in zip(self.layer_index(), ins, outs):
            shapes[f"main.{conv}.weight"] = (cin, cout, KERNEL, KERNEL)
            if bn is not None:
                for name in ("weight", "bias", "running_mean", "running_var"):
                    shapes[f"main.{bn}.{name}"] = (cout,)
        return shapes

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DCGANConfig":
        d = dict(d)
        d["channels"] = tuple(int(c) for c in d["channels"])
        return cls(**d)


def space_error(space) -> str:
    return (f"the demo DCGAN has only the 'z' space, not {space!r}; W, W+ and S need a StyleGAN2 checkpoint "
            "(--generator=PATH: our checkpoint directory, an NVIDIA .pkl or a rosinality .pt)")


def start_code(z_dim: int, seed: int = 0) -> np.ndarray:
    """The default starting z: a fixed draw from the prior N(0, I) (see DCGAN.initial_codes)."""
    return np.random.RandomState(seed).standard_normal(z_dim).astype(np.float32)


def conv_transpose2d(x, weight, stride: int, padding: int, *, precision=None):
    """torch.nn.functional.conv_transpose2d (no bias, groups 1, dilation 1, output_padding 0) on NHWC
    input; `weight` has torch's ConvTranspose2d layout [in, out, kh, kw].

    Computed as torch defines it: every input pixel (i, j) adds x[i, j] @ weight[:, :, ky, kx] to the
    output at (i * stride + ky, j * stride + kx), then `padding` rows and columns are cut from each border;
    output size (H - 1) * stride + k - 2 * padding. One matmul gives all k x k contributions of all pixels;
    they are summed by shifted adds over the stride phases. (Equivalent to a convolution of the
    stride-dilated input with the flipped kernel, but XLA on CPU runs convolutions inside the
    inversion's while loop 2-4x slower than this matmul form.)
    """
    n, h, w, cin = x.shape
    w_in, cout, kh, kw = weight.shape
    if w_in != cin or kh != kw:
        raise ConfigError(f"weight {tuple(weight.shape)} does not fit input channels {cin} (or is not square)")
    if not 0 <= padding or 2 * padding >= (min(h, w) - 1) * stride + kh:
        raise ConfigError(f"padding {padding} leaves no output")
    if h == w == 1 and padding == 0:  # a 1x1 input (the first layer, z): the output is the kernel times x
        return jnp.einsum("nc,cokl->nklo", x[:, 0, 0], weight.astype(x.dtype), precision=precision)
    s, q = stride, -(-kh // stride)  # kernel taps ky = s * qy + ry, qy < q, ry < s (zero-padded to q * s)
    wk = jnp.pad(weight.astype(x.dtype), ((0, 0), (0, 0), (0, q * s - kh), (0, q * s - kw)))
    t = jnp.einsum("nhwc,cokl->nhwklo", x, wk, precision=precision)
    t = t.reshape(n, h, w, q, s, q, s, cout)
    tp = jnp.pad(t, ((0, 0), (q - 1, q - 1), (q - 1, q - 1)) + ((0, 0),) * 5)
    # Output position s * u + ry (u = i + qy) collects t[u - qy, ., qy, ry, ...] over qy (same for x).
    acc = sum(tp[:, q - 1 - qy:q - 1 - qy + h + q - 1, q - 1 - qx:q - 1 - qx + w + q - 1, qy, :, qx, :, :]
              for qy in range(q) for qx in range(q))  # [n, h + q - 1, w + q - 1, s, s, cout]
    full = acc.transpose(0, 1, 3, 2, 4, 5).reshape(n, s * (h + q - 1), s * (w + q - 1), cout)
    out_h, out_w = (h - 1) * s + kh - 2 * padding, (w - 1) * s + kw - 2 * padding
    return full[:, padding:padding + out_h, padding:padding + out_w, :]


@flax.struct.dataclass
class DCGAN:
    """A DCGAN generator: static config + parameter pytree (torch names and layouts)."""

    config: DCGANConfig = flax.struct.field(pytree_node=False)
    params: dict

    @property
    def resolution(self) -> int:
        return self.config.resolution

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    # ------------------------------------------------------------------ the inversion protocol
    latent_spaces = ("z",)
    num_classes, label = 0, None  # unconditional (protocol.bind_label)
    default_space = "z"
    # z ~ N(0, I) in 100 dims: the paper's lambda_reg = 1 pins all segment codes together here
    default_lambda_reg = 0.0

    def drawing_params(self) -> tuple[str, ...]:
        """The flat names (trees.flatten_tree) of the parameters pivotal tuning may change: every
        transposed convolution's weight and every batch norm's scale and shift (not its running
        statistics, which are measurements of the training data, not weights)."""
        names = flat_leaves(self.params)
        return tuple(sorted(k for k in names if not k.endswith(("/running_mean", "/running_var"))))

    def check_space(self, space: str) -> None:
        if space != "z":
            raise ConfigError(space_error(space))

    def prepare(self, dtype=jnp.float32) -> "DCGAN":
        """Itself: its layers have no weight-only preprocessing to do once."""
        return self

    def noise_buffers(self) -> dict:
        """{}: a DCGAN draws without noise."""
        return {}

    def initial_codes(self, space: str, n: int, z=None):
        """n copies of one starting code [n, z_dim]: `z` if given, else `start_code(z_dim)`.

        Not zeros, although 0 is the prior's mean (the usual neutral start, like StyleGAN's w_avg): in the
        demo DCGAN (gan-face-generate 1.1.1) every first-layer batch-norm shift is negative, so at z = 0
        all first-layer ReLUs are off, G is locally constant and the gradient is exactly zero: the
        optimiser would never move. The origin is also untypical for the prior: z ~ N(0, I_100) has norm
        10 +- 0.7, and the generator never saw inputs near 0. A fixed draw from the prior is a typical
        input with live gradients; all n segments start from this code, as in the paper (an inversion with
        learned masks then offsets each a little: InversionSettings.start_jitter)."""
        self.check_space(space)
        z = start_code(self.z_dim) if z is None else jnp.asarray(z, jnp.float32).reshape(self.z_dim)
        return jnp.broadcast_to(z, (n, self.z_dim)).astype(jnp.float32)

    def synthesize(self, codes, space: str = "z", *, noise_mode="const", key=None, dtype=jnp.float32,
                   remat=False, noise=None):
        """Images [N, H, W, 3] float32 in [-1, 1] from z codes [N, z_dim]. `noise_mode`, `key` and `remat`
        are accepted for the protocol's sake: a DCGAN has no noise inputs (every mode gives the same
        image), and at 64 px its activations are too small for rematerialisation to matter. `noise`
        must be None or empty (noise_buffers() is {})."""
        self.check_space(space)
        if noise_mode not in NOISE_MODES:
            raise ConfigError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if noise:
            raise ConfigError("a DCGAN draws without noise; it takes no noise buffers")
        return self(codes, dtype=dtype)

    # ------------------------------------------------------------------ the features protocol (G^S)
    segment_space = "z"  # X^S, the segment generator's code, is a z code like the image codes
    # Stride-2 transposed convolutions leave a period-2 pattern in the activations (segmenter/features.py).
    checkerboard_features = True

    @property
    def feature_layers(self) -> tuple:
        """Resolutions whose activations `features` offers: the batch-normed blocks' (4, 8, 16, 32 at 64 px)."""
        return tuple(4 * 2 ** i for i in range(len(self.config.channels)))

    def feature_channels(self, layer: int) -> int:
        return self.config.channels[self.feature_layers.index(int(layer))]

    def sample_codes(self, num: int, seed: int) -> np.ndarray:
        """z codes [num, z_dim] of random samples, z ~ N(0, I) from numpy RandomState(seed)."""
        return np.random.RandomState(seed).standard_normal((num, self.z_dim)).astype(np.float32)

    # ------------------------------------------------------------------ the network
    def __call__(self, z, *, dtype=jnp.float32):
        img, _ = self._run(z, dtype=dtype, feature_resolutions=(), stop_at=None)
        return img

    def features(self, z, resolutions, *, noise_mode="none", key=None, dtype=jnp.float32) -> dict:
        """Block outputs (after batch norm and ReLU) {res: [N, res, res, C]} for z codes [N, z_dim] at the
        requested resolutions (`feature_layers`: 4, 8, ..., resolution / 2). Blocks above the largest one
        and the output layer are not computed. `noise_mode` and `key` are accepted for the protocol's
        sake (a DCGAN has no noise inputs)."""
        resolutions = tuple(sorted(set(int(r) for r in resolutions)))
        blocks = list(self.feature_layers)
        bad = [r for r in resolutions if r not in blocks]
        if bad or not resolutions:
            raise ConfigError(f"no DCGAN block at resolution(s) {bad or '()'}; blocks are {blocks}")
        _, feats = self._run(z, dtype=dtype, feature_resolutions=resolutions, stop_at=max(resolutions))
        return feats

    def _run(self, z, *, dtype, feature_resolutions, stop_at):
        cfg = self.config
        z = jnp.asarray(z)
        if z.ndim == 4 and z.shape[1:3] == (1, 1):  # [N, 1, 1, z_dim] is fine too
            z = z[:, 0, 0, :]
        if z.ndim != 2 or z.shape[1] != cfg.z_dim:
            raise ConfigError(f"z must have shape [N, {cfg.z_dim}], got {tuple(z.shape)}")
        dtype, precision = compute.resolve(dtype)
        main = self.params["main"]
        x = z.astype(dtype)[:, None, None, :]
        feats = {}
        for i, (conv, bn) in enumerate(cfg.layer_index()):
            stride, padding = (1, 0) if i == 0 else (2, 1)
            x = conv_transpose2d(x, main[str(conv)]["weight"], stride, padding, precision=precision)
            if bn is not None:
                p = main[str(bn)]
                # Eval-mode BatchNorm2d folded into one scale and shift per channel (in fp32).
                scale = p["weight"] * jax.lax.rsqrt(p["running_var"] + cfg.bn_eps)
                shift = p["bias"] - p["running_mean"] * scale
                x = jax.nn.relu(x * scale.astype(x.dtype) + shift.astype(x.dtype))
                if x.shape[1] in feature_resolutions:
                    feats[x.shape[1]] = x.astype(jnp.float32)
                if x.shape[1] == stop_at:
                    return None, feats
        return jnp.tanh(x.astype(jnp.float32)), feats


# ---------------------------------------------------------------------------------------------- loading


def config_from_state_dict(state: Mapping[str, Any]) -> DCGANConfig:
    """Read the architecture from the weight shapes: conv weights are main.{0,3,6,...}.weight."""
    convs = []
    i = 0
    while f"main.{i}.weight" in state:
        w = state[f"main.{i}.weight"]
        if getattr(w, "ndim", 0) != 4:
            break
        convs.append(w)
        i += 3
    if len(convs) < 2:
        raise CheckpointError("not a DCGAN generator state dict (expected main.0.weight, main.3.weight, ... "
                              f"ConvTranspose2d weights; got keys {sorted(state)[:6]}...)")
    return DCGANConfig(z_dim=int(convs[0].shape[0]), channels=tuple(int(w.shape[1]) for w in convs[:-1]),
                       img_channels=int(convs[-1].shape[1]))


def params_from_state_dict(state: Mapping[str, Any], config: DCGANConfig) -> dict:
    """torch state dict (flat names) -> our nested params, checked against `config`."""
    expected = config.expected_shapes()
    ignored = {k for k in state if k.endswith(".num_batches_tracked")}
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected and k not in ignored]
    problems += [f"{k} {tuple(np.shape(state[k]))} != {v}" for k, v in expected.items()
                 if k in state and tuple(np.shape(state[k])) != v]
    if problems:
        raise CheckpointError("state dict does not fit the DCGAN generator: " + ", ".join(problems[:8])
                              + (f" (+{len(problems) - 8} more)" if len(problems) > 8 else ""))
    params: dict = {"main": {}}
    for name in expected:
        _, idx, leaf = name.split(".")
        value = np.asarray(state[name])
        if not np.issubdtype(value.dtype, np.floating) or not np.all(np.isfinite(value)):
            raise CheckpointError(f"{name} is not a finite floating-point tensor")
        params["main"].setdefault(idx, {})[leaf] = np.array(value, np.float32)
    if any(np.any(params["main"][str(bn)]["running_var"] < 0) for _, bn in config.layer_index() if bn is not None):
        raise CheckpointError("negative batch-norm running variance in the state dict")
    return params


def dcgan_from_state_dict(state: Mapping[str, Any]) -> DCGAN:
    """A DCGAN from a PyTorch `Generator.state_dict()` (numpy arrays, e.g. from read_torch_zip)."""
    config = config_from_state_dict(state)
    return DCGAN(config=config, params=params_from_state_dict(state, config))


def dcgan_from_params(config: Mapping[str, Any], params: dict) -> DCGAN:
    """A DCGAN from a checkpoint record's config and its params tree (checked against each other)."""
    try:
        cfg = DCGANConfig.from_dict(config)
    except (TypeError, KeyError, ValueError) as e:
        raise CheckpointError(f"bad DCGAN config in record: {e}") from None
    try:
        flat = {f"main.{idx}.{leaf}": v for idx, layer in params["main"].items() for leaf, v in layer.items()}
    except (KeyError, AttributeError, TypeError):
        raise CheckpointError("DCGAN params must be {'main': {index: {name: array}}}") from None
    return DCGAN(config=cfg, params=params_from_state_dict(flat, cfg))


def random_params(seed: int, config: DCGANConfig = DCGANConfig()) -> dict:
    """DCGAN-style initialisation (weights N(0, 0.02), BN gamma N(1, 0.02)) with non-trivial running
    statistics, for tests that must not depend on the pretrained file."""
    rng = np.random.RandomState(seed)
    state = {}
    for name, shape in config.expected_shapes().items():
        leaf = name.rsplit(".", 1)[1]
        if leaf == "weight" and len(shape) == 4:
            state[name] = rng.normal(0.0, 0.02, shape)
        elif leaf == "weight":
            state[name] = rng.normal(1.0, 0.02, shape)
        elif leaf == "running_var":
            state[name] = rng.uniform(0.5, 2.0, shape)
        else:
            state[name] = rng.normal(0.0, 0.1, shape)
    return params_from_state_dict({k: v.astype(np.float32) for k, v in state.items()}, config)
