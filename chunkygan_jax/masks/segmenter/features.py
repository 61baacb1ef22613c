"""phi: the image generator's own per-pixel features for a code, the input of every segmenter head.

Works for any generator that offers features (generators/protocol.py: `segment_space`, `feature_layers`,
`feature_channels`, `features`, `sample_codes`): StyleGAN2 (W+ codes, synthesis blocks) and the DCGAN
(z codes, transposed-conv blocks)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ...errors import ConfigError
from ...generators.protocol import offers_features

# Features are taken without the synthesis noise inputs: the segment layout should follow the image's
# structure, not per-pixel stochastic detail (with random weights, "const" noise scatters single pixels
# into their own segment; see docs/segmenter.md).
DEFAULT_NOISE_MODE = "none"
_EPS = 1e-8
# The version of phi: part of the k-means cache key, so a head fitted on other features is never reused.
FEATURES_VERSION = 3


def default_layers(generator) -> tuple[int, ...]:
    """Up to three middle resolutions: the largest feature layers with 8 <= res <= min(R / 2, 256)
    (64 px: 8, 16, 32; 256 px: 32, 64, 128; 1024 px: 64, 128, 256)."""
    offered = sorted(generator.feature_layers)
    usable = [r for r in offered if 8 <= r <= min(generator.resolution // 2, 256)] or offered[-1:]
    return tuple(usable[-3:])


def check_generator(generator) -> None:
    if not offers_features(generator):
        raise ConfigError(f"the segment generator needs a generator that offers its features (StyleGAN2, the "
                          f"demo DCGAN); {type(generator).__name__} does not: use masks='logits' or 'layout'")


def resolve_layers(generator, layers=None) -> tuple[int, ...]:
    """Validated, sorted feature layers (`default_layers` when None)."""
    check_generator(generator)
    layers = tuple(sorted(set(int(r) for r in (default_layers(generator) if layers is None else layers))))
    offered = list(generator.feature_layers)
    if not layers or any(r not in offered for r in layers):
        raise ConfigError(f"segmenter layers must be among the generator's feature layers {offered}, "
                          f"got {list(layers)}")
    return layers


def smooth_2x(f):
    """[N, r, r, C] -> the same filtered by the binomial [1, 2, 1] / 4 along both axes (edges repeated).

    Up-sampling by 2 with a transposed convolution leaves a period-2 pattern in the activations (each
    output pixel's parity picks other kernel taps: the "checkerboard" of a DCGAN). On the demo DCGAN it
    dominates the per-pixel features: k-means then clusters pixel parities, not image parts, and its
    masks are a checkerboard of 400-1000 pieces per image. [1, 2, 1] is zero at the period-2 frequency,
    so it removes that pattern exactly; it is symmetric (no shift). phi applies it to the generators that
    say their features carry the pattern (`checkerboard_features`: the DCGAN); StyleGAN2's up-sampling is
    FIR-filtered and leaves none, so its features are used as they are."""
    if f.shape[1] < 3:
        return f
    p = jnp.pad(f, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    f = (p[:, :-2] + 2.0 * p[:, 1:-1] + p[:, 2:]) * 0.25
    return (f[:, :, :-2] + 2.0 * f[:, :, 1:-1] + f[:, :, 2:]) * 0.25


def pixel_features(generator, codes, layers, *, noise_mode=DEFAULT_NOISE_MODE):
    """phi: codes of the generator's segment space [N, ...] -> unit per-pixel features [N, h, h, D],
    h = max(layers)."""
    feats = generator.features(codes, layers, noise_mode=noise_mode)
    h = max(layers)
    parts = []
    for r in sorted(feats):
        f = feats[r].astype(jnp.float32)
        if generator.checkerboard_features:
            f = smooth_2x(f)
        if r != h:
            f = jax.image.resize(f, (f.shape[0], h, h, f.shape[-1]), method="bilinear")
        f = f * jax.lax.rsqrt(jnp.sum(jnp.square(f), axis=-1, keepdims=True) + _EPS)
        parts.append(f)
    return jnp.concatenate(parts, axis=-1) / math.sqrt(len(parts))


def feature_dim(generator, layers) -> int:
    return int(sum(generator.feature_channels(r) for r in layers))


def code_shape(generator) -> tuple[int, ...]:
    """The shape of one segment code X^S ([num_ws, w_dim] for StyleGAN2, [z_dim] for the DCGAN)."""
    return tuple(jax.eval_shape(lambda: generator.initial_codes(generator.segment_space, 1)).shape[1:])


def initial_code(generator):
    """Where X^S starts: the generator's own starting code in its segment space (w_avg, a fixed z)."""
    return generator.initial_codes(generator.segment_space, 1)[0]
