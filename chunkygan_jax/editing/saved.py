"""Editing a saved result, as `bin/edit` does: the generator and the projection settings come from the
result's own record unless given, and the outputs may never replace an input. Also what there is to look
at: a strip of one edit at several strengths (a sweep), and for edits limited to some segments or a
region a side-by-side (before | edit | changed pixels). A result of an aligned photo also gets its edit
pasted back into the photo (NAME_pasted.png next to the output); the report folder of a group photo
(`bin/invert --face=all`) gets its edit applied to every face, or to some, and pasted into one photo.

The paste of an edit is "residual" by default whenever the face in the photo is larger than the
generator's images: the photo plus the upsampled change the edit makes to the projection, so the photo's
own detail stays where the edit changes nothing; "projection" pastes the edited projection itself.
A result of a greyscale photo is edited in colour and shown (written and pasted) in grey."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from ..align import PASTES, Alignment, as_mode, paste_all, paste_back
from ..demo import resolve_generator
from ..errors import ConfigError
from ..files import check_writable
from ..groups import is_group, load_group
from ..generators.protocol import bind_label
from ..masks.options import segmenter_for_result
from ..masks.segmenter import load_segmenter
from ..results import RESULT_KIND, generator_record, load_result
from .directions import is_pca_spec, resolve_direction
from .edits import DirectionEdit, edit_result, parse_s_edit
from .region import REGION_STEPS, local_edit, recorded_projection, reedit
from .render import current_image, result_drawer
from .sheets import changed_pixels, tile_sheet
from .spaces import as_number, count_segments, latent_space, parse_segments, segment_indices

MAX_SWEEP = 25


def parse_sweep(text) -> list[float]:
    """'lo:hi:count' (e.g. '-3:3:7') -> count evenly spaced strengths from lo to hi."""
    parts = str(text).split(":")
    if len(parts) != 3:
        raise ConfigError(f"a sweep is 'lo:hi:count' (e.g. '-3:3:7'), got {text!r}")
    lo, hi = (as_number(p, f"sweep {text!r}: strength") for p in parts[:2])
    try:
        count = int(parts[2])
    except ValueError:
        count = 0
    if not 2 <= count <= MAX_SWEEP:
        raise ConfigError(f"sweep {text!r}: count must be an integer from 2 to {MAX_SWEEP}")
    return [float(v) for v in np.linspace(lo, hi, count)]


def compare_path(output) -> Path:
    """Where the side-by-side of a restricted edit goes: next to `output`, as NAME_compare.png."""
    out = Path(output)
    return out.with_name(f"{out.stem}_compare.png")


def pasted_path(output) -> Path:
    """Where the edit pasted back into the photo goes: NAME_pasted.png next to the output NAME.png."""
    out = Path(output)
    return out.with_name(f"{out.stem}_pasted.png")


def check_outputs(output, output_latents, latents_dir, inputs, *, compare=None, overwrite=False) -> None:
    """Refuse outputs that would replace an input, the result being edited, an existing file (unless
    overwrite) or a folder this project did not write; and outputs that cannot be written at all."""
    out = Path(output).resolve()
    if out.is_dir():
        raise ConfigError(f"--output {output} is a directory; give an image file name")
    taken = {Path(p).resolve() for p in inputs}
    src = Path(latents_dir).resolve()
    if out in taken or out.parent == src:
        raise ConfigError(f"--output {output} would overwrite an input")
    if compare is not None and (Path(compare).resolve() in taken or Path(compare).is_dir()):
        raise ConfigError(f"the side-by-side {compare} (next to --output) would overwrite an input")
    if output_latents:
        d = Path(output_latents).resolve()
        if d == src or src in d.parents or d in src.parents or d in taken or out == d or d in out.parents:
            raise ConfigError(f"--output_latents {output_latents} would overwrite an input or the output")
        check_writable(output_latents, overwrite, is_dir=True, kind=RESULT_KIND)
    check_writable(output, overwrite)
    if compare is not None:
        check_writable(compare, overwrite)


@dataclasses.dataclass(frozen=True)
class SavedEdit:
    """The edit `edit_saved_result` and `edit_group` make (bin/edit's edit flags).

    direction: 'pca:K', a .npy file or an array (see `resolve_direction`; `pca_samples` sets the samples
        of a first PCA), moved by `strength` (or by each strength of `sweep`: 'lo:hi:count' or a list, and
        the output becomes a strip of the edit at those strengths), on `layers` and `segments`.
    s_edits: StyleSpace edits as text ('LAYER:CHANNEL:DELTA', `parse_s_edit`).
    segment_code: also move the segment code X^S with a global direction, so that the masks are recomputed
        for the moved code (paper sec. 4). Off by default, as in `apply_direction`, `DirectionEdit` and the
        editor: on real photos the moved masks fit the edited segments worse than the kept ones
        (docs/editing.md, "Global edits and the segment code"). None (a group's faces): on for results
        that have a segment code when a direction is given.
    region: a mask file or array: one segment is projected into the region of the result's current image,
        edited and composited back (a local edit), with `projection` (a dict of InversionSettings fields,
        over the result's own: steps (default 100), space, lpips_net, lpips_resolution, ...).
    blend: how the edit is composited ("mask", "poisson", "none")."""
    direction: Any = None
    strength: float = 1.0
    layers: Any = None
    segments: Any = "all"
    s_edits: tuple = ()
    segment_code: bool | None = False
    sweep: Any = None
    pca_samples: int | None = None
    region: Any = None
    projection: Any = None
    blend: str = "mask"


def edit_saved_result(latents_dir, output, edit: SavedEdit | None = None, *, generator=None, segmenter=None,
                      output_latents=None, faces="all", paste=None, overwrite=False) -> str:
    """Edit the result saved in `latents_dir` as `edit` says (a `SavedEdit`) and write the image to
    `output` (and the edited result to `output_latents`). Without a region the result's own codes are
    edited and recomposited with its masks. An edit limited to some segments or to a region also writes
    the side-by-side NAME_compare.png (before | edit | changed pixels) next to `output`. Existing outputs
    are replaced only with `overwrite` (files.py's rules). Returns a one-line summary.

    With `edit.segment_code`, the masks are recomputed by the segmenter that made them: `segmenter` (a
    directory) if given, else the one the result records (its directory, or the k-means cache); one that
    is not the recorded segmenter, or belongs to another generator, is refused.

    paste: how the edit goes into the photo of an aligned result: "residual" or "projection" (PASTES);
    None: residual where the face in the photo is larger than the generator's images.
    A group's report folder (`groups.is_group`): the edit is applied to `faces` ("all" or face numbers
    like "0,2") and `output` is the photo with every edited face pasted in (see `edit_group`)."""
    edit = edit or SavedEdit()
    direction, strength, layers, segments = edit.direction, edit.strength, edit.layers, edit.segments
    s_edits, segment_code, sweep, pca_samples = edit.s_edits, edit.segment_code, edit.sweep, edit.pca_samples
    region, blend = edit.region, edit.blend
    if paste is not None and paste not in PASTES:
        raise ConfigError(f"paste must be one of {', '.join(PASTES)}, got {paste!r}")
    if is_group(latents_dir):
        if region or sweep is not None or output_latents:
            raise ConfigError("a group photo takes global edits (--direction, --s_edit) written as one pasted "
                              "photo; --region, --sweep and --output_latents apply to one face's result "
                              "(its face_K/result folder)")
        return edit_group(latents_dir, output, edit, faces=faces, generator=generator, segmenter=segmenter,
                          overwrite=overwrite, paste=paste)
    if faces not in ("all", None):
        raise ConfigError("--faces chooses faces of a group photo (bin/invert --face=all); this is one result")
    result = load_result(latents_dir)
    gen_path = generator or result.settings.get("generator")
    if not gen_path:
        raise ConfigError(f"{latents_dir} records no generator; pass --generator=PATH")
    strengths = None if sweep is None else (parse_sweep(sweep) if isinstance(sweep, str) else
                                            [as_number(v, "sweep strength") for v in sweep])
    segments = parse_segments(segments) if isinstance(segments, str) else segments
    restricted = bool(region) or segments not in ("all", None)
    compare = compare_path(output) if restricted and strengths is None else None
    photo = result.settings.get("image")  # the photo that was inverted (or aligned) is an input too
    inputs = [Path(p) for p in (direction, region, gen_path, segmenter, photo, result.photo)
              if isinstance(p, (str, Path)) and p != "demo" and not is_pca_spec(p)]
    check_outputs(output, output_latents, latents_dir, inputs, compare=compare, overwrite=overwrite)
    pasted = pasted_path(output) if result.alignment and result.photo and strengths is None else None
    if pasted:
        check_outputs(pasted, None, latents_dir, inputs + [Path(output), Path(result.photo)], overwrite=overwrite)
    if layers is not None and direction is None:
        raise ConfigError("--layers applies to a --direction")
    if strengths is not None and direction is None:
        raise ConfigError("--sweep varies the strength of a --direction; give one")
    if strengths is not None and output_latents:
        raise ConfigError("--output_latents saves one edit; it does not go with --sweep")
    if segment_code and direction is None:
        raise ConfigError("--segment_code moves the segment code along a --direction; give one")
    if segmenter and not segment_code:
        raise ConfigError("--segmenter recomputes the masks of a moved segment code; it applies to a global "
                          "--direction edit of a result whose masks came from a segment generator")
    if segment_code and region:
        raise ConfigError("--segment_code applies to global edits; a local edit has one segment and no "
                          "segment code")
    styles = [parse_s_edit(text, segments) for text in s_edits]

    # bin/invert records "demo" for the demo generator; a conditional one is bound to the result's class
    gen = bind_label(resolve_generator(gen_path), result.settings.get("label"))
    if result.target.shape[:2] != (gen.resolution,) * 2:
        raise ConfigError(f"the result is {result.target.shape[0]} px but the generator makes "
                          f"{gen.resolution} px")
    codes = result.latents["codes"]
    latent_space(gen, codes)  # the codes must fit this generator
    if not region:
        segment_indices(segments, count_segments(codes))  # before a first PCA, not after
    d = None if direction is None else resolve_direction(direction, gen, samples=pca_samples)

    def edits_at(value):
        first = [DirectionEdit(d, value, layers, segments, segment_code, _name(direction))] if d is not None else []
        return first + styles

    settings = result.settings
    # a region's projection: the result's own settings, then the edit's
    projection = recorded_projection({**settings, **(edit.projection or {})})
    steps = (edit.projection or {}).get("steps", REGION_STEPS)
    # what a region is projected with: the tuned weights and the result's noise (edit_result applies both too)
    drawer = result_drawer(gen, result)
    images, edited, step = [], None, None
    mask_source = None
    if segment_code:
        record = settings.get("masks")
        if record is None and segmenter:  # a result saved before the mask source was recorded
            mask_source = load_segmenter(segmenter, gen).with_hardening(1.0)  # made before annealing
        else:
            mask_source = segmenter_for_result(record, gen, count_segments(codes), segmenter=segmenter)
    for value in strengths or [strength]:
        if region and step is None:  # project the region once; every strength edits that projection
            step = local_edit(current_image(result), drawer, region, edits_at(value), steps=steps,
                              settings=projection, blend=blend)
        elif region:
            step = reedit(step, drawer, edits_at(value), blend=blend)
        if region:
            image, edited = step.image, step.result
        else:
            edited = edit_result(result, gen, edits_at(value), blend=blend, mask_source=mask_source)
            image = edited.composite
        images.append(as_mode(io.to_uint8(image), settings.get("photo_mode", "rgb")))  # grey photo: grey edit

    what = [f"direction {_name(direction)}" + ("" if strengths else f" x {strength:g}")] if direction is not None else []
    what = ", ".join(what + [f"s {t}" for t in s_edits]) or "no edit"
    kind = "local" if region else "global"
    if strengths is not None:
        io.save_png(output, tile_sheet([images], col_labels=[f"{v:g}" for v in strengths]), overwrite=overwrite)
        return f"{kind} edit ({what}, blend {blend}) at {len(strengths)} strengths " \
               f"{strengths[0]:g}..{strengths[-1]:g} -> {output}"
    mode = settings.get("photo_mode", "rgb")
    io.save_png(output, images[0], overwrite=overwrite)
    note = ""
    if pasted and Path(result.photo).is_file():
        alignment = Alignment.from_json(result.alignment)
        how = paste or default_paste(alignment, gen.resolution)
        reference = None
        if how == "residual":
            unedited = current_image(result) if region else edit_result(result, gen, [], blend=blend,
                                                                         mask_source=mask_source).composite
            reference = as_mode(io.to_uint8(unedited), mode)
        io.save_png(pasted, paste_back(result.photo, images[0], alignment, reference=reference),
                    overwrite=overwrite)
        note = f", pasted into the photo ({how}) -> {pasted}"
    elif pasted:
        note = f" (the photo {result.photo} is gone: no pasted image)"
    edited.alignment, edited.photo, edited.tuning = result.alignment, result.photo, result.tuning
    if region and "noise" in result.latents:  # the region was projected with the result's noise
        edited.latents = dict(edited.latents, noise=result.latents["noise"])
    if compare is not None:
        before = as_mode(io.to_uint8(current_image(result) if region else result.composite), mode)
        io.save_png(compare, tile_sheet([[before, images[0], changed_pixels(before, images[0])]],
                                        col_labels=["input" if region else "projection", "edit", "changed pixels"]),
                    overwrite=overwrite)
    if output_latents:
        edited.settings["generator"] = generator_record(gen) or settings.get("generator")  # the one that drew it
        edited.save(output_latents, overwrite=overwrite)
    return (f"{kind} edit ({what}, blend {blend}) -> {output}" + note
            + (f", side-by-side -> {compare}" if compare else "")
            + (f", latents -> {output_latents}" if output_latents else ""))


def default_paste(alignment, resolution) -> str:
    """"residual" where the face in the photo is larger than the generator's images, else "projection"."""
    return "residual" if alignment.side > resolution else "projection"


def _mask_source_for(result, gen, segment_code, segmenter, codes):
    if not segment_code:
        return None
    record = result.settings.get("masks")
    if record is None and segmenter:  # a result saved before the mask source was recorded
        return load_segmenter(segmenter, gen).with_hardening(1.0)  # made before annealing
    return segmenter_for_result(record, gen, count_segments(codes), segmenter=segmenter)


def edit_group(group_dir, output, edit: SavedEdit | None = None, *, faces="all", generator=None, segmenter=None,
               paste=None, overwrite=False) -> str:
    """One global edit (a `SavedEdit` without region or sweep; None: no edit, segment_code None) applied to the faces `faces`
    ("all", "0,2" or a list of face numbers) of a group photo's report folder, each face's result edited
    as `edit_saved_result` does, and every edited face pasted into the photo, written to `output`. Faces
    not chosen keep the photo's own pixels. Returns a one-line summary."""
    edit = edit or SavedEdit(segment_code=None)
    direction, strength, layers, segments = edit.direction, edit.strength, edit.layers, edit.segments
    s_edits, blend, pca_samples, segment_code = edit.s_edits, edit.blend, edit.pca_samples, edit.segment_code
    group = load_group(group_dir)
    if faces in ("all", None):
        chosen = list(group.faces)
    else:
        try:
            chosen = [int(f) for f in (faces.split(",") if isinstance(faces, str) else faces)]
        except (TypeError, ValueError):
            raise ConfigError(f"faces must be 'all' or face numbers like 0,2; got {faces!r}") from None
        missing = sorted(set(chosen) - set(group.faces))
        if missing or not chosen:
            raise ConfigError(f"face{'s' if len(missing) != 1 else ''} {', '.join(map(str, missing)) or '(none)'} "
                              f"not in this group (inverted faces: {', '.join(map(str, group.faces))})")
    if group.photo is None or not Path(group.photo).is_file():
        raise ConfigError(f"the group's photo {group.photo} is gone: nothing to paste the edit into")
    first = group.results[0]
    gen_path = generator or first.settings.get("generator")
    if not gen_path:
        raise ConfigError(f"{group_dir} records no generator; pass --generator=PATH")
    inputs = [Path(p) for p in (direction, gen_path, segmenter, group.photo)
              if isinstance(p, (str, Path)) and p != "demo" and not is_pca_spec(p)]
    check_outputs(output, None, group_dir, inputs, overwrite=overwrite)
    if layers is not None and direction is None:
        raise ConfigError("--layers applies to a --direction")
    segments = parse_segments(segments) if isinstance(segments, str) else segments
    gen = bind_label(resolve_generator(gen_path), first.settings.get("label"))
    if first.target.shape[:2] != (gen.resolution,) * 2:
        raise ConfigError(f"the results are {first.target.shape[0]} px but the generator makes "
                          f"{gen.resolution} px")
    d = None if direction is None else resolve_direction(direction, gen, samples=pca_samples)
    images, references, alignments, ways = [], [], [], []
    for result in group.results:
        if int(result.alignment["face"]) not in chosen:
            continue
        codes = result.latents["codes"]
        latent_space(gen, codes)
        segment_indices(segments, count_segments(codes))
        moves = segment_code if segment_code is not None else bool("segment_code" in result.latents and d is not None)
        if moves and d is None:
            raise ConfigError("--segment_code moves the segment code along a --direction; give one")
        source = _mask_source_for(result, gen, moves, segmenter, codes)
        edits = ([DirectionEdit(d, strength, layers, segments, moves, _name(direction))] if d is not None else []) \
            + [parse_s_edit(text, segments) for text in s_edits]
        mode = result.settings.get("photo_mode", "rgb")
        alignment = Alignment.from_json(result.alignment)
        how = paste or default_paste(alignment, gen.resolution)
        images.append(as_mode(io.to_uint8(edit_result(result, gen, edits, blend=blend, mask_source=source).composite),
                              mode))
        references.append(as_mode(io.to_uint8(edit_result(result, gen, [], blend=blend, mask_source=source).composite),
                                  mode) if how == "residual" else None)
        alignments.append(alignment)
        ways.append(how)
    io.save_png(output, paste_all(group.photo, images, alignments, references=references), overwrite=overwrite)
    what = [f"direction {_name(direction)} x {strength:g}"] if direction is not None else []
    what = ", ".join(what + [f"s {t}" for t in s_edits]) or "no edit"
    return (f"edit ({what}) of face{'s' if len(chosen) != 1 else ''} {', '.join(map(str, sorted(chosen)))} pasted "
            f"({', '.join(sorted(set(ways)))}) into the photo -> {output}")


def _name(direction) -> str:
    if isinstance(direction, (str, Path)):
        return str(direction) if is_pca_spec(direction) else Path(direction).name
    return "array"
