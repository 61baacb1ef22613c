"""The report `bin/invert` writes: what a user looks at after an inversion, in one folder.

Sheets (side_by_side, masks, segments, progression) are enlarged by an integer factor with
nearest-neighbour so that a small generator's pixels can be seen (64 px -> 256 px per tile); the
projection itself stays at the generator's resolution. masks.png carries a legend (colour -> segment
index and its share of the image) and progression.png the step number of each column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from . import io
from .align import Alignment, as_mode, paste_all, paste_back
from .errors import ChunkyGANError
from .files import atomic_path
from .groups import face_folder, write_group_record
from .masks.colors import color_code, palette
from .masks.metrics import mask_coherence
from .results import save_result

PROGRESSION_STEPS = (1, 5, 9, 15, 23, 37)  # the iterations of the paper's Fig. 3
SHEET_TILE = 256  # sheets enlarge small images to at least this many pixels per tile
_INK, _PAPER = (0, 0, 0), (255, 255, 255)
_LINE = 14  # pixel height of one line of PIL's default font, with a margin


def progression_steps(steps: int) -> list[int]:
    """The paper's steps (1, 5, 9, 15, 23, 37) below `steps`, then doublings from 37 (74, 148, 296, ...)
    while they stay below steps / 1.3 (most of the change comes after step 37), then the last step."""
    extra, s = [], 2 * PROGRESSION_STEPS[-1]
    while s * 1.3 < steps:
        extra.append(s)
        s *= 2
    return sorted({s for s in PROGRESSION_STEPS + tuple(extra) if s < steps} | {steps})


def sheet_scale(resolution: int) -> int:
    """The nearest-neighbour enlargement of sheets for a generator resolution (64 -> 4, >= 256 -> 1)."""
    return max(1, SHEET_TILE // int(resolution))


def enlarge(image: np.ndarray, k: int) -> np.ndarray:
    return image if k == 1 else np.repeat(np.repeat(image, k, axis=0), k, axis=1)


def _text_strip(width: int, labels, *, height: int = _LINE + 4) -> np.ndarray:
    """A white strip [height, width, 3] with each (x, text) written at x."""
    strip = Image.new("RGB", (width, height), _PAPER)
    draw = ImageDraw.Draw(strip)
    for x, text in labels:
        draw.text((x + 3, 2), text, fill=_INK)
    return np.asarray(strip)


def legend(masks: np.ndarray, width: int) -> np.ndarray:
    """Rows of colour swatches with the segment index and its share of the pixels (argmax), as many
    per row as fit in `width`."""
    n = masks.shape[0]
    share = np.bincount(np.asarray(masks).argmax(axis=0).reshape(-1), minlength=n) / masks[0].size
    colours = (palette(n) * 255 + 0.5).astype(np.uint8)
    cell = 78
    per_row = max(1, width // cell)
    rows = -(-n // per_row)
    img = Image.new("RGB", (width, rows * (_LINE + 6) + 4), _PAPER)
    draw = ImageDraw.Draw(img)
    for i in range(n):
        x, y = (i % per_row) * cell + 4, (i // per_row) * (_LINE + 6) + 4
        draw.rectangle([x, y, x + _LINE - 2, y + _LINE - 2], fill=tuple(int(c) for c in colours[i]), outline=_INK)
        draw.text((x + _LINE + 3, y), f"{i}: {100 * share[i]:.0f}%", fill=_INK)
    return np.asarray(img)


def masks_sheet(masks: np.ndarray) -> np.ndarray:
    """uint8 colour-coded masks (enlarged for small generators) over a legend: colour -> segment index
    (and the share of pixels where it is the strongest)."""
    coded = enlarge(color_code(masks), sheet_scale(masks.shape[-1]))
    return np.concatenate([coded, legend(masks, coded.shape[1])], axis=0)


def progression_sheet(result) -> np.ndarray:
    """uint8 sheet: the step number over each column, composites (top row) and colour-coded masks
    (bottom row) at the snapshot steps, enlarged for small generators."""
    if not result.snapshots:
        raise ChunkyGANError("this result holds no snapshots (pass snapshot_steps to invert)")
    k = sheet_scale(result.composite.shape[0])
    tile = result.composite.shape[1] * k
    top = np.concatenate([enlarge(io.to_uint8(s.composite), k) for s in result.snapshots], axis=1)
    bottom = np.concatenate([enlarge(color_code(s.masks), k) for s in result.snapshots], axis=1)
    labels = _text_strip(top.shape[1], [(i * tile, f"step {s.step}") for i, s in enumerate(result.snapshots)])
    return np.concatenate([labels, top, bottom], axis=0)


REPORT_KIND = "inversion report"


def write_report(result, directory, *, extra_metrics=None, photo=None, blend="feather", overwrite: bool = False,
                 inputs=()) -> Path:
    """Everything a user looks at after an inversion, in one directory (written atomically):
    projection.png, side_by_side.png (original | projection), masks.png (with a legend),
    progression.png (if snapshots), segments.png (each segment's full image), metrics.json, and the
    result itself under result/. Sheets are enlarged for small generators (`sheet_scale`).

    For an aligned photo (result.alignment), also pasted.png: the projection warped back into the photo
    (`photo`, else the path the result records) at its full size, blended with `blend` ("feather" or
    "poisson"); metrics.json then holds the alignment. The result of a greyscale photo
    (settings["photo_mode"] "grey") is shown in grey: projection.png, side_by_side.png and pasted.png.
    An existing report is replaced only with overwrite=True (files.atomic_path's rules); `inputs` (the
    photo, masks...) may be neither the directory nor inside it."""
    directory = Path(directory)
    pasted = None
    if result.alignment is not None and (photo is not None or result.photo):
        pasted = paste_back(photo if photo is not None else result.photo, shown(result),
                            Alignment.from_json(result.alignment), blend=blend)
    result.require_segment_images("the report's segments.png")
    with atomic_path(directory, is_dir=True, overwrite=overwrite, kind=REPORT_KIND, inputs=inputs) as tmp:
        if pasted is not None:
            io.save_png(tmp / "pasted.png", pasted)
        _write_face(result, tmp, extra_metrics)
    return directory


def shown(result) -> np.ndarray:
    """The projection as the photo shows it: uint8, in grey for a greyscale photo."""
    return as_mode(result.image_uint8(), result.settings.get("photo_mode", "rgb"))


def _metrics(result) -> dict:
    return {"final_losses": result.final_losses, "steps": len(result.loss_history), "seconds": result.seconds,
            "compile_seconds": result.compile_seconds, "ms_per_step": result.step_ms,
            "settings": result.settings, "mask_coherence": mask_coherence(result.masks),
            "mode": result.settings.get("photo_mode", "rgb"),
            **({"alignment": result.alignment, "photo": result.photo} if result.alignment else {}),
            # pivotal tuning: its steps, LPIPS before and after, the delta's size in bytes, timing
            **({"tuning": result.tuning["record"]} if result.tuning is not None else {})}


def _write_face(result, folder: Path, extra_metrics=None) -> None:
    """One result's report files into `folder` (which exists)."""
    k = sheet_scale(result.composite.shape[0])
    mode = result.settings.get("photo_mode", "rgb")
    segments = result.require_segment_images("the report's segments.png")
    io.save_png(folder / "projection.png", shown(result))
    io.save_png(folder / "side_by_side.png",
                enlarge(np.concatenate([io.to_uint8(result.target), shown(result)], axis=1), k))
    io.save_png(folder / "masks.png", masks_sheet(result.masks))
    io.save_png(folder / "segments.png", enlarge(np.concatenate([as_mode(io.to_uint8(x), mode) for x in segments],
                                                                axis=1), k))
    if result.snapshots:
        io.save_png(folder / "progression.png", progression_sheet(result))
    save_result(result, folder / "result")
    (folder / "metrics.json").write_text(json.dumps({**_metrics(result), **(extra_metrics or {})}, indent=2))


def write_group_report(group, directory, *, photo=None, blend="feather", overwrite: bool = False,
                       inputs=()) -> Path:
    """The report of a group photo (`groups.FaceGroup`), written atomically: pasted.png (every face's
    projection pasted into the photo, one after the other: overlapping crops blend without a seam),
    metrics.json (each face's number, quad, losses and report folder; the faces skipped and why; the
    timing of the one batch), group.json (what bin/edit reads) and one face's report per face in
    face_K/ (as `write_report` writes it, without pasted.png)."""
    directory = Path(directory)
    source = photo if photo is not None else group.photo
    pasted = None
    if source is not None:
        pasted = paste_all(source, [shown(r) for r in group.results], group.alignments(), blend=blend)
    for r in group.results:
        r.require_segment_images("the report's segments.png")
    first = group.results[0]
    with atomic_path(directory, is_dir=True, overwrite=overwrite, kind=REPORT_KIND, inputs=inputs) as tmp:
        if pasted is not None:
            io.save_png(tmp / "pasted.png", pasted)
        faces = []
        for r in group.results:
            folder = tmp / face_folder(r.alignment["face"])
            folder.mkdir()
            _write_face(r, folder)
            faces.append({"face": int(r.alignment["face"]), "quad": r.alignment["quad"],
                          "report": face_folder(r.alignment["face"]), "final_losses": r.final_losses,
                          **({"tuning": r.tuning["record"]} if r.tuning is not None else {})})
        write_group_record(group, tmp)
        metrics = {"photo": group.photo, "photo_size": list(group.photo_size), "mode": group.mode,
                   "faces_found": group.faces_found, "faces": faces, "skipped": group.skipped,
                   "batch": len(group.results), "steps": len(first.loss_history), "seconds": first.seconds,
                   "compile_seconds": first.compile_seconds, "ms_per_step": first.step_ms,
                   "settings": first.settings}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return directory
