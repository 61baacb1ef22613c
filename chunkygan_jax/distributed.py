"""Dataset inversion over every device of every host, resumable after preemption.

Sharding (used by `inversion.Inverter(mesh=...)`):
  data_mesh()              a 1-D `jax.sharding.Mesh` over all devices with the axis "data"; each process's
                           devices are contiguous, so a process's rows are one contiguous block.
  shard_batch(tree, mesh)  this process's rows [B_local, ...] -> global arrays [B, ...] whose leading
                           axis is split over "data" (`jax.make_array_from_process_local_data`).
  replicate(tree, mesh)    the same value on every device (generator, LPIPS and mask-source params).
  local_rows(tree)         global arrays -> numpy, only the rows this process holds (inverse of shard_batch).
Images never interact (the loss is a sum over images and Adam is elementwise), so the jitted step needs
no communication: B x n segment images go through the generator, each device doing its own rows.

Dataset runner (`invert_dataset`, `bin/invert_dataset`):
  - the image list is every image file under a folder (or matching a glob), sorted by relative path;
    process p of P takes files[p::P] and reads only those;
  - each global batch holds batch_size images, batch_size / P from each process; every process runs the
    same number of batches (short or failed rows are padded with a copy of an image and dropped);
  - the result of `<root>/<rel>` goes to `<output_dir>/results/<rel>/` (the relative path keeps its
    extension, so `a.png` and `a.jpg` never collide), written atomically by the process that owns it:
    projection.png, masks.png, metrics.json and result/ (`results.save_result`: latents, masks, ...);
  - a restart skips images whose result directory is complete and was made with the same settings,
    generator and source file; a crash loses at most the batch in flight;
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
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .errors import ChunkyGANError, ConfigError

DATA_AXIS = "data"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
RESULTS_DIR = "results"
MANIFEST_DIR = "manifest"
RECORD_VERSION = 1


# ------------------------------------------------------------------------------------------ processes
def _multi_host_environment() -> bool:
    """True where `jax.distributed.initialize()` can find its arguments itself: a Cloud TPU VM (TPU
    chips present), or a Slurm / Open MPI launch with more than one task."""
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
        return True
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in os.environ:
        return True
    return "OMPI_MCA_orte_hnp_uri" in os.environ and int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join the multi-process job before any other JAX call.

    With explicit arguments (all three, as on GPU nodes or CPU hosts) they go to
    `jax.distributed.initialize`; without them, the cluster is auto-detected on Cloud TPU (and under
    Slurm / Open MPI), and anywhere else this is a single-process run and nothing happens."""
    given = [coordinator_address, num_processes, process_id]
    if jax.distributed.is_initialized():
        return
    if any(v is not None for v in given):
        if any(v is None for v in given):
            raise ConfigError("--coordinator_address, --num_processes and --process_id go together")
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ConfigError(f"process_id must lie in [0, {num_processes}), got {process_id}")
        if num_processes == 1:
            return
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
    elif _multi_host_environment():
        jax.distributed.initialize()


# ------------------------------------------------------------------------------------------ sharding
def data_mesh(devices=None, axis: str = DATA_AXIS) -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process), ordered by process so that
    each process's rows form one contiguous block of the global batch."""
    devices = list(jax.devices() if devices is None else devices)
    devices.sort(key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), (axis,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(mesh.axis_names[0]))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _is_array(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic, jax.Array))


def shard_batch(tree, mesh: Mesh):
    """This process's rows (numpy, leading axis B_local) -> global jax Arrays with the leading axis
    split over the data axis (global B = B_local x number of processes). B_local must be a multiple of
    this process's device count."""
    sharding = data_sharding(mesh)
    local = len(mesh.local_devices)

    def put(x):
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] % local:
            raise ConfigError(f"a batch of {x.shape[0] if x.ndim else 'a scalar'} rows cannot be split "
                              f"evenly over this process's {local} devices")
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree_util.tree_map(put, tree)


