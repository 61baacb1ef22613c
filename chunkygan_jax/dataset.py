"""Dataset inversion over every device of every host, resumable after preemption (`invert_dataset`,
`bin/invert_dataset`; the mesh and process helpers are in sharding.py):
  - the image list is every image file under a folder (or matching a glob), local or on a gs:// or
    s3:// bucket (paths.py), sorted by relative path; process p of P takes files[p::P] and reads only
    those, on grain threads that read and decode ahead of the compute (read_threads);
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
    per image wins) and process 0 writes the merged view to `<output_dir>/manifest.jsonl` at the end;
    on a bucket each batch's lines are one new object (objects cannot be appended to), and a result is
    trusted only when its marker, uploaded last, says complete (files.py);
  - SIGTERM (preemption) lets the batch being computed finish and be written, then the run stops
    (summary.preempted; bin/invert_dataset exits with status 75).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import hashlib
import json
import math
import os
import posixpath
import shutil
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from . import io, paths
from .align import as_mode, photo_mode
from .demo import resolve_generator
from .errors import ChunkyGANError, ConfigError
from .files import MARKER, atomic_path, check_folder, published
from .generators.protocol import bind_label
from .generators.protocol import fingerprint as generator_fingerprint
from .inversion import Inverter, as_settings, check_memory
from .masks.options import as_mask_settings, make_mask_source, mask_source_record
from .progress import Progress
from .report import masks_sheet
from .results import InversionResult, check_store, generator_record, save_result
from .sharding import allgather_ints, barrier, data_mesh, local_rows
from .tuning import as_tuning, tune_results

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
RESULTS_DIR = "results"
MANIFEST_DIR = "manifest"
RECORD_VERSION = 1
IMAGE_RESULT_KIND = "dataset image result"
REMOTE_CHECK_THREADS = 32  # results on a bucket checked at once when a run starts


# ------------------------------------------------------------------------------------------ the file list
def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def list_images(images, *, exclude=()) -> tuple[Path, list[str]]:
    """(root, sorted relative posix paths) of the image files in a folder (recursively) or matching a
    glob (`**` recurses), local or on a bucket (then root is a URL). Only files with an image extension
    count; hidden files and folders (a leading '.') and anything under `exclude` (e.g. the output
    folder) are left out."""
    if paths.is_remote(images):
        return _list_remote(paths.as_path(images), exclude)
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


def _list_remote(spec: str, exclude) -> tuple[str, list[str]]:
    if _has_magic(spec):
        parts = spec.split("/")
        fixed = next(i for i, p in enumerate(parts) if _has_magic(p))
        root = "/".join(parts[:fixed])
        found = paths.glob(spec)
    elif paths.isdir(spec):
        root, found = spec, [paths.join(spec, rel) for rel in paths.find(spec)]
    elif paths.isfile(spec):
        root, found = paths.parent(spec), [spec]
    else:
        raise ConfigError(f"{spec}: no such prefix or object (give a folder of images or a glob such as "
                          "'gs://bucket/photos/**/*.png')")
    rels = set()
    for url in found:
        rel = paths.relative(url, root)
        if (posixpath.splitext(rel)[1].lower() not in IMAGE_EXTENSIONS
                or any(p.startswith(".") for p in rel.split("/")) or any(paths.is_under(url, e) for e in exclude)):
            continue
        rels.add(rel)
    return root, sorted(rels)


def process_share(items, process_index: int | None = None, process_count: int | None = None) -> list:
    """The items process `process_index` of `process_count` owns: items[index::count] (every item goes
    to exactly one process; deterministic for a given sorted list)."""
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    return list(items)[index::count]


def output_dir_for(output_dir, rel: str) -> Path:
    """Where the result of input `<root>/<rel>` goes: `<output_dir>/results/<rel>/` (rel keeps its
    extension, so distinct inputs always get distinct directories); a URL on a bucket."""
    return paths.join(output_dir, RESULTS_DIR, rel)


# ------------------------------------------------------------------------------------------ records
def _json_safe(x):
    return json.loads(json.dumps(x, default=str))


def _job_settings(recorded: dict) -> dict:
    """A saved result's settings less what is not a setting of the job: the photo's mode (grey or not)
    and where the generator was loaded from (its identity is expect["generator"])."""
    return {k: v for k, v in recorded.items() if k not in ("photo_mode", "generator")}


def _result_complete(directory, expect: dict) -> bool:
    """A result directory is complete (all files there, readable) and was made for `expect`. On a
    bucket, its marker (written after every other object) says complete and names the files; the
    arrays are not downloaded to check them."""
    if paths.is_remote(directory):
        return _remote_result_complete(directory, expect)
    try:
        record = json.loads((directory / "metrics.json").read_text())
        if record.get("version") != RECORD_VERSION or record.get("status") != "done":
            return False
        if any(record.get(k) != v for k, v in expect.items()):
            return False
        saved = json.loads((directory / "result" / "result.json").read_text())
        if _job_settings(saved["settings"]) != expect["settings"]:
            return False
        for name in ("latents.npz", "arrays.npz"):
            with np.load(directory / "result" / name, allow_pickle=False) as data:
                if not data.files:
                    return False
        return all((directory / name).is_file() for name in ("projection.png", "masks.png"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _remote_result_complete(directory: str, expect: dict) -> bool:
    try:
        if not published(directory, IMAGE_RESULT_KIND):
            return False
        listed = set(json.loads(paths.read_bytes(paths.join(directory, MARKER)))["entries"])
        if not {"metrics.json", "projection.png", "masks.png", "result"} <= listed:
            return False
        record = json.loads(paths.read_bytes(paths.join(directory, "metrics.json")))
        if record.get("version") != RECORD_VERSION or record.get("status") != "done":
            return False
        if any(record.get(k) != v for k, v in expect.items()):
            return False
        saved = json.loads(paths.read_bytes(paths.join(directory, "result", "result.json")))
        return _job_settings(saved["settings"]) == expect["settings"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _remove_stale_temporaries(output_dir, rels) -> None:
    """Temporary siblings (`.<name>.<random>`) left by a crash while writing one of `rels` (local only:
    on a bucket nothing is staged beside the result)."""
    if paths.is_remote(output_dir):
        return
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
    # The job owns its results: a stale one is replaced, but never a folder someone else wrote there.
    with atomic_path(directory, is_dir=True, overwrite=True, kind=IMAGE_RESULT_KIND) as tmp:
        save_result(result, tmp / "result", store=store)
        io.save_png(tmp / "projection.png", as_mode(io.to_uint8(result.composite),  # a grey photo's in grey
                                                     result.settings.get("photo_mode", "rgb")))
        io.save_png(tmp / "masks.png", masks_sheet(result.masks))
        (tmp / "metrics.json").write_text(json.dumps(record, indent=2))
    return directory


class Manifest:
    """Append-only JSON lines, one file per process; each batch's records are flushed and fsynced. On a
    bucket (objects cannot be appended to) each batch's lines are one new object,
    `process-XXXXX-<run>-<batch>.jsonl`."""

    def __init__(self, output_dir, process_index: int):
        self.remote = paths.is_remote(output_dir)
        if self.remote:
            self.prefix = paths.join(output_dir, MANIFEST_DIR, f"process-{process_index:05d}-{uuid.uuid4().hex[:8]}")
            self.batches = 0
            return
        self.path = Path(output_dir) / MANIFEST_DIR / f"process-{process_index:05d}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, records) -> None:
        if not records:
            return
        if self.remote:
            paths.write_bytes(f"{self.prefix}-{self.batches:06d}.jsonl",
                              "".join(json.dumps(r) + "\n" for r in records).encode())
            self.batches += 1
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
    folder = paths.join(output_dir, MANIFEST_DIR)
    names = [n for n in paths.listdir(folder) if n.startswith("process-") and n.endswith(".jsonl")]
    for name in names:
        for line in paths.read_bytes(paths.join(folder, name)).decode(errors="replace").splitlines():
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
    path = paths.join(output_dir, "manifest.jsonl")
    with atomic_path(path, overwrite=True) as tmp:  # the job's own merged view, rewritten each run
        tmp.write_text("".join(json.dumps(merged[k]) + "\n" for k in sorted(merged)))
    return path


# ------------------------------------------------------------------------------------------ the runner
@contextlib.contextmanager
def _sigterm_flag():
    """An Event set by SIGTERM (what preemptible VMs and spot nodes get) while the block runs; the
    runner finishes the batch in flight and stops. Outside the main thread no handler can be set."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: event.set())
    try:
        yield event
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    complete: bool  # False when max_batches or SIGTERM stopped the run early
    inverted: int = 0  # images inverted in this run, all processes
    failed: int = 0  # images that failed in this run, all processes
    preempted: bool = False  # this process stopped on SIGTERM (the batch in flight was finished first)
    # this process's seconds: reading files, decoding them, inverting (and tuning), writing results and
    # manifest lines (on the writer thread, overlapping the next batch's compute)
    timings: dict = dataclasses.field(default_factory=dict)

    @property
    def local_images_per_second(self) -> float:
        return self.local_done / self.seconds if self.seconds > 0 else 0.0


