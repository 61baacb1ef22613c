"""Editing projected images: W-space directions, StyleSpace channels, local layered edits, hole filling.

Latent edits are pure functions of the latent pytree ({"codes": ..., maybe "segment_code"}) and work under
jit (strengths may be traced; layer ranges, channels and segment choices are static):

  - `apply_direction`: codes[s, lo:hi] += strength * d[lo:hi] for the chosen segments s, as the authors'
    tool does: W codes [n, 1, w_dim] are first broadcast to W+ [n, num_ws, w_dim]. Optionally the
    segment generator's code X^S [num_ws, w_dim] moves too, so that the masks follow geometric edits.
  - `apply_style_edits`: s[layer][s, channel] += strength, a raw additive offset in StyleSpace (the
    generator's style order, ToRGB layers included); W/W+ codes are converted to S first.
  - `apply_edits`: a list of `DirectionEdit` / `StyleEdit`, directions first, then style edits (the tool's
    order; once codes are in S there is no way back to W).
Rendering: `render` recomposes an image from (edited) latents and masks (paper eq. 1 and 3);
`edit_result` edits a saved or fresh `InversionResult` and returns a new one (so edits can be chained).

Region edits (paper section 5):
  - `local_edit`: project ONE segment into a user region (static mask = 1 - region, eq. 3), edit its
    code, and composite  region * G(X') + (1 - region) * input. The output becomes the input of the next
    edit (sequential layered edits, Fig. 9).
  - `fill_holes`: refine an edited code on a correction mask (Fig. 10): a single-segment projection
    starting from the edited code, with the target image fixed outside the correction region, whose
    generated content then fills that region.
Region projections with the same settings reuse one compiled projector (interactive editing).

The latent space is read from the codes themselves: a dict of layers is S, [n, 1, w_dim] is W and
[n, num_ws, w_dim] is W+.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import io, masks as masks_lib
from .blending import poisson_blend
from .errors import ConfigError, ImageError
from .inversion import (SPACE_ALIASES, InversionResult, InversionSettings, Inverter, _resolve_generator, composite,
                        invert_batch)

BLENDS = ("mask", "poisson", "none")

__all__ = ["BLENDS", "DirectionEdit", "StyleEdit", "RegionEdit", "apply_direction", "apply_edits",
           "apply_style_edits", "current_image", "edit_result", "fill_holes", "latent_space",
           "layer_range", "load_direction", "local_edit", "parse_s_edit", "parse_segments", "render",
           "render_segments", "resolve_style_layer", "segment_indices", "to_styles", "to_wplus"]


# ---------------------------------------------------------------------------------------- latent spaces
def latent_space(generator, codes) -> str:
    """'w', 'w+' or 's', read from the structure of `codes` (segment axis first); ConfigError if the
    codes do not fit the generator."""
    if not all(hasattr(generator, a) for a in ("num_ws", "w_dim", "styles_from_ws")):
        raise ConfigError(f"editing needs a StyleGAN generator (W, W+ and S spaces); this "
                          f"{type(generator).__name__} has latent spaces {getattr(generator, 'latent_spaces', ())}")
    if isinstance(codes, dict):
        names = generator.config.layer_names()
        if set(codes) != set(names):
            missing, extra = sorted(set(names) - set(codes)), sorted(set(codes) - set(names))
            raise ConfigError(f"S-space codes do not fit this generator (missing layers {missing[:4]}, "
                              f"unknown layers {extra[:4]})")
        dims = generator.config.style_dims()
        for name, v in codes.items():
            if jnp.ndim(v) != 2 or jnp.shape(v)[1] != dims[name]:
                raise ConfigError(f"S code {name} must be [n, {dims[name]}], got {tuple(jnp.shape(v))}")
        return "s"
    shape = tuple(jnp.shape(codes))
    if len(shape) == 3 and shape[2] == generator.w_dim and shape[1] in (1, generator.num_ws):
        return "w" if shape[1] == 1 else "w+"
    raise ConfigError(f"codes must be W [n, 1, {generator.w_dim}], W+ [n, {generator.num_ws}, "
                      f"{generator.w_dim}] or an S-space dict; got shape {shape}")


def _check_space(generator, codes, space):
    found = latent_space(generator, codes)
    if space is not None:
        if SPACE_ALIASES.get(space, space) != found:
            raise ConfigError(f"space {space!r} does not match the codes, which are {found!r}")
    return found


def _count(codes) -> int:
    return int(jnp.shape(jax.tree_util.tree_leaves(codes)[0])[0])


def to_wplus(generator, codes):
    """W [n, 1, w_dim] or W+ codes -> W+ [n, num_ws, w_dim]."""
    space = latent_space(generator, codes)
    if space == "s":
        raise ConfigError("these codes are in S space; W directions apply to W and W+ codes only "
                          "(apply style edits instead, or project in w / w+)")
    return generator.to_ws(jnp.asarray(codes, jnp.float32), space)


def to_styles(generator, codes) -> dict:
    """W, W+ or S codes -> S codes {layer: [n, channels]} (the generator's affine outputs)."""
    if latent_space(generator, codes) == "s":
        return {k: jnp.asarray(v, jnp.float32) for k, v in codes.items()}
    return generator.styles_from_ws(to_wplus(generator, codes))


# ---------------------------------------------------------------------------------------- parsing
def segment_indices(segments, n: int) -> tuple[int, ...]:
    """'all' / None -> every segment; an int or a sequence of ints -> those, checked against n."""
    if segments is None or (isinstance(segments, str) and segments.strip().lower() == "all"):
        return tuple(range(n))
    if isinstance(segments, str):
        return segment_indices(parse_segments(segments), n)
    if isinstance(segments, (int, np.integer)) and not isinstance(segments, bool):
        segments = (int(segments),)
    try:
        idx = tuple(segments)
    except TypeError:
        raise ConfigError(f"segments must be 'all', an index or a list of indices, got {segments!r}") from None
    if not idx:
        raise ConfigError("no segments chosen")
    for i in idx:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise ConfigError(f"segment indices must be integers, got {i!r}")
        if not 0 <= i < n:
            raise ConfigError(f"unknown segment {i}: this result has {n} segment(s), indices 0..{n - 1}")
    if len(set(idx)) != len(idx):
        raise ConfigError(f"segment listed twice in {list(idx)}")
    return tuple(int(i) for i in idx)


def parse_segments(text: str):
    """'all' or '1,3' -> 'all' or (1, 3)."""
    text = text.strip()
    if text.lower() == "all":
        return "all"
    try:
        return tuple(int(t) for t in text.split(","))
    except ValueError:
        raise ConfigError(f"segments must be 'all' or comma-separated indices like '1,3', got {text!r}") from None


def layer_range(layers, num_ws: int) -> tuple[int, int]:
    """A ws row range [lo, hi) with python slice semantics, 0 <= lo < hi <= num_ws.
    Accepts None / 'all' (every row), 'lo:hi' (either end may be left out), (lo, hi) or a slice."""
    if layers is None or (isinstance(layers, str) and layers.strip().lower() == "all"):
        return 0, num_ws
    if isinstance(layers, str):
        parts = layers.split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            lo = int(parts[0]) if parts[0].strip() else 0
            hi = int(parts[1]) if parts[1].strip() else num_ws
        except ValueError:
            raise ConfigError(f"layers must look like 'lo:hi' (e.g. '0:8'), got {layers!r}") from None
    elif isinstance(layers, slice):
        if layers.step not in (None, 1):
            raise ConfigError(f"layer ranges have no step, got {layers!r}")
        lo = 0 if layers.start is None else layers.start
        hi = num_ws if layers.stop is None else layers.stop
    else:
        try:
            lo, hi = layers
        except (TypeError, ValueError):
            raise ConfigError(f"layers must be 'lo:hi', (lo, hi) or a slice, got {layers!r}") from None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (lo, hi)):
        raise ConfigError(f"layer range bounds must be integers, got {lo!r}:{hi!r}")
    if not 0 <= lo < hi <= num_ws:
        raise ConfigError(f"layer range {lo}:{hi} is out of bounds: need 0 <= lo < hi <= num_ws = {num_ws}")
    return int(lo), int(hi)