def replicate(tree, mesh: Mesh):
    """Every array leaf of `tree` (a generator, LPIPS, a mask source: any pytree) -> a global array
    holding the same value on every device of the mesh. All processes must pass the same values."""
    sharding = replicated_sharding(mesh)

    def put(x):
        if not _is_array(x):
            return x
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x, x.shape)

    return jax.tree_util.tree_map(put, tree)


def local_rows(tree):
    """Global arrays -> numpy with only the rows this process holds (the inverse of `shard_batch`);
    replicated arrays come back whole. Fully addressable arrays (one process) come back whole."""

    def get(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable or x.ndim == 0:
            return np.asarray(x)
        blocks = {}
        for shard in x.addressable_shards:
            start = shard.index[0].start or 0
            if start not in blocks:
                blocks[start] = np.asarray(shard.data)
        return np.concatenate([blocks[k] for k in sorted(blocks)], axis=0)

    return jax.tree_util.tree_map(get, tree)


def constrain_batch(tree, mesh: Mesh, batch_size: int):
    """Inside jit: leaves whose leading axis is the batch go on the data axis, the rest are replicated
    (keeps latents, optimiser state and history sharded between jitted calls)."""
    data, rep = data_sharding(mesh), replicated_sharding(mesh)
    return jax.tree_util.tree_map(
        lambda x: jax.lax.with_sharding_constraint(x, data if x.ndim and x.shape[0] == batch_size else rep),
        tree)


def _allgather_ints(values) -> np.ndarray:
    """[process_count, len(values)] int32: every process's `values` (one process: no communication)."""
    values = np.asarray(values, np.int32)[None]
    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(values, tiled=True)).reshape(jax.process_count(), -1)


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


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
def generator_fingerprint(generator) -> str:
    """sha256 of a generator's structure (config included) and parameter bytes."""
    leaves, treedef = jax.tree_util.tree_flatten(generator)
    h = hashlib.sha256(str(treedef).encode())
    for leaf in leaves:
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


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


def save_image_result(result, directory, record: dict) -> Path:
    """One image's outputs, all or nothing: projection.png, masks.png, metrics.json (`record`) and
    result/ (latents, masks, settings: `results.load_result` reads it)."""
    from . import io, masks as masks_lib
    from .results import save_result

    directory = Path(directory)
    with io.atomic_path(directory, is_dir=True) as tmp:
        save_result(result, tmp / "result")
        io.save_png(tmp / "projection.png", io.to_uint8(result.composite))
        io.save_png(tmp / "masks.png", masks_lib.color_code(result.masks))
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
    from . import io

    merged = read_manifest(output_dir)
    path = Path(output_dir) / "manifest.jsonl"
    with io.atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(merged[k]) + "\n" for k in sorted(merged)))
    return path


# ------------------------------------------------------------------------------------------ progress
class Progress:
    """One line per batch on stderr (process 0 only): images done, images/s, ETA."""

    def __init__(self, total: int, enabled: bool, stream=None):
        self.total, self.enabled = total, enabled and jax.process_index() == 0
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()

    def update(self, batch: int, batches: int, done: int, extra: str = "") -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "--:--:--"
        print(f"[batch {batch}/{batches}] {done}/{self.total} images, {rate:.2f} img/s, ETA {eta_s}"
              + (f", {extra}" if extra else ""), file=self.stream, flush=True)


# ------------------------------------------------------------------------------------------ the runner
@dataclasses.dataclass
class DatasetSummary:
    """Counts for the whole job (all processes) except `local_*`, which are this process's."""

    total: int  # image files found
    skipped: int  # already complete from an earlier run
    pending: int  # to do at the start of this run
    batches: int  # global batches run now
    local_done: int
    local_failed: int
    seconds: float
    complete: bool  # False when max_batches stopped the run early

    @property
    def local_images_per_second(self) -> float:
        return self.local_done / self.seconds if self.seconds > 0 else 0.0


def _load_rows(paths, root: Path, resolution: int, crop: str, alpha: str):
    """Read this batch's files; unreadable ones become failure records instead of stopping the job."""
    from . import io

    images, failures = {}, {}
    for rel in paths:
        try:
            images[rel] = io.load_image(root / rel, resolution, crop=crop, alpha=alpha)
        except ChunkyGANError as e:
            failures[rel] = str(e)
        except Exception as e:  # noqa: BLE001 - a decoder's own error (e.g. a decompression bomb)
            failures[rel] = f"{root / rel}: {type(e).__name__}: {e}"
    return images, failures