class _Timings(dict):
    """Seconds per phase, added to from the reader threads and the writer thread."""

    def __init__(self, *names):
        super().__init__({n: 0.0 for n in names})
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self[name] += seconds


def _load_one(rel: str, root, resolution: int, reading: io.ReadOptions, timings: _Timings):
    """(rel, image, None), or (rel, None, reason) for a file that cannot be read: a failure record
    instead of a stopped job."""
    source = paths.join(root, rel)
    t0 = time.perf_counter()
    try:
        try:
            data = paths.read_bytes(source)
        finally:
            t1 = time.perf_counter()
            timings.add("read", t1 - t0)
        try:
            return rel, io.load_image(source, resolution, crop=reading.crop, alpha=reading.alpha,
                                           upscale=reading.upscale, data=data), None
        finally:
            timings.add("decode", time.perf_counter() - t1)
    except ChunkyGANError as e:
        return rel, None, str(e)
    except FileNotFoundError:
        return rel, None, f"{source}: no such file"
    except Exception as e:  # noqa: BLE001 - a decoder's own error (e.g. a decompression bomb)
        return rel, None, f"{source}: {type(e).__name__}: {e}"


def _batches(rels, batch_size: int, load, read_threads: int):
    """This process's pending images in batches of (rel, image, error) rows. With read_threads > 0,
    grain reads and decodes them on that many threads, keeping a batch ready ahead of the compute;
    with 0, each batch is read in the loop when it is due."""
    if read_threads == 0:
        for i in range(0, len(rels), batch_size):
            yield [load(rel) for rel in rels[i:i + batch_size]]
        return
    import grain

    ds = grain.MapDataset.source(list(rels)).map(load).batch(batch_size, batch_fn=list)
    yield from ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                                    prefetch_buffer_size=max(batch_size, read_threads)))


