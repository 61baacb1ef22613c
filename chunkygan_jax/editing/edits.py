"""Latent edits as data (`DirectionEdit`, `StyleEdit`) and as pure functions of the latent pytree that
work under jit (strengths may be traced; layer ranges, channels and segment choices are static)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError
from .directions import as_direction
from .spaces import (as_number, count_segments, direction_codes, direction_rows, direction_shape, resolve_style_layer,
                     segment_indices, to_styles)

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