def _failure_record(rel: str, reason: str) -> dict:
    return {"version": RECORD_VERSION, "image": rel, "status": "failed", "error": reason,
            "process": jax.process_index(), "time": time.time()}


def invert_dataset(images, output_dir, generator, *, segments=8, space=None, steps=500, batch_size=None,
                   lr=0.1, lambda_reg=1.0, l2_weight=0.0, mean_latent_weight=0.0, lpips_net="vgg",
                   lpips_resolution=256, masks=None, seed=0, noise_mode="const", dtype="float32",
                   crop="none", alpha="refuse", mesh: Mesh | None = None, inverter=None,
                   max_batches: int | None = None, progress: bool = True, log=None) -> DatasetSummary:
    """Invert every image of a folder (or glob) into `output_dir`, over all devices of all processes.

    Call `initialize()` first in a multi-process job; every process calls this with the same
    arguments. batch_size: images per global step (default one per device); it must be a multiple of
    the device count. masks: None/"logits" or "layout" (per-image masks are not supported here) or a
    mask source. max_batches stops after that many batches (a time box; a rerun continues). `inverter`
    (built with the same settings and mesh) saves a compilation when calling this repeatedly."""
    from . import inversion, masks as masks_lib
    from .inversion import InversionResult, InversionSettings, Inverter

    t_start = time.perf_counter()
    generator = inversion._resolve_generator(generator)
    if inverter is not None:  # its mesh decides (None: one device, one process)
        if mesh is not None and inverter.mesh is not mesh:
            raise ConfigError("the given inverter was built for another mesh")
        mesh = inverter.mesh
    elif mesh is None:
        mesh = data_mesh()
    if mesh is None and jax.process_count() > 1:
        raise ConfigError("a multi-process run needs an inverter built with a mesh (data_mesh())")
    n_devices, n_local = (mesh.devices.size, len(mesh.local_devices)) if mesh is not None else (1, 1)
    batch_size = n_devices if batch_size in (None, 0) else int(batch_size)
    if batch_size < 1 or batch_size % n_devices:
        raise ConfigError(f"batch_size {batch_size} must be a positive multiple of the {n_devices} devices")
    local_batch = batch_size // n_devices * n_local
    if max_batches is not None and max_batches < 0:
        raise ConfigError(f"max_batches must be >= 0, got {max_batches}")
    settings = InversionSettings(segments=segments, space=space or generator.default_space, steps=steps, lr=lr,
                                 lambda_reg=lambda_reg, l2_weight=l2_weight,
                                 mean_latent_weight=mean_latent_weight, lpips_net=lpips_net,
                                 lpips_resolution=lpips_resolution, seed=seed, noise_mode=noise_mode,
                                 dtype=dtype).validate(generator)
    if masks is not None and not isinstance(masks, str) and not (hasattr(masks, "init") and hasattr(masks, "masks")):
        raise ConfigError("invert_dataset takes masks=None, 'logits', 'layout' or a mask source "
                          "(per-image mask arrays are not supported)")
    masks_name = (masks or "logits") if isinstance(masks, str) or masks is None else type(masks).__name__
    if inverter is None:
        source = masks_lib.make_mask_source(masks, settings.segments, generator.resolution, seed=seed)
        inverter = Inverter(generator, settings, source, mesh=mesh)
    elif inverter.settings != settings:
        raise ConfigError("the given inverter was built for other settings")

    output_dir = Path(output_dir)
    root, files = list_images(images, exclude=[output_dir])
    if jax.process_count() > 1:  # every process must see the same list, or the shares would overlap
        digest = hashlib.sha256("\n".join(files).encode()).digest()
        seen = _allgather_ints(np.frombuffer(digest[:16], np.int32))
        if not np.all(seen == seen[0]):
            raise ConfigError(f"the processes see different image lists under {images}; every host "
                              "needs the same files (a shared file system)")
    if not files:
        raise ConfigError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found in {images}")
    expect = {"settings": _json_safe(settings.to_dict()), "generator": generator_fingerprint(generator),
              "masks": masks_name, "crop": crop, "alpha": alpha}
    mine = process_share(files)
    pending = [rel for rel in mine if not _result_complete(output_dir_for(output_dir, rel),
                                                          {**expect, "image": rel})]
    _remove_stale_temporaries(output_dir, pending)
    counts = _allgather_ints([len(mine) - len(pending), len(pending)])
    skipped, total_pending = int(counts[:, 0].sum()), int(counts[:, 1].sum())
    batches = math.ceil(int(counts[:, 1].max()) / local_batch)
    if max_batches is not None:
        batches_now = min(batches, max_batches)
    else:
        batches_now = batches
    manifest = Manifest(output_dir, jax.process_index())
    bar = Progress(total_pending, progress, log)
    if bar.enabled:
        print(f"{len(files)} images ({skipped} already done), {total_pending} to invert in {batches} batches "
              f"of {batch_size} on {n_devices} devices / {jax.process_count()} processes", file=bar.stream)

    done = failed = 0
    for k in range(batches_now):
        rows = pending[k * local_batch:(k + 1) * local_batch]
        loaded, failures = _load_rows(rows, root, generator.resolution, crop, alpha)
        t0 = time.perf_counter()
        names = list(loaded)
        if not names and jax.process_count() == 1:  # nothing readable: no need to step in lockstep
            manifest.append([_failure_record(rel, reason) for rel, reason in failures.items()])
            failed += len(failures)
            continue
        filler = next(iter(loaded.values()), None)
        if filler is None:
            filler = np.zeros((generator.resolution, generator.resolution, 3), np.float32)
        targets = np.stack([loaded[n] for n in names] + [filler] * (local_batch - len(names)))
        batch = inverter.make_batch(targets)
        state = inverter.start(inverter.initial_latents(local_batch), local_batch)
        state = inverter.advance(state, batch, settings.steps)
        imgs, seg_masks, out, parts = inverter.evaluate(state.latents, batch)
        latents = local_rows(state.latents)
        seconds = time.perf_counter() - t0
        records = []
        for i, rel in enumerate(names):
            losses = {key: float(v[i]) for key, v in parts.items()}
            if not all(math.isfinite(v) for v in losses.values()):
                failures[rel] = "the inversion diverged (non-finite loss); lower lr or the loss weights"
                continue
            result = InversionResult(
                target=targets[i], composite=out[i], segment_images=imgs[i], masks=seg_masks[i],
                latents=jax.tree_util.tree_map(lambda x: x[i], latents), loss_history=state.history[i].copy(),
                final_losses=losses, settings=settings.to_dict(), seconds=seconds)
            record = {"version": RECORD_VERSION, "image": rel, "status": "done", **expect,
                      "lpips": losses["lpips"], "total": losses["total"], "seconds": seconds,
                      "batch_images": batch_size, "process": jax.process_index(), "time": time.time()}
            save_image_result(result, output_dir_for(output_dir, rel), record)
            records.append({k_: v for k_, v in record.items() if k_ not in expect}
                           | {"output": output_dir_for(output_dir, rel).relative_to(output_dir).as_posix()})
        records += [_failure_record(rel, reason) for rel, reason in failures.items()]
        manifest.append(records)
        done += len(names) - sum(1 for r in failures if r in loaded)
        failed += len(failures)
        lp = [r["lpips"] for r in records if r["status"] == "done"]
        bar.update(k + 1, batches_now, min((k + 1) * batch_size, total_pending),
                   f"lpips {np.mean(lp):.4f}" if lp else "")
    _barrier("chunkygan_invert_dataset_end")
    if jax.process_index() == 0:
        write_merged_manifest(output_dir)
    return DatasetSummary(total=len(files), skipped=skipped, pending=total_pending, batches=batches_now,
                          local_done=done, local_failed=failed, seconds=time.perf_counter() - t_start,
                          complete=batches_now == batches)