def load_direction(direction, generator) -> np.ndarray:
    """A direction (.npy path or array) of shape (num_ws, w_dim), (1, w_dim) or (w_dim,), float32 or
    float64 -> float32 [num_ws, w_dim] (one row is repeated to every layer, as the authors' tool does)."""
    name = "direction"
    if isinstance(direction, (str, Path)):
        path = Path(direction)
        name = str(path)
        if not path.is_file():
            raise ConfigError(f"direction file not found: {path}")
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise ConfigError(f"{path}: not a numpy .npy direction file ({e})") from None
        if not isinstance(arr, np.ndarray):  # an .npz archive
            arr.close()
            raise ConfigError(f"{path}: is an .npz archive; a direction is a single .npy array")
    else:
        arr = np.asarray(direction)
    if arr.dtype not in (np.float32, np.float64):
        raise ConfigError(f"{name}: direction dtype must be float32 or float64, got {arr.dtype}")
    num_ws, w_dim = generator.num_ws, generator.w_dim
    if arr.shape in ((w_dim,), (1, w_dim)):
        arr = np.broadcast_to(arr.reshape(1, w_dim), (num_ws, w_dim))
    elif arr.shape != (num_ws, w_dim):
        raise ConfigError(f"{name}: direction has shape {arr.shape}; this generator needs "
                          f"({num_ws}, {w_dim}), (1, {w_dim}) or ({w_dim},)")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name}: direction contains NaN or infinite values")
    return np.array(arr, np.float32)


