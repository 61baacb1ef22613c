"""Dataset inversion over every device of every host, resumable after preemption (`invert_dataset`,
`bin/invert_dataset`; the mesh and process helpers are in sharding.py):
  - the image list is every image file under a folder (or matching a glob), sorted by relative path;
    process p of P takes files[p::P] and reads only those;
  - each process inverts its own share on its own devices, batch_size images per step (a data mesh over
    its local devices); processes never wait for each other between batches, and an image's compiled
    program is the same whatever the number of processes (short rows are padded with a copy of an image
    and dropped);
  - the result of `<root>/<rel>` goes to `<output_dir>/results/<rel>/` (the relative path keeps its
    extension, so `a.png` and `a.jpg` never collide), written atomically by the process that owns it:
    projection.png, masks.png, metrics.json and result/ (`results.save_result`: latents, masks, ...; the
    segment images as `store` says: float32, float16 or none);
  - a batch's outputs are written on a background thread while the next batch is computed (one writer,
    at most one batch waiting for it, so memory stays bounded); the job waits for it before the merged
    manifest and before returning, also when it stops on an error;
  - a restart skips images whose result directory is complete and was made with the same settings,
    generator and source file; a crash loses at most the two batches in flight (one being computed,
    one being written);
  - `<output_dir>/manifest/process-XXXXX.jsonl` gets one JSON line per image and attempt (status "done"
    with lpips/total/seconds, or "failed" with the reason); `read_manifest` merges them (latest record
    per image wins) and process 0 writes the merged view to `<output_dir>/manifest.jsonl` at the end.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh

from . import io
from .demo import resolve_generator
from .errors import ChunkyGANError, ConfigError
from .files import atomic_path, check_folder
from .generators.protocol import fingerprint as generator_fingerprint
from .inversion import InversionSettings, Inverter, check_memory
from .mask_sources import make_mask_source, mask_source_record
from .progress import Progress
from .report import masks_sheet
from .results import InversionResult, check_store, save_result
from .sharding import allgather_ints, barrier, data_mesh, local_rows
from .tuning import as_tuning, tune_results

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
RESULTS_DIR = "results"
MANIFEST_DIR = "manifest"
RECORD_VERSION = 1
IMAGE_RESULT_KIND = "dataset image result"


# ------------------------------------------------------------------------------------------ the file list
def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def list_images(images, *, exclude=()) -> tuple[Path, list[str]]:
    """(root, sorted relative posix paths) of the image files in a folder (recursively) or matching a
    glob (`**` recurses). Only files with an image extension count; hidden files and folders (a leading
    '.') and anything under `exclude` (e.g. the output folder) are left out."""
    spec = str(images)
    excluded = [Path(e).resolve() for e in exclude]
    if Path(spec).is_dir():
        root = Path(spec)
        found = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [Path(dirpath) / f for f in filenames]
    elif _has_magic(spec):
        parts = Path(spec).parts
        fixed = next((i for i, p in enumerate(parts) if _has_magic(p)), len(parts))
        root = Path(*parts[:fixed]) if fixed else Path(".")
        found = [Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file()]
    elif Path(spec).is_file():
        root, found = Path(spec).parent, [Path(spec)]
    else:
        raise ConfigError(f"{spec}: no such folder or file (give a folder of images or a glob such as "
                          "'photos/**/*.png')")
    rels = set()
    for path in found:
        rel = path.relative_to(root)
        if path.suffix.lower() not in IMAGE_EXTENSIONS or any(p.startswith(".") for p in rel.parts):
            continue
        resolved = path.resolve()
        if any(resolved == e or e in resolved.parents for e in excluded):
            continue
        rels.add(rel.as_posix())
    return root, sorted(rels)


def process_share(items, process_index: int | None = None, process_count: int | None = None) -> list:
    """The items process `process_index` of `process_count` owns: items[index::count] (every item goes
    to exactly one process; deterministic for a given sorted list)."""
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    return list(items)[index::count]


def output_dir_for(output_dir, rel: str) -> Path:
    """Where the result of input `<root>/<rel>` goes: `<output_dir>/results/<rel>/` (rel keeps its
    extension, so distinct inputs always get distinct directories)."""
    return Path(output_dir) / RESULTS_DIR / Path(rel)


# ------------------------------------------------------------------------------------------ records
def _json_safe(x):
    return json.loads(json.dumps(x, default=str))


def _result_complete(directory: Path, expect: dict) -> bool:
    """A result directory is complete (all files there, readable) and was made for `expect`."""
    try:
        record = json.loads((directory / "metrics.json").read_text())
        if record.get("version") != RECORD_VERSION or record.get("status") != "done":
            return False
        if any(record.get(k) != v for k, v in expect.items()):
            return False
        saved = json.loads((directory / "result" / "result.json").read_text())
        if saved.get("settings") != expect["settings"]:
            return False
        for name in ("latents.npz", "arrays.npz"):
            with np.load(directory / "result" / name, allow_pickle=False) as data:
                if not data.files:
                    return False
        return all((directory / name).is_file() for name in ("projection.png", "masks.png"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _remove_stale_temporaries(output_dir: Path, rels) -> None:
    """Temporary siblings (`.<name>.<random>`) left by a crash while writing one of `rels`."""
    by_parent: dict[Path, set] = {}
    for rel in rels:
        d = output_dir_for(output_dir, rel)
        by_parent.setdefault(d.parent, set()).add(d.name)
    for parent, names in by_parent.items():
        if not parent.is_dir():
            continue
        for entry in os.scandir(parent):
            if entry.name.startswith(".") and entry.name[1:].rsplit(".", 1)[0] in names:
                shutil.rmtree(entry.path, ignore_errors=True) if entry.is_dir() else os.unlink(entry.path)


def save_image_result(result, directory, record: dict, *, store: str = "float32") -> Path:
    """One image's outputs, all or nothing: projection.png, masks.png, metrics.json (`record`) and
    result/ (latents, masks, settings, the segment images as `store` says: `results.load_result` reads
    it)."""
    directory = Path(directory)
    # The job owns its results: a stale one is replaced, but never a folder someone else wrote there.
    with atomic_path(directory, is_dir=True, overwrite=True, kind=IMAGE_RESULT_KIND) as tmp:
        save_result(result, tmp / "result", store=store)
        io.save_png(tmp / "projection.png", io.to_uint8(result.composite))
        io.save_png(tmp / "masks.png", masks_sheet(result.masks))
        (tmp / "metrics.json").write_text(json.dumps(record, indent=2))
    return directory


class Manifest:
    """Append-only JSON lines, one file per process; each batch's records are flushed and fsynced."""

    def __init__(self, output_dir, process_index: int):
        self.path = Path(output_dir) / MANIFEST_DIR / f"process-{process_index:05d}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, records) -> None:
        if not records:
            return
        with open(self.path, "a") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_manifest(output_dir) -> dict[str, dict]:
    """The merged view: image (relative path) -> its latest record over every process's file. Lines
    cut short by a crash are ignored."""
    records = []
    for path in sorted((Path(output_dir) / MANIFEST_DIR).glob("process-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r, dict) and "image" in r:
                records.append(r)
    records.sort(key=lambda r: r.get("time", 0.0))  # stable: a file's own order breaks ties
    return {r["image"]: r for r in records}


def write_merged_manifest(output_dir) -> Path:
    merged = read_manifest(output_dir)
    path = Path(output_dir) / "manifest.jsonl"
    with atomic_path(path, overwrite=True) as tmp:  # the job's own merged view, rewritten each run
        tmp.write_text("".join(json.dumps(merged[k]) + "\n" for k in sorted(merged)))
    return path


# ------------------------------------------------------------------------------------------ the runner
@dataclasses.dataclass
class DatasetSummary:
    """Counts for the whole job (all processes) except `local_*`, which are this process's."""

    total: int  # image files found
    skipped: int  # already complete from an earlier run
    pending: int  # to do at the start of this run
    batches: int  # batches this process ran now
    local_done: int
    local_failed: int
    seconds: float
    complete: bool  # False when max_batches stopped the run early
    inverted: int = 0  # images inverted in this run, all processes
    failed: int = 0  # images that failed in this run, all processes

    @property
    def local_images_per_second(self) -> float:
        return self.local_done / self.seconds if self.seconds > 0 else 0.0


def _load_rows(paths, root: Path, resolution: int, crop: str, alpha: str, upscale: bool = False):
    """Read this batch's files; unreadable ones become failure records instead of stopping the job."""
    images, failures = {}, {}
    for rel in paths:
        try:
            images[rel] = io.load_image(root / rel, resolution, crop=crop, alpha=alpha, upscale=upscale)
        except ChunkyGANError as e:
            failures[rel] = str(e)
        except Exception as e:  # noqa: BLE001 - a decoder's own error (e.g. a decompression bomb)
            failures[rel] = f"{root / rel}: {type(e).__name__}: {e}"
    return images, failures


def _failure_record(rel: str, reason: str) -> dict:
    return {"version": RECORD_VERSION, "image": rel, "status": "failed", "error": reason,
            "process": jax.process_index(), "time": time.time()}


def _write_batch(output_dir: Path, manifest: Manifest, expect: dict, store: str, results, failures) -> list:
    """One batch's outputs (on the writer thread): each image's folder, then the batch's manifest lines,
    one per image: "done", or "failed" with the reason (its file, its inversion or its folder). Returns
    the lines."""
    failures = dict(failures)
    records = []
    for rel, result, record in results:
        directory = output_dir_for(output_dir, rel)
        try:
            save_image_result(result, directory, record, store=store)
        except ChunkyGANError as e:  # e.g. a folder of someone else's files in the way
            failures[rel] = str(e)
            continue
        records.append({k: v for k, v in record.items() if k not in expect}
                       | {"output": directory.relative_to(output_dir).as_posix()})
    records += [_failure_record(rel, reason) for rel, reason in failures.items()]
    manifest.append(records)
    return records


def invert_dataset(images, output_dir, generator=None, *, segments=8, space=None, steps=500, batch_size=None,
                   lr=0.1, lambda_reg=None, l2_weight=0.0, mean_latent_weight=0.0, lpips_net="vgg",
                   lpips_resolution=256, masks=None, segmenter=None, seed=0, noise_mode="const", dtype="float32",
                   crop="none", alpha="refuse", upscale=False, mesh: Mesh | None = None, inverter=None,
                   max_batches: int | None = None, progress: bool = True, log=None,
                   store: str = "float32", tune=None) -> DatasetSummary:
    """Invert every image of a folder (or glob) into `output_dir`, each process on its own devices.

    Call `initialize()` first in a multi-process job; every process calls this with the same
    arguments. generator: as in invert() (None: the demo generator); lambda_reg None takes the
    generator's default, as invert() does. batch_size: images per step on each process (default one per
    local device), a multiple of this process's device count. mesh: a data mesh over this process's
    devices (default `data_mesh(jax.local_devices())`). masks, segmenter: as in invert() (None: the
    generator's default, G^S with X^S learned per image) except per-image mask arrays, which are not
    supported here. upscale: as in invert() (images under a quarter of the resolution are recorded as
    failed without it). max_batches stops after that many batches (a time box; a
    rerun continues). `inverter` (built with the same settings and mesh) saves a compilation when
    calling this repeatedly. store: how each result keeps its segment images, "float32", "float16" (half
    the size) or "none" (composite, masks and latents only; results.save_result); metrics.json and the
    manifest record it. A rerun with another store leaves the images already done as they are.
    tune: pivotal tuning of each batch after its inversion (as invert(tune=): steps or TuningSettings),
    all images of the batch in one program on the same devices; each result keeps its own weight delta. The
    tuning settings are part of what a rerun checks: results made without them (or with others) are
    done again."""
    t_start = time.perf_counter()
    output_dir = check_folder(output_dir)  # before any compilation
    store = check_store(store)
    tune = as_tuning(tune)
    generator = resolve_generator(generator)
    if inverter is not None:  # its mesh decides (None: one device)
        if mesh is not None and inverter.mesh is not mesh:
            raise ConfigError("the given inverter was built for another mesh")
        mesh = inverter.mesh
    elif mesh is None:
        mesh = data_mesh(jax.local_devices())
    if mesh is not None and any(d.process_index != jax.process_index() for d in mesh.devices.flat):
        raise ConfigError("invert_dataset runs each process on its own devices: pass a mesh of this "
                          "process's devices (data_mesh(jax.local_devices()))")
    n_local = mesh.devices.size if mesh is not None else 1
    batch_size = n_local if batch_size in (None, 0) else int(batch_size)
    if batch_size < 1 or batch_size % n_local:
        raise ConfigError(f"batch_size {batch_size} must be a positive multiple of this process's "
                          f"{n_local} devices")
    if max_batches is not None and max_batches < 0:
        raise ConfigError(f"max_batches must be >= 0, got {max_batches}")
    if lambda_reg is None:  # the generator's calibrated value, as invert() takes it
        lambda_reg = getattr(generator, "default_lambda_reg", 1.0)
    settings = InversionSettings(segments=segments, space=space or generator.default_space, steps=steps, lr=lr,
                                 lambda_reg=lambda_reg, l2_weight=l2_weight,
                                 mean_latent_weight=mean_latent_weight, lpips_net=lpips_net,
                                 lpips_resolution=lpips_resolution, seed=seed, noise_mode=noise_mode,
                                 dtype=dtype).validate(generator)
    check_memory(generator, settings, batch_size // n_local)  # before any compilation
    if masks is not None and not isinstance(masks, str) and not (hasattr(masks, "init") and hasattr(masks, "masks")):
        raise ConfigError("invert_dataset takes masks=None, 'segmenter', 'logits', 'layout' or a mask source "
                          "(per-image mask arrays are not supported)")
    given = inverter
    if inverter is None:
        source = make_mask_source(masks, settings.segments, generator.resolution, seed=seed, generator=generator,
                                  segmenter=segmenter)
        inverter = Inverter(generator, settings, source, mesh=mesh)
    elif inverter.settings != settings:
        raise ConfigError("the given inverter was built for other settings")
    masks_record = mask_source_record(inverter.mask_source if given is not None and masks is None else masks,
                                      inverter.mask_source,
                                      generator, settings.segments, segmenter=segmenter)

    output_dir = Path(output_dir)
    root, files = list_images(images, exclude=[output_dir])
    if jax.process_count() > 1:  # every process must see the same list, or the shares would overlap
        digest = hashlib.sha256("\n".join(files).encode()).digest()
        seen = allgather_ints(np.frombuffer(digest[:16], np.int32))
        if not np.all(seen == seen[0]):
            raise ConfigError(f"the processes see different image lists under {images}; every host "
                              "needs the same files (a shared file system)")
    if not files:
        raise ConfigError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found in {images}")
    full_settings = {**settings.to_dict(), "masks": masks_record}  # what every result records
    expect = {"settings": _json_safe(full_settings), "generator": generator_fingerprint(generator),
              "masks": masks_record, "crop": crop, "alpha": alpha}
    # tuning changes a result: a rerun redoes results made with other tuning settings, or none
    expect["tuning"] = None if tune is None else _json_safe(tune.to_dict())
    mine = process_share(files)
    pending = [rel for rel in mine if not _result_complete(output_dir_for(output_dir, rel),
                                                          {**expect, "image": rel})]
    _remove_stale_temporaries(output_dir, pending)
    counts = allgather_ints([len(mine) - len(pending), len(pending)])
    skipped, total_pending = int(counts[:, 0].sum()), int(counts[:, 1].sum())
    batches = math.ceil(len(pending) / batch_size)
    batches_now = batches if max_batches is None else min(batches, max_batches)
    manifest = Manifest(output_dir, jax.process_index())
    bar = Progress(len(pending), unit="images", bar=False, enabled=progress and jax.process_index() == 0,
                   stream=log)
    if bar.enabled:
        print(f"{len(files)} images ({skipped} already done), {total_pending} to invert on "
              f"{jax.process_count()} process(es); this one: {len(pending)} in {batches} batches of "
              f"{batch_size} on {n_local} device(s)", file=bar.stream)

    done = failed = 0
    in_flight = None  # the writer's work on the previous batch: (future, batch index)

    def collect():  # wait for the previous batch's outputs; count them and report progress
        nonlocal done, failed, in_flight
        future, k = in_flight
        in_flight = None
        records = future.result()  # an error that stopped the writer stops the job here
        finished = [r for r in records if r["status"] == "done"]
        done, failed = done + len(finished), failed + len(records) - len(finished)
        lp = [r["lpips"] for r in finished]
        bar.update(min((k + 1) * batch_size, len(pending)), f"lpips {np.mean(lp):.4f}" if lp else "",
                   prefix=f"[batch {k + 1}/{batches_now}] ")

    # Leaving the block waits for the batch in flight, also when the loop stops on an error.
    with ThreadPoolExecutor(1, thread_name_prefix="chunkygan-dataset-writer") as writer:
        for k in range(batches_now):
            rows = pending[k * batch_size:(k + 1) * batch_size]
            loaded, failures = _load_rows(rows, root, generator.resolution, crop, alpha, upscale)
            t0 = time.perf_counter()
            names = list(loaded)
            results = []
            if names:
                filler = loaded[names[-1]]
                targets = np.stack([loaded[n] for n in names] + [filler] * (batch_size - len(names)))
                batch = inverter.make_batch(targets)
                state = inverter.start(inverter.initial_latents(batch_size, targets=targets), batch_size)
                state = inverter.advance(state, batch, settings.steps)
                imgs, seg_masks, out, parts = inverter.evaluate(state.latents, batch)  # host arrays
                latents = local_rows(state.latents)
                seconds = time.perf_counter() - t0
                for i, rel in enumerate(names):
                    losses = {key: float(v[i]) for key, v in parts.items()}
                    if not all(math.isfinite(v) for v in losses.values()):
                        failures[rel] = "the inversion diverged (non-finite loss); lower lr or the loss weights"
                        continue
                    result = InversionResult(
                        target=targets[i], composite=out[i], segment_images=imgs[i], masks=seg_masks[i],
                        latents=jax.tree_util.tree_map(lambda x: x[i], latents),
                        loss_history=state.history[i].copy(), final_losses=losses, settings=dict(full_settings),
                        seconds=seconds)
                    record = {"version": RECORD_VERSION, "image": rel, "status": "done", **expect,
                              "lpips": losses["lpips"], "total": losses["total"], "seconds": seconds,
                              "batch_images": batch_size, "store": store, "process": jax.process_index(),
                              "time": time.time()}
                    results.append((rel, result, record))
                if tune is not None and results:  # the batch's real images, tuned together
                    tuned = tune_results([r for _, r, _ in results], generator, tune, lpips=inverter.lpips,
                                         mesh=inverter.mesh)
                    seconds = time.perf_counter() - t0
                    for (rel, _, record), r in zip(results, tuned):
                        t = r.tuning["record"]
                        record.update(lpips=t["lpips_after"], lpips_before_tuning=t["lpips_before"],
                                      tuning_steps=t["steps_run"], delta_bytes=t["delta_bytes"], seconds=seconds)
                        r.seconds = seconds
                    results = [(rel, r, record) for (rel, _, record), r in zip(results, tuned)]
            if in_flight is not None:
                collect()  # at most one batch waits for the writer
            in_flight = (writer.submit(_write_batch, output_dir, manifest, expect, store, results, failures), k)
        if in_flight is not None:
            collect()
    barrier("chunkygan_invert_dataset_end")
    totals = allgather_ints([done, failed, int(batches_now == batches)])
    if jax.process_index() == 0:
        write_merged_manifest(output_dir)
    return DatasetSummary(total=len(files), skipped=skipped, pending=total_pending, batches=batches_now,
                          local_done=done, local_failed=failed, seconds=time.perf_counter() - t_start,
                          complete=bool(totals[:, 2].all()), inverted=int(totals[:, 0].sum()),
                          failed=int(totals[:, 1].sum()))
