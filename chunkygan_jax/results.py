"""Saving and loading inversion results, so that editing can continue in a later session.

A result directory holds
  latents.npz     the latent pytree, flattened to '/'-joined keys ("codes", "codes/b4.conv1", "mask_logits")
  arrays.npz      target, composite, segment images, masks, loss history (and static mask), float32
  result.json     settings, final losses, format version
It is written to a temporary sibling and renamed, so a crash never leaves a half-written result.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import io
from .errors import ChunkyGANError

FORMAT_VERSION = 1


def flatten_tree(tree, prefix="") -> dict[str, np.ndarray]:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            if "/" in str(k):
                raise ChunkyGANError(f"latent key {k!r} contains '/'")
            out.update(flatten_tree(v, f"{prefix}{k}/"))
        return out
    return {prefix.rstrip("/"): np.asarray(tree)}


def unflatten_tree(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        parts = key.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def save_latents(path, latents) -> None:
    with io.atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **flatten_tree(latents))


def load_latents(path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as data:
            return unflatten_tree({k: data[k] for k in data.files})
    except (OSError, ValueError) as e:
        raise ChunkyGANError(f"{path}: not a latents file ({e})") from None


def save_result(result, directory) -> Path:
    directory = Path(directory)
    with io.atomic_path(directory, is_dir=True) as tmp:
        with open(tmp / "latents.npz", "wb") as f:
            np.savez(f, **flatten_tree(result.latents))
        arrays = dict(target=result.target, composite=result.composite,
                      segment_images=result.segment_images, masks=result.masks,
                      loss_history=result.loss_history)
        if result.static_mask is not None:
            arrays["static_mask"] = result.static_mask
        with open(tmp / "arrays.npz", "wb") as f:
            np.savez(f, **{k: np.asarray(v, np.float32) for k, v in arrays.items()})
        record = {"format_version": FORMAT_VERSION, "settings": result.settings,
                  "final_losses": result.final_losses, "seconds": result.seconds}
        (tmp / "result.json").write_text(json.dumps(record, indent=2))
    return directory


def load_result(directory):
    from .inversion import InversionResult

    directory = Path(directory)
    try:
        record = json.loads((directory / "result.json").read_text())
        with np.load(directory / "arrays.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, KeyError) as e:
        raise ChunkyGANError(f"{directory}: not a saved inversion result ({e})") from None
    if record.get("format_version") != FORMAT_VERSION:
        raise ChunkyGANError(f"{directory}: result format {record.get('format_version')} is not supported")
    return InversionResult(
        target=arrays["target"], composite=arrays["composite"], segment_images=arrays["segment_images"],
        masks=arrays["masks"], latents=load_latents(directory / "latents.npz"),
        loss_history=arrays["loss_history"], final_losses=record["final_losses"],
        settings=record["settings"], static_mask=arrays.get("static_mask"), seconds=record.get("seconds", 0.0))


PROGRESSION_STEPS = (1, 5, 9, 15, 23, 37)  # the iterations of the paper's Fig. 3


def progression_steps(steps: int) -> list[int]:
    return sorted({s for s in PROGRESSION_STEPS if s < steps} | {steps})


def progression_sheet(result) -> np.ndarray:
    """uint8 sheet: composites (top row) and colour-coded masks (bottom row) at the snapshot steps."""
    from .masks import color_code

    if not result.snapshots:
        raise ChunkyGANError("this result holds no snapshots (pass snapshot_steps to invert)")
    top = np.concatenate([io.to_uint8(s.composite) for s in result.snapshots], axis=1)
    bottom = np.concatenate([color_code(s.masks) for s in result.snapshots], axis=1)
    return np.concatenate([top, bottom], axis=0)


def write_report(result, directory, *, extra_metrics=None) -> Path:
    """Everything a user looks at after an inversion, in one directory (written atomically):
    projection.png, side_by_side.png (original | projection), masks.png, progression.png (if snapshots),
    segments.png (each segment's full image), metrics.json, and the result itself under result/."""
    from .masks import color_code

    directory = Path(directory)
    with io.atomic_path(directory, is_dir=True) as tmp:
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
                   "ms_per_step": 1000.0 * result.seconds / max(steps, 1), "settings": result.settings,
                   **(extra_metrics or {})}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return directory