def resolve_style_layer(generator, layer) -> str:
    """A StyleSpace layer given by name ('b8.conv0') or by index into `config.layer_names()` (the
    generator's style order, ToRGB layers included: 26 layers at 1024 px) -> its name."""
    names = generator.config.layer_names()
    if isinstance(layer, str) and layer.strip().lstrip("-").isdigit():
        layer = int(layer)
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        if not 0 <= layer < len(names):
            raise ConfigError(f"unknown S layer index {layer}: this generator has {len(names)} style layers "
                              f"(0..{len(names) - 1})")
        return names[int(layer)]
    if isinstance(layer, str) and layer.strip() in names:
        return layer.strip()
    raise ConfigError(f"unknown S layer {layer!r}; layers are {', '.join(names)} (or their indices)")


def _number(value, what) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {value!r}") from None
    if not np.isfinite(v):
        raise ConfigError(f"{what} must be finite, got {value!r}")
    return v


# ---------------------------------------------------------------------------------------- edit specs
@dataclasses.dataclass(frozen=True)
class DirectionEdit:
    """codes[segments, lo:hi] += strength * direction[lo:hi]. `direction`: .npy path or array;
    `layers`: see `layer_range`; `segment_code`: move the segment generator's code X^S too."""

    direction: Any
    strength: float = 1.0
    layers: Any = None
    segments: Any = "all"
    segment_code: bool = False


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
    return StyleEdit(parts[0], channel, _number(parts[2], f"S edit {text!r}: strength"), segments)


# ---------------------------------------------------------------------------------------- latent edits
def _as_direction(direction, generator):
    """load_direction for files and host arrays; device (possibly traced) arrays are only reshaped."""
    if not isinstance(direction, jax.Array):
        return jnp.asarray(load_direction(direction, generator))
    num_ws, w_dim = generator.num_ws, generator.w_dim
    if not jnp.issubdtype(direction.dtype, jnp.floating):
        raise ConfigError(f"direction dtype must be floating point, got {direction.dtype}")
    if direction.shape in ((w_dim,), (1, w_dim)):
        direction = jnp.broadcast_to(direction.reshape(1, w_dim), (num_ws, w_dim))
    elif direction.shape != (num_ws, w_dim):
        raise ConfigError(f"direction has shape {direction.shape}; this generator needs "
                          f"({num_ws}, {w_dim}), (1, {w_dim}) or ({w_dim},)")
    return direction.astype(jnp.float32)


def apply_direction(latents: dict, generator, direction, strength=1.0, layers=None, segments="all", *,
                    segment_code: bool = False) -> dict:
    """A W-space direction edit; returns new latents (W codes come back as W+).

    direction: [num_ws, w_dim] array (see `load_direction` for files and other shapes).
    strength: a number (may be traced under jit). layers: the ws rows [lo, hi) it touches.
    segments: 'all', an index or indices. segment_code: also move latents['segment_code'] (X^S,
    [num_ws, w_dim]) so the masks of a segment generator follow the edit."""
    d = _as_direction(direction, generator)
    if not isinstance(strength, jax.Array):
        strength = _number(strength, "direction strength")
    lo, hi = layer_range(layers, generator.num_ws)
    codes = to_wplus(generator, latents["codes"])
    idx = np.asarray(segment_indices(segments, codes.shape[0]))
    delta = strength * d[lo:hi]
    out = dict(latents)
    out["codes"] = codes.at[idx, lo:hi].add(delta)  # every other element stays bit-for-bit
    if segment_code:
        if "segment_code" not in latents:
            raise ConfigError("these latents have no segment code X^S (the masks did not come from a "
                              "segment generator), so there is nothing for the masks to follow")
        xs = jnp.asarray(latents["segment_code"], jnp.float32)
        if xs.shape != (generator.num_ws, generator.w_dim):
            raise ConfigError(f"segment code must be [{generator.num_ws}, {generator.w_dim}], got {xs.shape}")
        out["segment_code"] = xs.at[lo:hi].add(delta)
    return out


