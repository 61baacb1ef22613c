"""What an inversion produced (`InversionResult`), and saving and loading it so that editing can continue
in a later session.

A result directory holds
  latents.npz     the latent pytree, flattened to '/'-joined keys ("codes", "codes/b4.conv1", "mask_logits")
  arrays.npz      target, composite, masks, loss history (and static mask), float32; the segment images
                  as `store` says: float32 (the default), float16 (half the size; values about [-1, 1]
                  keep 11 significant bits, far finer than an 8-bit image) or none (not kept: a loaded
                  result then has segment_images None, and what needs them fails with one clear error;
                  they are a function of the latents, editing.render_segments renders them again)
  tuning.npz      for a result of pivotal tuning only: the weight delta of its generator (deltas.py)
  result.json     settings (their "generator": `generator_record`), final losses, timing, format
                  version, how the segment images were stored ("segment_images": float32, float16 or
                  none); for a photo that was aligned first, the alignment (its quad in the photo) and
                  the photo's path, so that an edit can be pasted back
It is written to a temporary sibling and renamed (files.atomic_path), so a crash never leaves a
half-written result, and an existing folder is replaced only with overwrite=True and only if it is a
result this project wrote.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from .checkpoints import loaded_from
from .deltas import DELTA_FILE, load_delta, save_delta
from .errors import ChunkyGANError, ConfigError
from . import paths
from .files import MARKER, atomic_path, published
from .io import to_uint8
from .trees import flatten_tree, unflatten_tree

FORMAT_VERSION = 1
RESULT_KIND = "saved inversion result"
SEGMENT_STORES = ("float32", "float16", "none")  # how save_result keeps the segment images


def check_store(store: str) -> str:
    if store not in SEGMENT_STORES:
        raise ConfigError(f"store must be one of {', '.join(SEGMENT_STORES)} (how the segment images are "
                          f"kept), got {store!r}")
    return store


def generator_record(generator) -> str | None:
    """What a result records as the generator that made it, settings["generator"], so that bin/edit and
    the editor can load it again: "demo" for the demo generator, the absolute path (or bucket URL) of the
    checkpoint it was loaded from, None for a generator made in memory (they then need it given).
    `invert_batch` puts it on every result; results saved before it did may lack it."""
    return loaded_from(generator)


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
    settings["masks"] records where the masks came from (see masks.options.mask_source_record)."""

    target: np.ndarray  # [H, W, 3] in [-1, 1]
    composite: np.ndarray  # [H, W, 3], about [-1, 1], not clipped (see above)
    segment_images: np.ndarray | None  # [n, H, W, 3]; None when loaded from a result saved without them
    masks: np.ndarray  # [n, H, W]
    latents: dict
    loss_history: np.ndarray  # [steps]
    final_losses: dict  # lpips, total, ... (floats)
    settings: dict
    static_mask: np.ndarray | None = None
    snapshots: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0  # the whole inversion call
    compile_seconds: float | None = None  # the first step call's time beyond a steady step
    step_ms: float | None = None  # the steady time per step (None after a single step)
    alignment: dict | None = None  # align.Alignment.to_json() when the photo was aligned first
    photo: str | None = None  # the aligned photo's path (for pasting back), when it was a file
    # pivotal tuning (tuning.py): {"delta": the weight delta (deltas.py), "record": its settings, base
    # generator fingerprint, LPIPS before and after, size}; None for an untuned result. Render a tuned
    # result with deltas.tuned_generator(generator, result.tuning).
    tuning: dict | None = None

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

    def require_segment_images(self, purpose: str) -> np.ndarray:
        """The segment images [n, H, W, 3], or one clear error when this result was saved without them."""
        if self.segment_images is None:
            raise ChunkyGANError(f"{purpose} needs the segment images, and this result was saved without them "
                                 "(store 'none'); render them again from its latents with "
                                 "editing.render_segments(generator, result.latents)")
        return self.segment_images

    def save(self, directory, *, overwrite: bool = False, store: str | None = None) -> Path:
        """Write latents, masks, settings and images so that editing can continue later."""
        return save_result(self, directory, overwrite=overwrite, store=store)


