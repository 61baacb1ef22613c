"""The report `bin/invert` writes: what a user looks at after an inversion, in one folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import io
from .align import Alignment, paste_back
from .errors import ChunkyGANError
from .files import atomic_path
from .masks import color_code
from .results import save_result

PROGRESSION_STEPS = (1, 5, 9, 15, 23, 37)  # the iterations of the paper's Fig. 3


def progression_steps(steps: int) -> list[int]:
    return sorted({s for s in PROGRESSION_STEPS if s < steps} | {steps})


def progression_sheet(result) -> np.ndarray:
    """uint8 sheet: composites (top row) and colour-coded masks (bottom row) at the snapshot steps."""
    if not result.snapshots:
        raise ChunkyGANError("this result holds no snapshots (pass snapshot_steps to invert)")
    top = np.concatenate([io.to_uint8(s.composite) for s in result.snapshots], axis=1)
    bottom = np.concatenate([color_code(s.masks) for s in result.snapshots], axis=1)
    return np.concatenate([top, bottom], axis=0)


REPORT_KIND = "inversion report"


def write_report(result, directory, *, extra_metrics=None, photo=None, blend="feather", overwrite: bool = False,
                 inputs=()) -> Path:
    """Everything a user looks at after an inversion, in one directory (written atomically):
    projection.png, side_by_side.png (original | projection), masks.png, progression.png (if snapshots),
    segments.png (each segment's full image), metrics.json, and the result itself under result/.

    For an aligned photo (result.alignment), also pasted.png: the projection warped back into the photo
    (`photo`, else the path the result records) at its full size, blended with `blend` ("feather" or
    "poisson"); metrics.json then holds the alignment. An existing report is replaced only with
    overwrite=True (files.atomic_path's rules); `inputs` (the photo, masks...) may be neither the
    directory nor inside it."""
    directory = Path(directory)
    pasted = None
    if result.alignment is not None and (photo is not None or result.photo):
        pasted = paste_back(photo if photo is not None else result.photo, io.to_uint8(result.composite),
                            Alignment.from_json(result.alignment), blend=blend)
    with atomic_path(directory, is_dir=True, overwrite=overwrite, kind=REPORT_KIND, inputs=inputs) as tmp:
        if pasted is not None:
            io.save_png(tmp / "pasted.png", pasted)
        io.save_png(tmp / "projection.png", io.to_uint8(result.composite))
        io.save_png(tmp / "side_by_side.png",
                    np.concatenate([io.to_uint8(result.target), io.to_uint8(result.composite)], axis=1))
        io.save_png(tmp / "masks.png", color_code(result.masks))
        io.save_png(tmp / "segments.png", np.concatenate([io.to_uint8(x) for x in result.segment_images], axis=1))
        if result.snapshots:
            io.save_png(tmp / "progression.png", progression_sheet(result))
        save_result(result, tmp / "result")
        steps = len(result.loss_history)
        metrics = {"final_losses": result.final_losses, "steps": steps, "seconds": result.seconds,
                   "compile_seconds": result.compile_seconds, "ms_per_step": result.step_ms,
                   "settings": result.settings,
                   **({"alignment": result.alignment, "photo": result.photo} if result.alignment else {}),
                   **(extra_metrics or {})}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return directory