def apply_style_edits(latents: dict, generator, edits: Sequence[StyleEdit]) -> dict:
    """StyleSpace edits; returns new latents whose codes are S codes {layer: [n, channels]}."""
    styles = to_styles(generator, latents["codes"])
    n = _count(styles)
    dims = generator.config.style_dims()
    for e in edits:
        name = resolve_style_layer(generator, e.layer)
        ch = e.channel
        if isinstance(ch, bool) or not isinstance(ch, (int, np.integer)) or not 0 <= ch < dims[name]:
            raise ConfigError(f"unknown channel {ch!r} of S layer {name}: it has {dims[name]} channels "
                              f"(0..{dims[name] - 1})")
        idx = np.asarray(segment_indices(e.segments, n))
        strength = e.strength if isinstance(e.strength, jax.Array) else _number(e.strength, "S edit strength")
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


# ---------------------------------------------------------------------------------------- rendering
_SYNTH_CACHE: dict = {}


def render_segments(generator, latents, space=None, *, noise_mode="const", dtype="float32") -> jax.Array:
    """One image per segment code: [n, H, W, 3]."""
    codes = latents["codes"] if isinstance(latents, dict) and "codes" in latents else latents
    space = _check_space(generator, codes, space)
    codes = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), codes)
    return _synthesize(generator, codes, space, noise_mode, dtype)


def _synthesize(generator, codes, space, noise_mode, dtype):
    key = (space, noise_mode, str(dtype))
    if key not in _SYNTH_CACHE:  # one jitted function per setting; jax caches its compilations by shape
        _SYNTH_CACHE[key] = jax.jit(lambda g, c: g.synthesize(c, space, noise_mode=noise_mode,
                                                                dtype=jnp.dtype(dtype)))
    return _SYNTH_CACHE[key](generator, codes)


def _masks_from_source(mask_source, latents):
    params = {k: v for k, v in latents.items() if k != "codes"}
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
    masks = _resolve_masks(generator, latents, masks, mask_source, _count(codes))
    if (target is None) != (static_mask is None):
        raise ConfigError("a static mask needs the target image, and the target is used only with one")
    out = composite(imgs, masks, None if target is None else jnp.asarray(target, jnp.float32),
                    None if static_mask is None else jnp.asarray(static_mask, jnp.float32))
    return np.asarray(out)


def _resolve_masks(generator, latents, masks, mask_source, n):
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