def load_latents(path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as data:
            return unflatten_tree({k: data[k] for k in data.files})
    except (OSError, ValueError) as e:
        raise ChunkyGANError(f"{path}: not a latents file ({e})") from None


def save_result(result, directory, *, overwrite: bool = False, inputs=(), store: str | None = None) -> Path:
    """Write `result` to `directory` (see the module docstring); `inputs` may not be replaced. store: how
    the segment images are kept (SEGMENT_STORES; None: float32, or none for a result without them).
    A gs:// or s3:// directory is published with its marker last (files.atomic_path)."""
    directory = paths.as_path(directory)
    store = check_store(store or ("none" if result.segment_images is None else "float32"))
    arrays = {k: np.asarray(v, np.float32) for k, v in
              dict(target=result.target, composite=result.composite, masks=result.masks,
                   loss_history=result.loss_history, static_mask=result.static_mask).items() if v is not None}
    if store != "none":
        arrays["segment_images"] = np.asarray(result.require_segment_images(f"store={store!r}"), store)
    with atomic_path(directory, is_dir=True, overwrite=overwrite, kind=RESULT_KIND, inputs=inputs) as tmp:
        with open(tmp / "latents.npz", "wb") as f:
            np.savez(f, **flatten_tree(result.latents))
        with open(tmp / "arrays.npz", "wb") as f:
            np.savez(f, **arrays)
        record = {"format_version": FORMAT_VERSION, "segment_images": store, "settings": result.settings,
                  "final_losses": result.final_losses, "seconds": result.seconds,
                  "compile_seconds": result.compile_seconds, "step_ms": result.step_ms}
        if result.alignment is not None:
            record.update(alignment=result.alignment, photo=result.photo)
        if result.tuning is not None:
            tuning_record = result.tuning["record"]
            save_delta(tmp / DELTA_FILE, result.tuning["delta"], base_fingerprint=tuning_record["base_fingerprint"],
                       record=tuning_record, dtype=tuning_record["dtype"])
            record["tuning"] = tuning_record
        (tmp / "result.json").write_text(json.dumps(record, indent=2))
    return directory


def load_result(directory) -> InversionResult:
    """A saved result; on a bucket only a published one (its marker, written last, says complete),
    read through a temporary local copy."""
    if paths.is_remote(directory):
        directory = paths.as_path(directory)
        if not published(directory, RESULT_KIND):
            raise ChunkyGANError(f"{directory}: not a saved inversion result (no complete {MARKER} marker: "
                                 "missing, or its upload did not finish)")
        with paths.local_copy(directory) as local:
            return load_result(local)
    directory = Path(directory)
    try:
        record = json.loads((directory / "result.json").read_text())
        with np.load(directory / "arrays.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, KeyError) as e:
        raise ChunkyGANError(f"{directory}: not a saved inversion result ({e})") from None
    if record.get("format_version") != FORMAT_VERSION:
        raise ChunkyGANError(f"{directory}: result format {record.get('format_version')} is not supported")
    store = record.get("segment_images", "float32")  # results saved before the choice existed: float32
    if store not in SEGMENT_STORES or (store != "none") != ("segment_images" in arrays):
        raise ChunkyGANError(f"{directory}: not a saved inversion result (segment images stored as {store!r}, "
                             f"{'present' if 'segment_images' in arrays else 'absent'} in arrays.npz)")
    segment_images = arrays["segment_images"].astype(np.float32) if store != "none" else None
    return InversionResult(
        target=arrays["target"], composite=arrays["composite"], segment_images=segment_images,
        masks=arrays["masks"], latents=load_latents(directory / "latents.npz"),
        loss_history=arrays["loss_history"], final_losses=record["final_losses"],
        settings=record["settings"], static_mask=arrays.get("static_mask"), seconds=record.get("seconds", 0.0),
        compile_seconds=record.get("compile_seconds"), step_ms=record.get("step_ms"),
        alignment=record.get("alignment"), photo=record.get("photo"), tuning=_load_tuning(directory, record))


def _load_tuning(directory: Path, record: dict) -> dict | None:
    if "tuning" not in record:
        if (directory / DELTA_FILE).exists():
            raise ChunkyGANError(f"{directory}: holds {DELTA_FILE} but its result.json records no tuning")
        return None
    delta, delta_record = load_delta(directory / DELTA_FILE)
    if delta_record.get("base_fingerprint") != record["tuning"].get("base_fingerprint"):
        raise ChunkyGANError(f"{directory}: {DELTA_FILE} and result.json name different base generators")
    return {"delta": delta, "record": delta_record}
