"""StyleSpace channels that act on a region (after Wu, Lischinski and Shechtman, "StyleSpace Analysis:
Disentangled Controls for StyleGAN Image Generation", CVPR 2021, whose localized channels are those
whose gradient maps overlap a semantic region).

For a result's projection, every StyleSpace channel c of the chosen segments' codes is moved by the
same infinitesimal amount, and the change of the composited image (the blend of the segment images by
the result's masks, eq. 1) is taken exactly as a forward-mode derivative J_c [H, W, 3]. With e = the
squared change per pixel (RGB summed) and R the region [H, W] in [0, 1]:
  locality = sum(e * R) / sum(e)                 the share of the channel's effect inside the region;
  ratio    = (sum(e * R) / sum(R)) / (sum(e * (1 - R)) / sum(1 - R))
                                                 the mean change per pixel inside over that outside.
Channels are ranked by locality; channels with no measurable effect (under 1e-6 of the strongest) are
left out. ToRGB channels (colour offsets everywhere) are left out unless asked for. All channels go
through one compiled program, `chunk` at a time.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError
from ..masks.composite import composite
from .render import result_drawer
from .spaces import count_segments, segment_indices, to_styles

CHUNK = 32
DEAD = 1e-6  # relative effect under which a channel counts as doing nothing


@functools.partial(jax.jit, static_argnames=("names", "noise_mode"))
def _energies(generator, styles, masks, region, chosen, flat, *, names, noise_mode):
    """(inside, total) [len(flat)]: the squared change of the composite per flat channel index."""
    sizes = [styles[k].shape[1] for k in names]
    offsets = np.cumsum([0] + sizes[:-1])

    def image(s):
        return composite(generator.synthesis_from_styles(s, noise_mode=noise_mode), masks)

    def one(i):
        tangent = {k: jnp.zeros_like(v) for k, v in styles.items()}
        for k, off, size in zip(names, offsets, sizes):
            tangent[k] = chosen[:, None] * (jnp.arange(size) + off == i).astype(jnp.float32)[None]
        delta = jax.jvp(image, (styles,), (tangent,))[1]
        e = jnp.sum(delta**2, axis=-1)
        return jnp.sum(e * region), jnp.sum(e)

    return jax.lax.map(jax.vmap(one), flat)


def _region(result, region) -> np.ndarray:
    masks = np.asarray(result.masks, np.float32)
    if isinstance(region, (int, np.integer)) and not isinstance(region, bool):
        (k,) = segment_indices(int(region), masks.shape[0])
        r = masks[k]
    else:
        r = np.asarray(region, np.float32)
        if r.shape != masks.shape[1:]:
            raise ConfigError(f"the region must be a segment index or a [{masks.shape[1]}, {masks.shape[2]}] "
                              f"mask, got shape {r.shape}")
        if not np.all(np.isfinite(r)) or r.min() < 0 or r.max() > 1:
            raise ConfigError("the region mask must lie in [0, 1]")
    if r.sum() < 1 or (1 - r).sum() < 1:
        raise ConfigError("the region must cover some of the image and leave some of it out")
    return r


def localized_channels(result, generator, region, *, top: int = 10, segments="all", torgb: bool = False,
                       chunk: int = CHUNK) -> list[dict]:
    """The `top` StyleSpace channels whose effect on the result's image lies most inside `region` (a
    segment index, whose mask is the region, or a [H, W] mask in [0, 1]); see the module doc. Each is
    {"layer", "channel", "locality", "ratio", "effect"} (effect: the root of the summed squared change
    per unit of the channel); use a channel as StyleEdit(layer, channel, strength). `segments`: whose
    codes move ('all' or indices); `generator`: the one the result was inverted with (a tuned result
    applies its own weights, a result with optimised noise its noise)."""
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ConfigError(f"top must be a positive integer, got {top!r}")
    generator = result_drawer(generator, result)  # its own weights if tuned, its own noise if optimised
    styles = to_styles(generator, result.latents["codes"])  # ConfigError for a generator without S
    n = count_segments(result.latents["codes"])
    chosen = np.zeros(n, np.float32)
    chosen[list(segment_indices(segments, n))] = 1.0
    r = _region(result, region)
    names = tuple(k for k in generator.config.layer_names() if torgb or not k.endswith(".torgb"))
    sizes = [int(styles[k].shape[1]) for k in names]
    total = sum(sizes)
    flat = np.arange(-(-total // chunk) * chunk, dtype=np.int32).reshape(-1, chunk)  # padded; tail dropped
    noise_mode = result.settings.get("noise_mode", "const")
    inside, energy = (np.asarray(a, np.float64).reshape(-1)[:total] for a in _energies(
        generator, styles, jnp.asarray(result.masks, jnp.float32), jnp.asarray(r), jnp.asarray(chosen),
        jnp.asarray(flat), names=names, noise_mode="const" if noise_mode == "random" else noise_mode))
    live = energy > DEAD * energy.max() if energy.max() > 0 else np.zeros_like(energy, bool)
    if not live.any():
        raise ConfigError("no StyleSpace channel of the chosen segments changes the image")
    locality = np.where(live, inside / np.maximum(energy, 1e-30), -1.0)
    area_in, area_out = float(r.sum()), float((1 - r).sum())
    layer_of = np.repeat(np.arange(len(names)), sizes)
    channel_of = np.concatenate([np.arange(s) for s in sizes])
    out = []
    for i in np.argsort(-locality, kind="stable")[: min(int(top), int(live.sum()))]:
        outside = max(energy[i] - inside[i], 1e-30)
        out.append({"layer": names[layer_of[i]], "channel": int(channel_of[i]), "locality": float(locality[i]),
                    "ratio": float((inside[i] / area_in) / (outside / area_out)), "effect": float(np.sqrt(energy[i]))})
    return out


def write_localized_channels(latents_dir, output, *, segment=None, region=None, generator=None, top=10,
                             segments="all", torgb=False, overwrite=False) -> list[dict]:
    """bin/directions --localized: the ranking for a saved result, written to `output` (JSON) and
    returned. The region is the mask of `segment` or the mask image `region` (white = inside)."""
    import json
    from pathlib import Path

    from ..demo import resolve_generator
    from ..files import atomic_path, check_writable
    from ..generators.protocol import bind_label
    from ..io import load_mask
    from ..results import load_result

    if (segment is None) == (region is None):
        raise ConfigError("give the region as a segment index (--segment) or a mask image (--region), one of them")
    inputs = [p for p in (latents_dir, region, generator) if p not in (None, "demo")]
    check_writable(output, overwrite, inputs=inputs)
    result = load_result(latents_dir)
    gen_path = generator or result.settings.get("generator")
    if not gen_path:
        raise ConfigError(f"{latents_dir} records no generator; pass --generator=PATH")
    gen = bind_label(resolve_generator(gen_path), result.settings.get("label"))
    where = segment if region is None else load_mask(region, gen.resolution)
    found = localized_channels(result, gen, where, top=top, segments=segments, torgb=torgb)
    record = {"result": str(latents_dir), "region": f"segment {segment}" if region is None else str(region),
              "segments": segments if isinstance(segments, str) else list(segments), "channels": found}
    with atomic_path(Path(output), overwrite=overwrite, inputs=inputs) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    return found