def _blend(generated, target, region, blend):
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
    target, static mask and settings plus an "edits" record) that can be saved and edited again.

    blend: 'mask' composites like the projection did (eq. 3 with the result's static mask, if any);
    'none' gives the raw blend of the segment images; 'poisson' blends the generated region into the
    target in the gradient domain (needs a result with a static mask, e.g. from a local edit).
    mask_source: recompute the masks from the (edited) latents, e.g. the segment generator when its code
    X^S moved with the edit; otherwise the result's masks are kept."""
    if blend not in BLENDS:
        raise ConfigError(f"blend must be one of {BLENDS}, got {blend!r}")
    edits_list = _edit_list(edits)
    if any(callable(e) and not isinstance(e, (DirectionEdit, StyleEdit)) for e in edits_list):
        raise ConfigError("edit_result takes DirectionEdit / StyleEdit items")
    if any(isinstance(e, DirectionEdit) and e.segment_code for e in edits_list) and mask_source is None:
        raise ConfigError("moving the segment code changes the masks only with the segment generator "
                          "that made them: pass mask_source")
    settings = dict(result.settings)
    noise_mode, dtype = settings.get("noise_mode", "const"), settings.get("dtype", "float32")
    latents = apply_edits(result.latents, generator, edits_list)
    n = _count(latents["codes"])
    masks = _resolve_masks(generator, latents, result.masks, mask_source, n)
    imgs = np.asarray(render_segments(generator, latents, noise_mode=noise_mode, dtype=dtype))
    raw = np.asarray(composite(jnp.asarray(imgs), masks))  # the same blend as render() and the inversion
    target = np.asarray(result.target, np.float32)
    if result.static_mask is None:
        if blend == "poisson":
            raise ConfigError("poisson blending needs a region, and this result was projected over the "
                              "whole image (no static mask): use a local edit (region) or blend='mask'")
        out = raw
    else:
        out = _blend(raw, target, 1.0 - np.asarray(result.static_mask, np.float32), blend)
    settings["space"] = latent_space(generator, latents["codes"])
    settings["edits"] = list(settings.get("edits", [])) + [_describe(e, generator.num_ws) for e in edits_list]
    return InversionResult(
        target=target, composite=out.astype(np.float32), segment_images=imgs, masks=np.asarray(masks),
        latents=jax.tree_util.tree_map(np.asarray, latents), loss_history=result.loss_history,
        final_losses=dict(result.final_losses), settings=settings, static_mask=result.static_mask,
        seconds=result.seconds)


def _edit_list(edit) -> list:
    if edit is None:
        return []
    if isinstance(edit, (DirectionEdit, StyleEdit)) or callable(edit):
        return [edit]
    return list(edit)


def _describe(e, num_ws: int) -> dict:
    """A JSON record of one edit, for the result's settings."""
    if isinstance(e, DirectionEdit):
        d = e.direction
        return {"kind": "direction", "direction": str(d) if isinstance(d, (str, Path)) else "array",
                "strength": float(e.strength), "layers": list(layer_range(e.layers, num_ws)),
                "segments": _segments_record(e.segments), "segment_code": bool(e.segment_code)}
    if isinstance(e, StyleEdit):
        return {"kind": "style", "layer": str(e.layer), "channel": int(e.channel),
                "strength": float(e.strength), "segments": _segments_record(e.segments)}
    return {"kind": "function", "name": getattr(e, "__name__", type(e).__name__)}


def _segments_record(segments):
    if segments is None or isinstance(segments, str):
        return segments or "all"
    return [int(i) for i in np.atleast_1d(segments)]


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
_MAX_PROJECTORS = 4


def _projector(generator, settings):
    key = (id(generator), settings)
    hit = _PROJECTORS.pop(key, None)
    if hit is None:
        while len(_PROJECTORS) >= _MAX_PROJECTORS:
            del _PROJECTORS[next(iter(_PROJECTORS))]
        source = masks_lib.make_mask_source(None, 1, generator.resolution, seed=settings.seed)
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


def _project_region(image, generator, region, *, steps, space, lr, lpips_net, lpips_resolution, seed,
                    noise_mode, dtype, initial_codes, callback):
    generator = _resolve_generator(generator)
    settings = InversionSettings(segments=1, space=space, steps=steps, lr=lr, lambda_reg=0.0,
                                 lpips_net=lpips_net, lpips_resolution=lpips_resolution, seed=seed,
                                 noise_mode=noise_mode, dtype=dtype).validate(generator)
    target = io.as_target_image(image, generator.resolution)
    region = _region(region, generator.resolution)
    if not np.any(region > 0):
        raise ImageError("the region is empty: mark the pixels to edit with values > 0")
    init = None
    if initial_codes is not None:
        init = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32)[None, None], initial_codes)
    proj = invert_batch([target], generator, segments=1, space=settings.space, steps=steps, lr=lr,
                        lambda_reg=0.0, lpips_net=lpips_net, lpips_resolution=lpips_resolution,
                        static_masks=[1.0 - region], seed=seed, noise_mode=noise_mode, dtype=dtype,
                        progress_every=0 if callback is None else 25, callback=callback,
                        inverter=_projector(generator, settings), initial_codes=init)[0]
    return generator, target, region, proj


def _finish(generator, target, region, proj, latents, blend, record):
    if blend not in BLENDS:
        raise ConfigError(f"blend must be one of {BLENDS}, got {blend!r}")
    settings = proj.settings
    generated = np.asarray(render_segments(generator, latents, noise_mode=settings["noise_mode"],
                                           dtype=settings["dtype"]))
    # clipped: the image is the next edit's input, and generators overshoot [-1, 1] a little
    image = np.clip(_blend(generated[0], target, region, blend), -1.0, 1.0)
    out_settings = dict(settings, space=latent_space(generator, latents["codes"]))
    out_settings["edits"] = [record]
    result = InversionResult(
        target=target, composite=image, segment_images=generated, masks=np.ones_like(proj.masks),
        latents=jax.tree_util.tree_map(np.asarray, latents), loss_history=proj.loss_history,
        final_losses=dict(proj.final_losses), settings=out_settings, static_mask=(1.0 - region).astype(np.float32),
        seconds=proj.seconds)
    return RegionEdit(image=image, generated=generated[0], region=region, projection=proj, result=result)


