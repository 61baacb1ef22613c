"""Region edits (paper section 5): local edits with a static mask, sequential layered edits, and hole
filling. Region projections with the same settings reuse one compiled projector (interactive editing)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .. import io
from ..demo import resolve_generator
from ..errors import ConfigError, ImageError
from ..inversion import InversionSettings, Inverter, Monitor, as_settings, invert_batch
from ..lpips import parse_resolution
from ..masks.options import MaskSettings, make_mask_source
from ..results import InversionResult
from .edits import DirectionEdit, StyleEdit, apply_edits, describe, edit_list
from .render import BLENDS, blend_region, render_segments
from .spaces import count_segments, latent_space, segment_indices

# ---------------------------------------------------------------------------------------- region edits
@dataclasses.dataclass
class RegionEdit:
    """The outcome of `local_edit` or `fill_holes`.

    image: the new composite [H, W, 3] in [-1, 1] (the next edit's input); generated: G(X') of the edited region code
    over the whole image; region: [H, W] in [0, 1]; projection: the single-segment InversionResult of the
    region before editing; result: an InversionResult with the edited latents, target = the input,
    static mask = 1 - region, composite = image (save it to edit again later)."""

    image: np.ndarray
    generated: np.ndarray
    region: np.ndarray
    projection: Any
    result: Any


# Compiled single-segment projectors, reused across region edits with the same generator and settings
# (recompiling per edit would make interactive editing slow). The newest few are kept; each holds its
# generator, so an id() key cannot be reused while the entry lives.
_PROJECTORS: dict = {}
REGION_STEPS = 100  # a local edit's projection
FILL_STEPS = 50  # hole filling's refinement
_MAX_PROJECTORS = 4


def _projector(generator, settings):
    key = (id(generator), settings)
    hit = _PROJECTORS.pop(key, None)
    if hit is None:
        while len(_PROJECTORS) >= _MAX_PROJECTORS:
            del _PROJECTORS[next(iter(_PROJECTORS))]
        source = make_mask_source(None, 1, generator.resolution, seed=settings.seed)
        hit = (generator, Inverter(generator, settings, source, static_mask=True))
    _PROJECTORS[key] = hit  # most recently used last
    return hit[1]


def _region(region, resolution) -> np.ndarray:
    if isinstance(region, (str, Path)):
        return io.load_mask(region, resolution)
    r = np.asarray(region, np.float32)
    if r.shape != (resolution, resolution):
        raise ImageError(f"region must be [{resolution}, {resolution}], got {r.shape}")
    if not np.all(np.isfinite(r)) or r.min() < 0 or r.max() > 1:
        raise ImageError("region values must lie in [0, 1]")
    return r


def region_settings(generator, settings=None, steps=None) -> InversionSettings:
    """The settings of a region projection: `settings` (InversionSettings or a dict; None: the defaults)
    with `steps`, for one segment (lambda_reg does not apply to one segment), validated for `generator`."""
    return as_settings(settings, steps=steps).replace(segments=1, lambda_reg=0.0).validate(generator)


def recorded_projection(recorded: dict) -> dict:
    """The InversionSettings fields a region projection takes from a result's record (settings.json): its
    space, lr, LPIPS, seed, noise mode and dtype, so that a local edit of a result projects as it was made."""
    fields = {k: recorded[k] for k in ("space", "lr", "lpips_net", "lpips_resolution", "seed", "noise_mode",
                                       "dtype") if recorded.get(k) is not None}
    if "lpips_resolution" in fields:  # JSON keeps a pair as a list
        fields["lpips_resolution"] = parse_resolution(fields["lpips_resolution"])
    return fields


def _project_region(image, generator, region, settings, initial_codes, callback):
    target = io.as_target_image(image, generator.resolution)
    region = _region(region, generator.resolution)
    if not np.any(region > 0):
        raise ImageError("the region is empty: mark the pixels to edit with values > 0")
    init = None
    if initial_codes is not None:
        init = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32)[None, None], initial_codes)
    proj = invert_batch([target], generator, settings=settings, masks=MaskSettings(static=[1.0 - region]),
                        monitor=Monitor(callback=callback, every=0 if callback is None else 25),
                        inverter=_projector(generator, settings), initial_codes=init)[0]
    return generator, target, region, proj


def _finish(generator, target, region, proj, latents, blend, record):
    if blend not in BLENDS:
        raise ConfigError(f"blend must be one of {BLENDS}, got {blend!r}")
    settings = proj.settings
    generated = np.asarray(render_segments(generator, latents, noise_mode=settings["noise_mode"],
                                           dtype=settings["dtype"]))
    # clipped: the image is the next edit's input, and generators overshoot [-1, 1] a little
    image = np.clip(blend_region(generated[0], target, region, blend), -1.0, 1.0)
    out_settings = dict(settings, space=latent_space(generator, latents["codes"]))
    out_settings["edits"] = [record]
    result = InversionResult(
        target=target, composite=image, segment_images=generated, masks=np.ones_like(proj.masks),
        latents=jax.tree_util.tree_map(np.asarray, latents), loss_history=proj.loss_history,
        final_losses=dict(proj.final_losses), settings=out_settings, static_mask=(1.0 - region).astype(np.float32),
        seconds=proj.seconds)
    return RegionEdit(image=image, generated=generated[0], region=region, projection=proj, result=result)


def local_edit(image, generator, region, edit=None, *, steps=REGION_STEPS, settings=None, blend="mask",
               initial_codes=None, callback=None) -> RegionEdit:
    """A local edit (paper section 5, eq. 3): project one segment into `region` with the outside as
    static mask (static_mask = 1 - region), edit its code, and composite
        image' = region * G(X') + (1 - region) * image          (blend='mask'; exact outside the region)
    blend='poisson' instead solves for the region (region > 0.5) in the gradient domain with the input
    as boundary; blend='none' returns G(X') itself.

    image: path or [H, W, 3] array in [-1, 1] (for sequential layered edits, the previous `.image`).
    generator: a generator object (StyleGAN2, the demo DCGAN, ...) or a checkpoint path. region: [H, W]
    in [0, 1] or a mask file. edit: None, a DirectionEdit / StyleEdit or a list of them, or a function
    latents -> latents. settings: the region projection's InversionSettings (or a dict of its fields:
    space (default: the generator's), lr, lpips_*, seed, dtype, ...; one segment, and lambda_reg does not
    apply to one); `steps` (default 100) replaces settings.steps. initial_codes: start the projection from this
    code (one segment, no segment axis) instead of the generator's start. `reedit` edits the same
    projection again without projecting (other strengths, a sweep)."""
    if blend not in BLENDS:
        raise ConfigError(f"blend must be one of {BLENDS}, got {blend!r}")
    generator = resolve_generator(generator)
    settings = region_settings(generator, settings, steps)
    specs = _check_edits(generator, edit, settings.space)
    generator, target, region, proj = _project_region(image, generator, region, settings, initial_codes, callback)
    return _edit_projection(generator, target, region, proj, edit_list(edit), specs, blend)


def reedit(previous: RegionEdit, generator, edit=None, *, blend="mask") -> RegionEdit:
    """The region projection of an earlier `local_edit`, edited anew (no new projection): the same
    input, region and projected code, other edits. A strength sweep projects once and calls this per
    strength."""
    if blend not in BLENDS:
        raise ConfigError(f"blend must be one of {BLENDS}, got {blend!r}")
    generator = resolve_generator(generator)
    proj = previous.projection
    specs = _check_edits(generator, edit, latent_space(generator, proj.latents["codes"]))
    return _edit_projection(generator, proj.target, previous.region, proj, edit_list(edit), specs, blend)


def _check_edits(generator, edit, space):
    """The DirectionEdit / StyleEdit items of `edit`, tried on a starting code so that bad directions,
    layers or channels fail before the (slow) projection."""
    edits = edit_list(edit)
    specs = [e for e in edits if isinstance(e, (DirectionEdit, StyleEdit))]
    if len(specs) not in (0, len(edits)):
        raise ConfigError("edit must be a function, or DirectionEdit / StyleEdit items, not both")
    if specs:
        apply_edits({"codes": generator.initial_codes(space, 1)}, generator, specs)
    return specs


def _edit_projection(generator, target, region, proj, edits, specs, blend):
    latents = proj.latents
    for e in edits:
        latents = e(latents) if not isinstance(e, (DirectionEdit, StyleEdit)) else latents
    if specs:
        latents = apply_edits(latents, generator, specs)
    record = {"kind": "local", "blend": blend, "edits": [describe(e, generator) for e in edits]}
    return _finish(generator, target, region, proj, latents, blend, record)


def _single_code(edited, segment: int):
    """The code of one segment (segment axis removed) from a RegionEdit, a result, latents or codes."""
    if isinstance(edited, RegionEdit):
        edited = edited.result
    latents = getattr(edited, "latents", edited)
    codes = latents["codes"] if isinstance(latents, dict) and "codes" in latents else latents
    (i,) = segment_indices(segment, count_segments(codes))
    return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32)[i], codes)


def fill_holes(edited, generator, target_image, correction_mask, *, steps=FILL_STEPS, segment=0, settings=None,
               blend="mask", callback=None) -> RegionEdit:
    """Hole filling (paper Fig. 10): refine an edited code X_1 into X_2 on a correction mask S_2.

    A single-segment projection that starts from the edited code (initial_codes), with `target_image`
    (normally the edited composite, so that the content matches the edit) fixed outside the correction
    region (static mask = 1 - correction_mask); the generated content of X_2 then fills the region:
        image = correction * G(X_2) + (1 - correction) * target_image          (blend='mask')
    edited: a RegionEdit, an InversionResult, latents or codes (with a segment axis; `segment` picks one).
    settings, steps: as in `local_edit` (steps default 50; the space is the edited code's).
    With steps=1 the code is returned unchanged (NVIDIA's schedule has lr = 0 at step 0)."""
    if blend not in BLENDS:
        raise ConfigError(f"blend must be one of {BLENDS}, got {blend!r}")
    generator = resolve_generator(generator)
    code = _single_code(edited, segment)
    space = latent_space(generator, jax.tree_util.tree_map(lambda x: x[None], code))
    settings = region_settings(generator, as_settings(settings).replace(space=space), steps)
    generator, target, region, proj = _project_region(target_image, generator, correction_mask, settings, code,
                                                      callback)
    return _finish(generator, target, region, proj, proj.latents, blend, {"kind": "fill_holes", "blend": blend})
