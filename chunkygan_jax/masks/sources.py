"""The simple mask sources for the segment masks S (paper eq. 1): fixed user masks, free
low-resolution logits, a default layout for any n, and label maps turned into masks.

A mask source is a small object with
  init(n)            -> the pytree of its optimisable parameters (may be empty),
  masks(params)      -> float32 [n, H, W], each pixel summing to 1 over the n segments;
a source whose masks change over an inversion (`anneals = True`: the segment generator) takes
  masks(params, progress), progress = the fraction of the steps done (1 for a finished result).
The inversion optimises the parameters together with the latent codes, so a source whose params are
empty is a fixed mask. `source_masks` calls either kind.
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError, ImageError

GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def layout_centers(n: int, seed: int = 0) -> np.ndarray:
    """n well-spread points in [0, 1]^2 (a Fibonacci lattice), in (y, x); the seed shifts the lattice
    cyclically so that other seeds give other, equally even layouts."""
    shift = np.random.RandomState(seed).uniform(size=2) if seed else np.zeros(2)
    i = np.arange(n, dtype=np.float64)
    y = ((i + 0.5) / n + shift[0]) % 1.0
    x = ((i * GOLDEN) + 0.5 / n + shift[1]) % 1.0
    return np.stack([y, x], axis=1)


def default_layout(n: int, resolution: int, *, seed: int = 0, softness: float = 0.25) -> np.ndarray:
    """Soft Voronoi masks [n, R, R] around `layout_centers`: works for any n without a trained segmenter.
    `softness` is the blend width as a fraction of the typical cell size."""
    if n < 1:
        raise ConfigError(f"segments must be >= 1, got {n}")
    centers = layout_centers(n, seed)
    coords = (np.arange(resolution) + 0.5) / resolution
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    d2 = (yy[None] - centers[:, 0, None, None]) ** 2 + (xx[None] - centers[:, 1, None, None]) ** 2
    cell = 1.0 / math.sqrt(n)
    logits = -d2 / (2.0 * (softness * cell) ** 2)
    logits -= logits.max(axis=0, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=0, keepdims=True)).astype(np.float32)


def normalize_masks(masks) -> np.ndarray:
    """Non-negative [n, H, W] -> sums to 1 per pixel. Pixels no mask covers are shared equally (a user
    who paints only some regions gets those regions, with the rest split evenly)."""
    m = np.asarray(masks, np.float64)
    if m.ndim != 3:
        raise ImageError(f"masks must have shape [n, H, W], got {m.shape}")
    if not np.all(np.isfinite(m)) or m.min() < 0:
        raise ImageError("masks must be finite and non-negative")
    total = m.sum(axis=0, keepdims=True)
    uncovered = total <= 1e-12
    m = np.where(uncovered, 1.0 / m.shape[0], m / np.where(uncovered, 1.0, total))
    return m.astype(np.float32)


def masks_from_labels(labels: np.ndarray, n: int | None = None) -> np.ndarray:
    """Label map [H, W] of indices 0..n-1 -> hard one-hot masks [n, H, W]."""
    labels = np.asarray(labels)
    top = int(labels.max()) + 1
    n = top if n is None else n
    if labels.min() < 0 or top > n:
        raise ImageError(f"label map holds labels {sorted(set(np.unique(labels).tolist()))[:8]}, "
                         f"expected indices 0..{n - 1}")
    return (labels[None] == np.arange(n)[:, None, None]).astype(np.float32)


def source_masks(source, params: dict, progress=1.0) -> jax.Array:
    """A mask source's masks [n, H, W] for its `params` when `progress` of the inversion is done (the
    module docstring gives the protocol)."""
    return source.masks(params, progress) if getattr(source, "anneals", False) else source.masks(params)


@flax.struct.dataclass
class FixedMasks:
    """Masks that are not optimised (user masks, or the default layout frozen)."""

    value: jax.Array  # [n, H, W], sums to 1

    def init(self, n: int) -> dict:
        if self.value.shape[0] != n:
            raise ConfigError(f"{self.value.shape[0]} masks given for {n} segments")
        return {}

    def masks(self, params: dict) -> jax.Array:
        return self.value


@flax.struct.dataclass
class LogitMasks:
    """Free low-resolution logits, bilinearly upsampled and softmaxed over segments. The low resolution
    keeps masks smooth and cheap to optimise (per-pixel masks would overfit noise)."""

    initial: jax.Array  # [n, h, w] initial logits
    resolution: int = flax.struct.field(pytree_node=False)

    def init(self, n: int) -> dict:
        if self.initial.shape[0] != n:
            raise ConfigError(f"{self.initial.shape[0]} mask logits given for {n} segments")
        return {"mask_logits": self.initial}

    def masks(self, params: dict) -> jax.Array:
        logits = params["mask_logits"]
        n = logits.shape[0]
        up = jax.image.resize(logits, (n, self.resolution, self.resolution), method="bilinear")
        return jax.nn.softmax(up, axis=0)


def logit_masks_from(masks, resolution: int, *, logit_resolution: int = 16, temperature: float = 1.0) -> LogitMasks:
    """Learnable logits whose softmax starts close to `masks` [n, R, R]."""
    m = np.asarray(masks, np.float32)
    n = m.shape[0]
    small = np.asarray(jax.image.resize(m, (n, logit_resolution, logit_resolution), method="linear"))
    logits = np.log(np.clip(small, 1e-4, None)) / temperature
    return LogitMasks(initial=jnp.asarray(logits - logits.mean(axis=0, keepdims=True)), resolution=resolution)