def _failure_record(rel: str, reason: str) -> dict:
    return {"version": RECORD_VERSION, "image": rel, "status": "failed", "error": reason,
            "process": jax.process_index(), "time": time.time()}


def _write_batch(output_dir, manifest: Manifest, expect: dict, store: str, results, failures, timings) -> list:
    """One batch's outputs (on the writer thread): each image's folder, then the batch's manifest lines,
    one per image: "done", or "failed" with the reason (its file, its inversion or its folder). Returns
    the lines; adds its seconds to timings["write"]."""
    t0 = time.perf_counter()
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
                       | {"output": f"{RESULTS_DIR}/{rel}"})
    records += [_failure_record(rel, reason) for rel, reason in failures.items()]
    manifest.append(records)
    timings.add("write", time.perf_counter() - t0)
    return records


@dataclasses.dataclass(frozen=True)
class DatasetOptions:
    """How a dataset run proceeds; none of it changes a result's numbers.

    batch_size: images per step on each process (None: one per local device), a multiple of this
        process's device count.
    store: how each result keeps its segment images, "float32", "float16" (half the size) or "none"
        (composite, masks and latents only; results.save_result); metrics.json and the manifest record
        it. A rerun with another store leaves the images already done as they are.
    read_threads: threads that read and decode the images ahead of the compute (grain; 0: each batch is
        read when it is due, in the loop).
    max_batches: stop after that many batches (a time box; a rerun continues).
    progress: print a progress line (process 0) on `log` (None: stderr)."""
    batch_size: int | None = None
    store: str = "float32"
    read_threads: int = 8
    max_batches: int | None = None
    progress: bool = True
    log: Any = None


