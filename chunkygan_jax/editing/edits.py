"""Latent edits as data (`DirectionEdit`, `StyleEdit`), as pure functions of the latent pytree that
work under jit (strengths may be traced; layer ranges, channels and segment choices are static), and
applied to a whole result (`edit_result`: the edited codes rendered and recomposited by render.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError
from ..masks.composite import composite
from ..results import InversionResult
from .directions import as_direction
from .render import BLENDS, blend_region, render_segments, resolve_masks, result_drawer
from .spaces import (as_number, count_segments, direction_codes, direction_rows, direction_shape, latent_space,
                     resolve_style_layer, segment_indices, to_styles)

# ---------------------------------------------------------------------------------------- edit specs
@dataclasses.dataclass(frozen=True)
class DirectionEdit:
    """codes[segments, lo:hi] += strength * direction[lo:hi]. `direction`: 'pca:K', .npy path or array
    (see `resolve_direction`); `layers`: see `layer_range` (W+ only); `segment_code`: move the segment
    generator's code X^S too."""

    direction: Any
    strength: float = 1.0
    layers: Any = None
    segments: Any = "all"
    segment_code: bool = False
    name: str | None = None  # how the direction was named (e.g. 'pca:0'), for the record


@dataclasses.dataclass(frozen=True)
class StyleEdit:
    """s[layer][segments, channel] += strength (layer: name or index in the generator's style order)."""

    layer: Any
    channel: int
    strength: float
    segments: Any = "all"


def parse_s_edit(text: str, segments="all") -> StyleEdit:
    """'layer,channel,strength' (layer a name like b8.conv0 or an index) -> StyleEdit."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3:
        raise ConfigError(f"an S edit is 'layer,channel,strength' (e.g. 'b8.conv0,12,3' or '6,259,2'), "
                          f"got {text!r}")
    try:
        channel = int(parts[1])
    except ValueError:
        raise ConfigError(f"S edit {text!r}: channel must be an integer") from None
    return StyleEdit(parts[0], channel, as_number(parts[2], f"S edit {text!r}: strength"), segments)


# ---------------------------------------------------------------------------------------- latent edits
def apply_direction(latents: dict, generator, direction, strength=1.0, layers=None, segments="all", *,
                    segment_code: bool = False) -> dict:
    """A direction edit; returns new latents (a StyleGAN2's W codes come back as W+).

    direction: an array of the generator's direction shape, [num_ws, w_dim] or [z_dim] (see
    `resolve_direction` for files, 'pca:K' and other shapes). strength: a number (may be traced under
    jit). layers: the W+ rows [lo, hi) it touches (StyleGAN2 only). segments: 'all', an index or indices.
    segment_code: also move latents['segment_code'] (X^S, one code of the direction shape) so the masks
    of a segment generator follow the edit."""
    d = as_direction(direction, generator)
    if not isinstance(strength, jax.Array):
        strength = as_number(strength, "direction strength")
    rows = direction_rows(generator, layers)
    codes = direction_codes(generator, latents["codes"])
    idx = np.asarray(segment_indices(segments, codes.shape[0]))
    delta = strength * d[rows]
    out = dict(latents)
    out["codes"] = codes.at[(idx,) + rows].add(delta)  # every other element stays bit-for-bit
    if segment_code:
        if "segment_code" not in latents:
            raise ConfigError("these latents have no segment code X^S (the masks did not come from a "
                              "segment generator), so there is nothing for the masks to follow")
        xs = jnp.asarray(latents["segment_code"], jnp.float32)
        if xs.shape != direction_shape(generator):
            raise ConfigError(f"segment code must be {list(direction_shape(generator))}, got {list(xs.shape)}")
        out["segment_code"] = xs.at[rows].add(delta)
    return out


def apply_style_edits(latents: dict, generator, edits: Sequence[StyleEdit]) -> dict:
    """StyleSpace edits; returns new latents whose codes are S codes {layer: [n, channels]}."""
    styles = to_styles(generator, latents["codes"])
    n = count_segments(styles)
    dims = generator.config.style_dims()
    for e in edits:
        name = resolve_style_layer(generator, e.layer)
        ch = e.channel
        if isinstance(ch, bool) or not isinstance(ch, (int, np.integer)) or not 0 <= ch < dims[name]:
            raise ConfigError(f"unknown channel {ch!r} of S layer {name}: it has {dims[name]} channels "
                              f"(0..{dims[name] - 1})")
        idx = np.asarray(segment_indices(e.segments, n))
        strength = e.strength if isinstance(e.strength, jax.Array) else as_number(e.strength, "S edit strength")
        styles[name] = styles[name].at[idx, int(ch)].add(strength)
    out = dict(latents)
    out["codes"] = styles
    return out


def apply_edits(latents: dict, generator, edits) -> dict:
    """Apply DirectionEdit / StyleEdit items: all direction edits first, then the style edits (the
    authors' tool's order; W edits add up). An empty list returns the latents unchanged."""
    edits = [edits] if isinstance(edits, (DirectionEdit, StyleEdit)) else list(edits or ())
    bad = [e for e in edits if not isinstance(e, (DirectionEdit, StyleEdit))]
    if bad:
        raise ConfigError(f"edits must be DirectionEdit or StyleEdit, got {type(bad[0]).__name__}")
    out = latents
    for e in (e for e in edits if isinstance(e, DirectionEdit)):
        out = apply_direction(out, generator, e.direction, e.strength, e.layers, e.segments,
                              segment_code=e.segment_code)
    styles = [e for e in edits if isinstance(e, StyleEdit)]
    return apply_style_edits(out, generator, styles) if styles else out


def edit_list(edit) -> list:
    if edit is None:
        return []
    if isinstance(edit, (DirectionEdit, StyleEdit)) or callable(edit):
        return [edit]
    return list(edit)


def describe(e, generator) -> dict:
    """A JSON record of one edit, for the result's settings."""
    if isinstance(e, DirectionEdit):
        d = e.direction
        rows = direction_rows(generator, e.layers)
        name = e.name or (str(d) if isinstance(d, (str, Path)) else "array")
        return {"kind": "direction", "direction": name,
                "strength": float(e.strength), "layers": [rows[0].start, rows[0].stop] if rows else None,
                "segments": _segments_record(e.segments), "segment_code": bool(e.segment_code)}
    if isinstance(e, StyleEdit):
        return {"kind": "style", "layer": str(e.layer), "channel": int(e.channel),
                "strength": float(e.strength), "segments": _segments_record(e.segments)}
    return {"kind": "function", "name": getattr(e, "__name__", type(e).__name__)}


def _segments_record(segments):
    if segments is None or isinstance(segments, str):
        return segments or "all"
    return [int(i) for i in np.atleast_1d(segments)]


# ---------------------------------------------------------------------------------------- a whole result
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
    generator = result_drawer(generator, result)  # its own weights if tuned, its own noise if optimised
    latents = apply_edits(result.latents, generator, edits_list)
    n = count_segments(latents["codes"])
    masks = resolve_masks(generator, latents, result.masks, mask_source, n)
    imgs = np.asarray(render_segments(generator, latents["codes"], noise_mode=noise_mode, dtype=dtype))
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
