"""phi: the image generator's own per-pixel features for a code, the input of every segmenter head."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..errors import ConfigError

# Features are taken without the synthesis noise inputs: the segment layout should follow the image's
# structure, not per-pixel stochastic detail (with random weights, "const" noise scatters single pixels
# into their own segment; see docs/segmenter.md).
DEFAULT_NOISE_MODE = "none"
_EPS = 1e-8


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
