"""What an inversion produced (`InversionResult`), and saving and loading it so that editing can continue
in a later session.

A result directory holds
  latents.npz     the latent pytree, flattened to '/'-joined keys ("codes", "codes/b4.conv1", "mask_logits")
  arrays.npz      target, composite, segment images, masks, loss history (and static mask), float32
  result.json     settings, final losses, format version
It is written to a temporary sibling and renamed, so a crash never leaves a half-written result.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from .errors import ChunkyGANError
from .files import atomic_path
from .io import to_uint8
from .trees import flatten_tree, unflatten_tree

FORMAT_VERSION = 1


@dataclasses.dataclass
class Snapshot:
    step: int
    composite: np.ndarray  # [H, W, 3]
    masks: np.ndarray  # [n, H, W]


@dataclasses.dataclass
class InversionResult:
    """What an inversion produced. `latents` is the pytree to continue from (codes and mask params).

    Images are float32 with -1 = black and 1 = white. `composite` is the blend exactly as the loss saw it,
    NOT clipped: the masks are convex weights, so it stays within the range of the segment images, which
    is [-1, 1] for the DCGAN (tanh) but may overshoot slightly for StyleGAN2 (its output is not bounded).
    For saving or showing use `clipped` (float, [-1, 1]) or `image_uint8()` ([H, W, 3] uint8).
    settings["masks"] records where the masks came from (see mask_sources.mask_source_record)."""

    target: np.ndarray  # [H, W, 3] in [-1, 1]
    composite: np.ndarray  # [H, W, 3], about [-1, 1], not clipped (see above)
    segment_images: np.ndarray  # [n, H, W, 3]
    masks: np.ndarray  # [n, H, W]
    latents: dict
    loss_history: np.ndarray  # [steps]
    final_losses: dict  # lpips, total, ... (floats)
    settings: dict
    static_mask: np.ndarray | None = None
    snapshots: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def codes(self):
        return self.latents["codes"]

    @property
    def clipped(self) -> np.ndarray:
        """The composite clipped to [-1, 1] (float32 [H, W, 3])."""
        return np.clip(np.asarray(self.composite, np.float32), -1.0, 1.0)

    def image_uint8(self) -> np.ndarray:
        """The composite as an 8-bit RGB image [H, W, 3], ready to save (clipped, rounded)."""
        return to_uint8(self.composite)

    def save(self, directory) -> Path:
        """Write latents, masks, settings and images so that editing can continue later."""
        return save_result(self, directory)


def save_latents(path, latents) -> None:
    with atomic_path(Path(path)) as tmp:
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
    with atomic_path(directory, is_dir=True) as tmp:
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


def load_result(directory) -> InversionResult:
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
