"""Editing a saved result, as `bin/edit` does: the generator and the projection settings come from the
result's own record unless given, and the outputs may never replace an input."""

from __future__ import annotations

from pathlib import Path

from .. import io
from ..demo import resolve_generator
from ..errors import ConfigError
from ..lpips import parse_resolution
from ..mask_sources import segmenter_for_result
from ..segmenter import load_segmenter
from ..results import load_result
from .directions import load_direction
from .edits import DirectionEdit, parse_s_edit
from .region import local_edit
from .render import current_image, edit_result
from .spaces import count_segments, latent_space, parse_segments


def check_outputs(output, output_latents, latents_dir, inputs) -> None:
    """Refuse outputs that would replace an input, the result being edited, or an unrelated folder."""
    out = Path(output).resolve()
    if out.is_dir():
        raise ConfigError(f"--output {output} is a directory; give an image file name")
    taken = {Path(p).resolve() for p in inputs}
    src = Path(latents_dir).resolve()
    if out in taken or out.parent == src:
        raise ConfigError(f"--output {output} would overwrite an input")
    if output_latents:
        d = Path(output_latents).resolve()
        if d == src or src in d.parents or d in src.parents or d in taken or out == d or d in out.parents:
            raise ConfigError(f"--output_latents {output_latents} would overwrite an input or the output")
        if d.exists() and (not d.is_dir() or (any(d.iterdir()) and not (d / "result.json").is_file())):
            raise ConfigError(f"--output_latents {output_latents} exists and is not a saved result; "
                              "refusing to replace it")


def edit_saved_result(latents_dir, output, *, generator=None, direction=None, strength=1.0, layers=None,
                      segments="all", s_edits=(), region=None, blend="mask", steps=100, space=None,
                      lpips_net=None, lpips_resolution=None, segment_code=None, segmenter=None,
                      output_latents=None) -> str:
    """Edit the result saved in `latents_dir` and write the image to `output` (and the edited result to
    `output_latents`). Without `region` the result's own codes are edited and recomposited with its
    masks; with `region` one segment is projected into the region of the result's current image,
    edited and composited back. Returns a one-line summary.

    segment_code: move the segment code X^S with the direction so that the masks follow (paper sec. 4);
    None: whenever the result has one (its masks came from a segment generator) and the edit is a global
    direction. The masks are then recomputed by the segmenter that made them: `segmenter` (a directory)
    if given, else the one the result records (its directory, or the k-means cache); one that is not the
    recorded segmenter, or belongs to another generator, is refused."""
    result = load_result(latents_dir)
    gen_path = generator or result.settings.get("generator")
    if not gen_path:
        raise ConfigError(f"{latents_dir} records no generator; pass --generator=PATH")
    inputs = [Path(p) for p in (direction, region, gen_path, segmenter) if p and p != "demo"]
    check_outputs(output, output_latents, latents_dir, inputs)
    if layers is not None and not direction:
        raise ConfigError("--layers applies to a --direction")
    has_code = "segment_code" in result.latents
    if segment_code is None:
        segment_code = bool(has_code and direction and not region)
    if segment_code and not direction:
        raise ConfigError("--segment_code moves the segment code along a --direction; give one")
    if segmenter and not segment_code:
        raise ConfigError("--segmenter recomputes the masks of a moved segment code; it applies to a global "
                          "--direction edit of a result whose masks came from a segment generator")
    if segment_code and region:
        raise ConfigError("--segment_code applies to global edits; a local edit has one segment and no "
                          "segment code")
    segments = parse_segments(segments) if isinstance(segments, str) else segments
    styles = [parse_s_edit(text, segments) for text in s_edits]

    gen = resolve_generator(gen_path)  # bin/invert records "demo" for the demo generator
    if result.target.shape[:2] != (gen.resolution,) * 2:
        raise ConfigError(f"the result is {result.target.shape[0]} px but the generator makes "
                          f"{gen.resolution} px")
    latent_space(gen, result.latents["codes"])  # the codes must fit this generator

    edits = []
    if direction:
        edits.append(DirectionEdit(load_direction(direction, gen), strength, layers, segments,
                                   segment_code=segment_code))
    edits += styles

    settings = result.settings
    if region:
        out = local_edit(
            current_image(result), gen, region, edits, steps=steps,
            space=space or settings.get("space", "w+"), lr=settings.get("lr", 0.1), blend=blend,
            lpips_net=lpips_net or settings.get("lpips_net", "vgg"),
            lpips_resolution=parse_resolution(lpips_resolution or settings.get("lpips_resolution", 256)),
            seed=settings.get("seed", 0), noise_mode=settings.get("noise_mode", "const"),
            dtype=settings.get("dtype", "float32"))
        image, edited = out.image, out.result
    else:
        mask_source = None
        if segment_code:
            record = result.settings.get("masks")
            if record is None and segmenter:  # a result saved before the mask source was recorded
                mask_source = load_segmenter(segmenter, gen)
            else:
                mask_source = segmenter_for_result(record, gen, count_segments(result.latents["codes"]),
                                                   segmenter=segmenter)
        edited = edit_result(result, gen, edits, blend=blend, mask_source=mask_source)
        image = edited.composite

    io.save_png(output, io.to_uint8(image))
    if output_latents:
        edited.settings["generator"] = "demo" if gen_path == "demo" else str(Path(gen_path).resolve())
        edited.save(output_latents)
    what = [f"direction {Path(direction).name if isinstance(direction, (str, Path)) else 'array'} x {strength:g}"] \
        if direction else []
    what = ", ".join(what + [f"s {t}" for t in s_edits]) or "no edit"
    return (f"{'local' if region else 'global'} edit ({what}, blend {blend}) -> {output}"
            + (f", latents -> {output_latents}" if output_latents else ""))
