"""Optimised noise, as NVIDIA's StyleGAN2 projector does it: the generator's per-layer noise buffers are
optimised beside the codes, held back by a multi-scale regulariser and renormalised after every step.

The regulariser, per buffer n [H, W]: at every scale (the buffer, then 2x2 average-pooled while it is
wider than 8 pixels), the squared mean of n times n shifted by one pixel (circularly), down and across.
It is 0 for noise without correlations between neighbours, so that the noise cannot draw the image.

A result keeps its noise in `latents["noise"]` ({conv layer: [1, res, res]}: one noise per image,
shared by its segments); `drawer` gives the generator that renders it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .errors import ConfigError

DEFAULT_NOISE_REG_WEIGHT = 1e5  # NVIDIA's projector's regularize_noise_weight


def has_noise(generator) -> bool:
    return bool(generator.noise_buffers())


def require_noise(generator) -> dict:
    """The generator's noise buffers {layer: [res, res]}, or one clear error for one without noise."""
    if not has_noise(generator):
        raise ConfigError(f"optimize_noise needs a generator with noise inputs (StyleGAN2); this "
                          f"{type(generator).__name__} has none")
    return generator.noise_buffers()


def regularizer(noise: dict) -> jax.Array:
    """NVIDIA's noise regulariser, summed over the buffers of `noise` ({layer: [..., H, W]}); [...]."""
    total = 0.0
    for buf in noise.values():
        x = jnp.asarray(buf, jnp.float32)
        while True:
            for axis in (-1, -2):
                total = total + jnp.square(jnp.mean(x * jnp.roll(x, 1, axis=axis), axis=(-2, -1)))
            if x.shape[-1] <= 8:
                break
            x = x.reshape(x.shape[:-2] + (x.shape[-2] // 2, 2, x.shape[-1] // 2, 2)).mean(axis=(-3, -1))
    return total


def normalize(noise: dict) -> dict:
    """Every buffer to mean 0 and mean square 1 (over its last two axes), as after each projector step."""
    def one(x):
        x = x - jnp.mean(x, axis=(-2, -1), keepdims=True)
        return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=(-2, -1), keepdims=True))
    return jax.tree_util.tree_map(one, noise)


def initial_noise(generator, copies: int) -> dict:
    """The generator's own buffers, normalised, with a leading axis of `copies`: {layer: [copies, res, res]}.
    Starting from them, a projection with optimised noise starts from the image of one without."""
    bufs = normalize({k: jnp.asarray(v, jnp.float32) for k, v in require_noise(generator).items()})
    return {k: jnp.broadcast_to(v, (copies,) + v.shape) for k, v in bufs.items()}


def drawer(generator, latents):
    """The generator that renders `latents`: with the result's own noise when it has one."""
    if not isinstance(latents, dict) or "noise" not in latents:
        return generator
    noise = latents["noise"]
    if not has_noise(generator):
        raise ConfigError(f"this result holds optimised noise, and this {type(generator).__name__} "
                          "has no noise inputs: render it with the StyleGAN2 it was inverted with")
    if not isinstance(noise, dict) or any(np.shape(v)[:1] != (1,) for v in noise.values()):
        raise ConfigError("a result's noise must be one buffer [1, res, res] per conv layer")
    bufs = {k: v[0] for k, v in noise.items()}
    if not isinstance(next(iter(bufs.values()), None), jax.core.Tracer) and \
            not all(np.all(np.isfinite(np.asarray(v))) for v in bufs.values()):
        raise ConfigError("a result's noise holds non-finite values")
    return generator.with_noise(bufs)


def mask_params(latents: dict) -> dict:
    """The mask source's parameters in a latent pytree: everything but the codes and the noise."""
    return {k: v for k, v in latents.items() if k not in ("codes", "noise")}