def invert_dataset(images, output_dir, generator=None, *, segments=None, steps=None, settings=None, masks=None,
                   tune=None, reading: io.ReadOptions | None = None, options: DatasetOptions | None = None,
                   mesh: Mesh | None = None, inverter=None) -> DatasetSummary:
    """Invert every image of a folder (or glob) into `output_dir`, each process on its own devices.

    Call `initialize()` first in a multi-process job; every process calls this with the same
    arguments. generator, segments, steps, settings, reading: as in invert() (None: the demo generator,
    InversionSettings' defaults). masks: as in invert() (None: the generator's default, G^S with X^S
    learned per image) except per-image mask arrays and static masks, which are not supported here.
    reading.upscale: images under a quarter of the resolution are recorded as failed without it.
    options: a `DatasetOptions` (batch size, store, read threads, max_batches, progress).
    mesh: a data mesh over this process's devices (default `data_mesh(jax.local_devices())`).
    `inverter` (built with the same settings and mesh) saves a compilation when calling this repeatedly.
    tune: pivotal tuning of each batch after its inversion (as invert(tune=): steps or TuningSettings),
    all images of the batch in one program on the same devices; each result keeps its own weight delta. The
    tuning settings are part of what a rerun checks: results made without them (or with others) are
    done again."""
    t_start = time.perf_counter()
    output_dir = check_folder(output_dir)  # before any compilation
    options = options or DatasetOptions()
    reading = reading or io.ReadOptions()
    store = check_store(options.store)
    tune = as_tuning(tune)
    settings = as_settings(settings, segments=segments, steps=steps)
    generator = bind_label(resolve_generator(generator), settings.label)
    settings = settings.replace(label=None if generator.label is None else int(generator.label)).validate(generator)
    mask_settings = as_mask_settings(masks)
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
    batch_size = n_local if options.batch_size in (None, 0) else int(options.batch_size)
    if batch_size < 1 or batch_size % n_local:
        raise ConfigError(f"batch_size {batch_size} must be a positive multiple of this process's "
                          f"{n_local} devices")
    if options.read_threads < 0:
        raise ConfigError(f"read_threads must be >= 0, got {options.read_threads}")
    max_batches = options.max_batches
    if max_batches is not None and max_batches < 0:
        raise ConfigError(f"max_batches must be >= 0, got {max_batches}")
    check_memory(generator, settings, batch_size // n_local)  # before any compilation
    masks = mask_settings.source
    if masks is not None and not isinstance(masks, str) and not (hasattr(masks, "init") and hasattr(masks, "masks")):
        raise ConfigError("invert_dataset takes masks=None, 'segmenter', 'logits', 'layout' or a mask source "
                          "(per-image mask arrays are not supported)")
    if mask_settings.static is not None:
        raise ConfigError("invert_dataset takes no static mask (it is one image's)")
    given = inverter
    if inverter is None:
        source = make_mask_source(masks, settings.segments, generator.resolution, seed=settings.seed,
                                  learn=mask_settings.learn, generator=generator, segmenter=mask_settings.segmenter)
        inverter = Inverter(generator, settings, source, mesh=mesh)
    elif inverter.settings != settings:
        raise ConfigError("the given inverter was built for other settings")
    masks_record = mask_source_record(inverter.mask_source if given is not None and masks is None else masks,
                                      inverter.mask_source,
                                      generator, settings.segments, segmenter=mask_settings.segmenter)

    output_dir = paths.as_path(output_dir)
    root, files = list_images(images, exclude=[output_dir])
    if jax.process_count() > 1:  # every process must see the same list, or the shares would overlap
        digest = hashlib.sha256("\n".join(files).encode()).digest()
        seen = allgather_ints(np.frombuffer(digest[:16], np.int32))
        if not np.all(seen == seen[0]):
            raise ConfigError(f"the processes see different image lists under {images}; every host "
                              "needs the same files (a shared file system)")
    if not files:
        raise ConfigError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found in {images}")
    recorded = settings.to_dict()
    if recorded["label"] is None:  # recorded only for a conditional generator, as invert() does
        del recorded["label"]
    full_settings = {**recorded, "masks": masks_record}  # what every result records
    expect = {"settings": _json_safe(full_settings), "generator": generator_fingerprint(generator),
              "masks": masks_record, "crop": reading.crop, "alpha": reading.alpha}
    # tuning changes a result: a rerun redoes results made with other tuning settings, or none
    expect["tuning"] = None if tune is None else _json_safe(tune.to_dict())
    mine = process_share(files)
    def complete(rel):
        return _result_complete(output_dir_for(output_dir, rel), {**expect, "image": rel})

    if paths.is_remote(output_dir):  # a few requests per image, each a round trip: many at a time
        with ThreadPoolExecutor(REMOTE_CHECK_THREADS, thread_name_prefix="chunkygan-dataset-check") as pool:
            done_before = list(pool.map(complete, mine))
    else:
        done_before = [complete(rel) for rel in mine]
    pending = [rel for rel, ok in zip(mine, done_before) if not ok]
    _remove_stale_temporaries(output_dir, pending)
    counts = allgather_ints([len(mine) - len(pending), len(pending)])
    skipped, total_pending = int(counts[:, 0].sum()), int(counts[:, 1].sum())
    batches = math.ceil(len(pending) / batch_size)
    batches_now = batches if max_batches is None else min(batches, max_batches)
    manifest = Manifest(output_dir, jax.process_index())
    bar = Progress(len(pending), unit="images", bar=False, enabled=options.progress and jax.process_index() == 0,
                   stream=options.log)
    if bar.enabled:
        print(f"{len(files)} images ({skipped} already done), {total_pending} to invert on "
              f"{jax.process_count()} process(es); this one: {len(pending)} in {batches} batches of "
              f"{batch_size} on {n_local} device(s)", file=bar.stream)

    timings = _Timings("read", "decode", "compute", "write")
    done = failed = ran = 0
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
    load = functools.partial(_load_one, root=root, resolution=generator.resolution, reading=reading,
                             timings=timings)
    batch_rows = _batches(pending[:batches_now * batch_size], batch_size, load, options.read_threads)
    with _sigterm_flag() as preempted, ThreadPoolExecutor(1, thread_name_prefix="chunkygan-dataset-writer") as writer:
        for k, rows in enumerate(batch_rows):
            if preempted.is_set():
                break
            ran = k + 1
            loaded = {rel: image for rel, image, error in rows if error is None}
            failures = {rel: error for rel, _, error in rows if error is not None}
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
                    if photo_mode(targets[i]) == "grey":  # compared in luminance (grey_loss), shown in grey
                        result.settings["photo_mode"] = "grey"
                    # where to load the generator again (bin/edit, the editor); not part of what a rerun checks
                    result.settings["generator"] = generator_record(generator)
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
            timings.add("compute", time.perf_counter() - t0)
            if in_flight is not None:
                collect()  # at most one batch waits for the writer
            in_flight = (writer.submit(_write_batch, output_dir, manifest, expect, store, results, failures,
                                       timings), k)
        if in_flight is not None:
            collect()
    if preempted.is_set() and ran < batches_now:  # the other processes may be gone: no collective; this process's lines are out
        if jax.process_count() == 1:
            write_merged_manifest(output_dir)
        return DatasetSummary(total=len(files), skipped=skipped, pending=total_pending, batches=ran,
                              local_done=done, local_failed=failed, seconds=time.perf_counter() - t_start,
                              complete=False, inverted=done, failed=failed, preempted=True,
                              timings=dict(timings))
    barrier("chunkygan_invert_dataset_end")
    totals = allgather_ints([done, failed, int(batches_now == batches)])
    if jax.process_index() == 0:
        write_merged_manifest(output_dir)
    return DatasetSummary(total=len(files), skipped=skipped, pending=total_pending, batches=batches_now,
                          local_done=done, local_failed=failed, seconds=time.perf_counter() - t_start,
                          complete=bool(totals[:, 2].all()), inverted=int(totals[:, 0].sum()),
                          failed=int(totals[:, 1].sum()), timings=dict(timings))
