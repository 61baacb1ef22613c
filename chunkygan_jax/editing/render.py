"""Turning codes into images: the one rendering path of the package. A result's codes (edited or not),
with its tuning delta and optimised noise, become segment images here, and the segment images an image
by its masks (paper eq. 1, and eq. 3 with a static mask); `blend_region` puts a region into an image.

Every image drawn from codes, by `bin/edit`, the editor, region edits and the preview sheets, goes
through one jitted program, `_draw`. JAX keys its compilations by what changes the program: the space,
the noise mode and the compute dtype (static), and the structure and shapes of the arguments (the
generator's tree, the codes, whether an edit's offsets are given). The values (the weights of a tuned
generator, its noise, the codes, the offsets) are arguments, so a new result, edit or strength never
compiles anything new.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..blending import poisson_blend
from ..deltas import tuned_generator
from ..errors import ConfigError
from ..masks.composite import composite
from ..noise import drawer, mask_params
from .spaces import check_space, count_segments, direction_codes, direction_space, to_styles

BLENDS = ("mask", "poisson", "none")


# ---------------------------------------------------------------------------------------- rendering
def result_drawer(generator, result):
    """The generator that draws `result`'s codes: `generator` (the one it was inverted with) with the
    result's weight delta when it was tuned (deltas.tuned_generator, memoised per result) and with its
    optimised noise when it has some (noise.drawer)."""
    return drawer(tuned_generator(generator, result.tuning), result.latents)


def render_segments(generator, latents, space=None, *, noise_mode="const", dtype="float32", w_offset=None,
                    s_offset=None) -> jax.Array:
    """One image per segment code: [n, H, W, 3]; with the latents' own noise when they hold one.

    w_offset: added to every code in the direction space (W+ [num_ws, w_dim] for a StyleGAN2, whose W
    codes become W+; [z_dim] for z codes), then s_offset ({layer: [1, channels]}) to every code's
    styles: an edit folded into two offsets (the editor's), whose values do not recompile anything."""
    codes = latents["codes"] if isinstance(latents, dict) and "codes" in latents else latents
    space = check_space(generator, codes, space)
    codes = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), codes)
    return _draw(drawer(generator, latents), codes, w_offset, s_offset, space=space, noise_mode=noise_mode,
                 dtype=dtype)


@functools.partial(jax.jit, static_argnames=("space", "noise_mode", "dtype"))
def _draw(generator, codes, w_offset, s_offset, *, space, noise_mode, dtype):
    if w_offset is not None:
        codes, space = direction_codes(generator, codes) + w_offset, direction_space(generator)
    if s_offset is not None:
        codes, space = {k: v + s_offset[k] for k, v in to_styles(generator, codes).items()}, "s"
    return generator.synthesize(codes, space, noise_mode=noise_mode, dtype=dtype)


def _masks_from_source(mask_source, latents):
    params = mask_params(latents)
    if "segment_code" in params and hasattr(mask_source, "masks_for_code"):
        return mask_source.masks_for_code(params["segment_code"])
    return mask_source.masks(params)


def render(generator, latents, masks=None, space=None, *, target=None, static_mask=None, mask_source=None,
           noise_mode="const", dtype="float32") -> np.ndarray:
    """Recompose an image from (edited) latents: sum_i G(X_i) * S_i (paper eq. 1), and with a static
    mask S^X and the target I: S^X * I + (1 - S^X) * sum_i G(X_i) * S_i (eq. 3). [H, W, 3] float32.

    masks: [n, H, W]; or None with `mask_source` (e.g. the segment generator: masks follow an edited
    segment code) or with a single segment (mask 1 everywhere)."""
    codes = latents["codes"]
    imgs = render_segments(generator, latents, space, noise_mode=noise_mode, dtype=dtype)
    masks = resolve_masks(generator, latents, masks, mask_source, count_segments(codes))
    if (target is None) != (static_mask is None):
        raise ConfigError("a static mask needs the target image, and the target is used only with one")
    out = composite(imgs, masks, None if target is None else jnp.asarray(target, jnp.float32),
                    None if static_mask is None else jnp.asarray(static_mask, jnp.float32))
    return np.asarray(out)


def resolve_masks(generator, latents, masks, mask_source, n):
    r = generator.resolution
    if mask_source is not None:
        m = _masks_from_source(mask_source, latents)
    elif masks is not None:
        m = masks
    elif n == 1:
        m = jnp.ones((1, r, r), jnp.float32)
    else:
        raise ConfigError(f"{n} segments need their masks (or a mask source) to be composited")
    m = jnp.asarray(m, jnp.float32)
    if m.shape != (n, r, r):
        raise ConfigError(f"masks must be [{n}, {r}, {r}] for {n} segments, got {tuple(m.shape)}")
    return m


def blend_region(generated, target, region, blend):
    """Composite `generated` into `target` inside `region` [H, W] (float32 numpy in and out)."""
    if blend == "none":
        return np.asarray(generated, np.float32)
    if blend == "mask":
        r = np.asarray(region, np.float32)[..., None]
        return (r * generated + (1.0 - r) * target).astype(np.float32)
    if blend == "poisson":
        return np.asarray(_poisson(jnp.asarray(generated), jnp.asarray(target), jnp.asarray(region)))
    raise ConfigError(f"blend must be one of {BLENDS}, got {blend!r}")


_poisson = jax.jit(poisson_blend)


def current_image(result) -> np.ndarray:
    """The image a result stands for: the photo (target) of a plain projection, the composite once it
    has been edited (the input of the next local edit, paper Fig. 9), clipped to [-1, 1]."""
    image = result.composite if result.settings.get("edits") else result.target
    return np.clip(np.asarray(image, np.float32), -1.0, 1.0)  # generated pixels may overshoot slightly
