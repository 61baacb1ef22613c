"""The segmenter heads (k-means, MLP ensemble) and `Segmenter`, the mask source S = G^S(X^S)."""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from ...errors import ConfigError
from .features import DEFAULT_NOISE_MODE, feature_dim, initial_code, pixel_features, resolve_layers

# The masks' Gaussian blur at the head's resolution, as a fraction of the image side (see finish_masks).
MASK_SMOOTHING = 1.0 / 16

# Annealing during an inversion (Segmenter.hardness): the head's logits are multiplied by a factor that
# grows geometrically from 1 at the start to HARDENING when HARDEN_UNTIL of the steps are done, and stays
# there. For the k-means head (median odds 9:1 at factor 1) the median pixel ends at 9^(10/3) ~ 1500:1.
# Why: soft masks let X^S learn (the gradient reaches it through every pixel's mixture), hard masks let
# each image code own its segment; a head that is hard from the start stops X^S learning, one that stays
# soft blends every pixel from several codes (docs/segmenter.md measures both).
HARDENING = 10.0 / 3.0
HARDEN_UNTIL = 0.5

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

    def probabilities(self, feats, hardness=1.0):
        return jax.nn.softmax(feats @ self.centroids.T * (hardness / self.temperature), axis=-1)

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

    def probabilities(self, feats, hardness=1.0):
        return jnp.mean(jax.nn.softmax(self.member_logits(feats) * (hardness / self.temperature), axis=-1),
                        axis=0)

    def arrays(self) -> dict:
        return {"params": self.params, "temperature": self.temperature}

    @classmethod
    def from_arrays(cls, arrays):
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), arrays["params"])
        return cls(params=params, temperature=jnp.asarray(arrays["temperature"], jnp.float32))


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

    Mask-source protocol: init(n) -> {"segment_code": X^S} ({} when frozen; the fixed
    `code` is then used), masks(params, progress) -> [n, R, R] summing to 1 per pixel, where progress is
    the fraction of the inversion done (1 after it: the masks a result keeps and an edit recomputes).
    The head's logits are annealed over the inversion (`hardness`; hardening=1 turns that off). A frozen
    segmenter made by `freeze()` / `with_code()` keeps its final masks, so an inversion does not recompute
    constant masks per step."""

    anneals = True  # masks() takes the inversion's progress
    generator: Any
    head: Any  # KMeansHead | MLPHead
    code: jax.Array  # initial (or, when frozen, fixed) X^S: [num_ws, w_dim] (StyleGAN2), [z_dim] (DCGAN)
    layers: tuple = flax.struct.field(pytree_node=False)
    frozen: bool = flax.struct.field(pytree_node=False, default=False)
    noise_mode: str = flax.struct.field(pytree_node=False, default=DEFAULT_NOISE_MODE)
    smoothing: float = flax.struct.field(pytree_node=False, default=MASK_SMOOTHING)
    fixed_masks: Any = None  # [n, R, R] for `code`, kept when frozen (None: computed on demand)
    hardening: float = flax.struct.field(pytree_node=False, default=HARDENING)
    harden_until: float = flax.struct.field(pytree_node=False, default=HARDEN_UNTIL)

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

    def hardness(self, progress=1.0):
        """The factor on the head's logits when `progress` of the inversion is done (a number or a traced
        scalar): hardening ** min(progress / harden_until, 1)."""
        if self.hardening == 1.0:
            return 1.0
        return self.hardening ** jnp.clip(jnp.asarray(progress, jnp.float32) / self.harden_until, 0.0, 1.0)

    def masks(self, params: dict, progress=1.0):
        if self.frozen:  # nothing to learn, so nothing to anneal: the final masks throughout
            return self.fixed_masks if self.fixed_masks is not None else self.masks_for_code(self.code)
        return self.masks_for_code(params["segment_code"], progress=progress)

    def freeze(self, frozen: bool = True) -> "Segmenter":
        """The same segmenter with X^S fixed at `code` (frozen=True) or learned (False)."""
        fixed = self.masks_for_code(self.code) if frozen else None
        return self.replace(frozen=frozen, fixed_masks=fixed)

    def with_code(self, code) -> "Segmenter":
        """The same segmenter starting at (or, when frozen, fixed at) another X^S."""
        return self.replace(code=self._as_codes(code)[0], fixed_masks=None).freeze(self.frozen)

    def with_hardening(self, hardening: float = HARDENING, until: float = HARDEN_UNTIL) -> "Segmenter":
        """The same segmenter with another annealing (see `hardness`): the head's logits end `hardening`
        times larger once `until` of the inversion is done. hardening=1: no annealing."""
        hardening, until = _checked_hardening(hardening, until)
        if (hardening, until) == (self.hardening, self.harden_until):
            return self  # a frozen segmenter's masks are not recomputed for nothing
        return self.replace(hardening=hardening, harden_until=until, fixed_masks=None).freeze(self.frozen)

    @property
    def code_shape(self) -> tuple[int, ...]:
        return tuple(self.code.shape)

    def _as_codes(self, code):
        """One code or a batch [B, *code_shape] -> [B, *code_shape]. A single code may be given in any
        shape that broadcasts to code_shape (StyleGAN2: [w_dim] or [1, w_dim] for a W code)."""
        shape = self.code_shape
        code = jnp.asarray(code, jnp.float32)
        batched = code.ndim == len(shape) + 1
        try:
            return (jnp.broadcast_to(code, code.shape[:1] + shape) if batched
                    else jnp.broadcast_to(code, shape)[None])
        except ValueError:
            raise ConfigError(f"segment code must be {list(shape)} (or a batch [B, {', '.join(map(str, shape))}]) "
                              f"for this generator, got {list(code.shape)}") from None

    def masks_for_code(self, code, resolution: int | None = None, progress=1.0):
        """Masks for any segment code (e.g. X^S moved by an edit direction): one code -> [n, R, R]; a batch
        [B, *code_shape] -> [B, n, R, R]. `resolution` defaults to the generator's; `feature_resolution`
        gives the head's own per-pixel decisions without upsampling. `progress` < 1 only inside an
        inversion (see `hardness`)."""
        batched = jnp.ndim(code) == len(self.code_shape) + 1
        r = self.resolution if resolution is None else int(resolution)
        m = head_masks(self.generator, self.head, self._as_codes(code), self.hardness(progress), layers=self.layers,
                       noise_mode=self.noise_mode, smoothing=self.smoothing, resolution=r)
        return m if batched else m[0]


# jitted so that eager calls (editing, label maps) do not run op by op; inside an outer jit (the inversion
# step) it is simply inlined.
@functools.partial(jax.jit, static_argnames=("layers", "noise_mode", "smoothing", "resolution"))
def head_masks(generator, head, codes, hardness=1.0, *, layers, noise_mode, smoothing, resolution):
    """codes [B, *code_shape] -> masks [B, n, resolution, resolution] (features -> head (logits times
    `hardness`) -> smoothing -> upsampling)."""
    probs = head.probabilities(pixel_features(generator, codes, layers, noise_mode=noise_mode),
                               hardness)  # [B, h, h, n]
    return jnp.moveaxis(finish_masks(probs, smoothing, resolution), -1, 1)


def smoothing_matrix(size: int, sigma: float) -> np.ndarray:
    """[size, size] rows of Gaussian weights (std `sigma` pixels) over the pixels of one axis, each row
    normalised to sum 1 (near a border the weights fold onto the pixels that exist)."""
    x = np.arange(size, dtype=np.float64)
    k = np.exp(-0.5 * np.square((x[:, None] - x[None, :]) / sigma))
    return (k / k.sum(axis=1, keepdims=True)).astype(np.float32)


def finish_masks(probs, smoothing: float, resolution: int):
    """Per-pixel probabilities [..., h, h, n] -> masks [..., R, R, n]: a Gaussian blur of std
    `smoothing * h` pixels (a convex combination of neighbours, so each pixel still sums to 1), then
    bilinear upsampling to R (convex weights too).

    Why the blur: the head decides each pixel on its own, and the inversion moves X^S wherever LPIPS
    gains, so nothing keeps a segment in one piece: a few pixels whose features lean to another cluster
    become islands, and with X^S learned they multiply (docs/segmenter.md measures it). Averaging
    the probabilities over a neighbourhood of about 1/16 of the image makes a pixel's segment the
    neighbourhood's majority: islands smaller than that vanish, segment borders become soft seams."""
    h = probs.shape[-2]
    if smoothing > 0:
        k = jnp.asarray(smoothing_matrix(h, smoothing * h))
        probs = jnp.einsum("ij,...jwn->...iwn", k, probs)
        probs = jnp.einsum("ij,...hjn->...hin", k, probs)
    if resolution != h:
        probs = jax.image.resize(probs, probs.shape[:-3] + (resolution, resolution, probs.shape[-1]),
                                 method="bilinear")
    return probs