def local_edit(image, generator, region, edit=None, *, steps=100, space="w+", lr=0.1, blend="mask",
               lpips_net="vgg", lpips_resolution=256, seed=0, noise_mode="const", dtype="float32",
               initial_codes=None, callback=None) -> RegionEdit:
    """A local edit (paper section 5, eq. 3): project one segment into `region` with the outside as
    static mask (static_mask = 1 - region), edit its code, and composite
        image' = region * G(X') + (1 - region) * image          (blend='mask'; exact outside the region)
    blend='poisson' instead solves for the region (region > 0.5) in the gradient domain with the input
    as boundary; blend='none' returns G(X') itself.

    image: path or [H, W, 3] array in [-1, 1] (for sequential layered edits, the previous `.image`).
    generator: a StyleGAN2 object or a checkpoint path. region: [H, W] in [0, 1] or a mask file. edit: None, a DirectionEdit / StyleEdit or a list of them,
    or a function latents -> latents. steps, space, lr, lpips_*: the region projection's settings
    (lambda_reg does not apply to one segment). initial_codes: start the projection from this code
    (one segment, no segment axis) instead of w_avg."""
    if blend not in BLENDS:
        raise ConfigError(f"blend must be one of {BLENDS}, got {blend!r}")
    generator = _resolve_generator(generator)
    space = SPACE_ALIASES.get(space, space)
    edits = _edit_list(edit)
    specs = [e for e in edits if isinstance(e, (DirectionEdit, StyleEdit))]
    if len(specs) not in (0, len(edits)):
        raise ConfigError("edit must be a function, or DirectionEdit / StyleEdit items, not both")
    if specs:  # find bad directions, layers or channels before the (slow) projection
        apply_edits({"codes": generator.initial_codes(space, 1)}, generator, specs)
    generator, target, region, proj = _project_region(
        image, generator, region, steps=steps, space=space, lr=lr, lpips_net=lpips_net,
        lpips_resolution=lpips_resolution, seed=seed, noise_mode=noise_mode, dtype=dtype,
        initial_codes=initial_codes, callback=callback)
    latents = proj.latents
    for e in edits:
        latents = e(latents) if not isinstance(e, (DirectionEdit, StyleEdit)) else latents
    if specs:
        latents = apply_edits(latents, generator, specs)
    record = {"kind": "local", "blend": blend, "edits": [_describe(e, generator.num_ws) for e in edits]}
    return _finish(generator, target, region, proj, latents, blend, record)


def _single_code(edited, segment: int):
    """The code of one segment (segment axis removed) from a RegionEdit, a result, latents or codes."""
    if isinstance(edited, RegionEdit):
        edited = edited.result
    latents = getattr(edited, "latents", edited)
    codes = latents["codes"] if isinstance(latents, dict) and "codes" in latents else latents
    (i,) = segment_indices(segment, _count(codes))
    return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32)[i], codes)


def fill_holes(edited, generator, target_image, correction_mask, *, steps=50, segment=0, lr=0.1,
               blend="mask", lpips_net="vgg", lpips_resolution=256, seed=0, noise_mode="const",
               dtype="float32", callback=None) -> RegionEdit:
    """Hole filling (paper Fig. 10): refine an edited code X_1 into X_2 on a correction mask S_2.

    A single-segment projection that starts from the edited code (initial_codes), with `target_image`
    (normally the edited composite, so that the content matches the edit) fixed outside the correction
    region (static mask = 1 - correction_mask); the generated content of X_2 then fills the region:
        image = correction * G(X_2) + (1 - correction) * target_image          (blend='mask')
    edited: a RegionEdit, an InversionResult, latents or codes (with a segment axis; `segment` picks one).
    With steps=1 the code is returned unchanged (NVIDIA's schedule has lr = 0 at step 0)."""
    if blend not in BLENDS:
        raise ConfigError(f"blend must be one of {BLENDS}, got {blend!r}")
    generator = _resolve_generator(generator)
    code = _single_code(edited, segment)
    space = latent_space(generator, jax.tree_util.tree_map(lambda x: x[None], code))
    generator, target, region, proj = _project_region(
        target_image, generator, correction_mask, steps=steps, space=space, lr=lr, lpips_net=lpips_net,
        lpips_resolution=lpips_resolution, seed=seed, noise_mode=noise_mode, dtype=dtype,
        initial_codes=code, callback=callback)
    return _finish(generator, target, region, proj, proj.latents, blend, {"kind": "fill_holes", "blend": blend})
