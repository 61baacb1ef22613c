"""Recomposing images from (edited) latents (paper eq. 1 and 3), and editing a whole result."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..blending import poisson_blend
from ..deltas import tuned_generator
from ..errors import ConfigError
from ..masks.composite import composite
from ..noise import drawer, mask_params
from ..results import InversionResult
from .edits import DirectionEdit, StyleEdit, apply_edits, describe, edit_list
from .spaces import check_space, count_segments, latent_space

BLENDS = ("mask", "poisson", "none")

# ---------------------------------------------------------------------------------------- rendering
_SYNTH_CACHE: dict = {}


def render_segments(generator, latents, space=None, *, noise_mode="const", dtype="float32") -> jax.Array:
    """One image per segment code: [n, H, W, 3]; with the latents' own noise when they hold one."""
    codes = latents["codes"] if isinstance(latents, dict) and "codes" in latents else latents
    space = check_space(generator, codes, space)
    codes = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), codes)
    return _synthesize(drawer(generator, latents), codes, space, noise_mode, dtype)


def _synthesize(generator, codes, space, noise_mode, dtype):
    key = (space, noise_mode, str(dtype))
    if key not in _SYNTH_CACHE:  # one jitted function per setting; jax caches its compilations by shape
        _SYNTH_CACHE[key] = jax.jit(lambda g, c: g.synthesize(c, space, noise_mode=noise_mode,
                                                                dtype=dtype))
    return _SYNTH_CACHE[key](generator, codes)


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


def edit_result(result, generator, edits, *, blend="mask", mask_source=None):
    """Edit the latents of an `InversionResult` and recomposite; returns a new InversionResult (same
    target, static mask, settings and tuning plus an "edits" record) that can be saved and edited again.
    `generator` is the one the result was inverted with; a tuned result applies its own weight delta.

    blend: 'mask' composites like the projection did (eq. 3 with the result's static mask, if any);
    'none' gives the raw blend of the segment images; 'poisson' blends the generated region into the
    target in the gradient domain (needs a result with a static mask, e.g. from a local edit).
    mask_source: recompute the masks from the (edited) latents, e.g. the segment generator when its code
    X^S moved with the edit; otherwise the result's masks are kept."""
    if blend not in BLENDS:
        raise ConfigError(f"blend must be one of {BLENDS}, got {blend!r}")
    edits_list = edit_list(edits)
    if any(callable(e) and not isinstance(e, (DirectionEdit, StyleEdit)) for e in edits_list):
        raise ConfigError("edit_result takes DirectionEdit / StyleEdit items")
    if any(isinstance(e, DirectionEdit) and e.segment_code for e in edits_list) and mask_source is None:
        raise ConfigError("moving the segment code changes the masks only with the segment generator "
                          "that made them: pass mask_source")
    settings = dict(result.settings)
    noise_mode, dtype = settings.get("noise_mode", "const"), settings.get("dtype", "float32")
    generator = tuned_generator(generator, result.tuning)  # a tuned result draws with its own weights
    latents = apply_edits(result.latents, generator, edits_list)
    n = count_segments(latents["codes"])
    masks = resolve_masks(generator, latents, result.masks, mask_source, n)
    imgs = np.asarray(render_segments(generator, latents, noise_mode=noise_mode, dtype=dtype))
    raw = np.asarray(composite(jnp.asarray(imgs), masks))  # the same blend as render() and the inversion
    target = np.asarray(result.target, np.float32)
    if result.static_mask is None:
        if blend == "poisson":
            raise ConfigError("poisson blending needs a region, and this result was projected over the "
                              "whole image (no static mask): use a local edit (region) or blend='mask'")
        out = raw
    else:
        out = blend_region(raw, target, 1.0 - np.asarray(result.static_mask, np.float32), blend)
    settings["space"] = latent_space(generator, latents["codes"])
    settings["edits"] = list(settings.get("edits", [])) + [describe(e, generator) for e in edits_list]
    return InversionResult(
        target=target, composite=out.astype(np.float32), segment_images=imgs, masks=np.asarray(masks),
        latents=jax.tree_util.tree_map(np.asarray, latents), loss_history=result.loss_history,
        final_losses=dict(result.final_losses), settings=settings, static_mask=result.static_mask,
        seconds=result.seconds, tuning=result.tuning)