def _checked_hardening(hardening, until) -> tuple[float, float]:
    if not (isinstance(hardening, (int, float)) and math.isfinite(hardening) and hardening >= 1):
        raise ConfigError(f"segmenter hardening must be a number >= 1, got {hardening!r}")
    if not (isinstance(until, (int, float)) and 0 < until <= 1):
        raise ConfigError(f"segmenter harden_until must be in (0, 1], got {until!r}")
    return float(hardening), float(until)


def make_segmenter(generator, head, *, layers=None, code=None, frozen=False,
                   noise_mode=DEFAULT_NOISE_MODE, smoothing=MASK_SMOOTHING, hardening=HARDENING,
                   harden_until=HARDEN_UNTIL) -> Segmenter:
    layers = resolve_layers(generator, layers)
    if noise_mode not in ("none", "const"):
        raise ConfigError(f"segmenter noise_mode must be 'none' or 'const', got {noise_mode!r}")
    if not (isinstance(smoothing, (int, float)) and 0 <= smoothing <= 1):
        raise ConfigError(f"segmenter smoothing must be a number in [0, 1] (a fraction of the image side), "
                          f"got {smoothing!r}")
    d = feature_dim(generator, layers)
    if head.input_dim != d:
        raise ConfigError(f"head expects {head.input_dim} features per pixel, layers {list(layers)} give {d}")
    start = initial_code(generator)
    hardening, harden_until = _checked_hardening(hardening, harden_until)
    seg = Segmenter(generator=generator, head=head, code=jnp.zeros(start.shape, jnp.float32), layers=layers,
                    frozen=frozen, noise_mode=noise_mode, smoothing=float(smoothing), hardening=hardening,
                    harden_until=harden_until)
    code = start if code is None else code
    return seg.with_code(code)
