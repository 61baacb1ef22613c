"""What the editor holds and does, without HTTP: a document of stacked edits over an inversion result,
undo and redo, cached rendering, region projections run in the background (with progress and
cancelling), export into the editor's working folder, and directions fitted to samples of the generator
that the user labels (`fit_labels`, the page's new-direction panel; saved ones become sliders).

The document (`Document`, immutable) is
  - `edits`: latent edits (`Edit`), each aimed at base segments (some, or all) or at one region layer;
    an edit is identified by its target, its kind and its direction / style channel, so moving the same
    slider again changes that edit's strength instead of stacking a new one (strength 0 removes it);
  - `layers`: region layers (`RegionLayer`), made by projecting a painted region (`editing.local_edit`)
    or by filling holes (`editing.fill_holes`); each is composited over everything below it, exactly
    like the sequential layered edits of the paper (Fig. 9);
  - `blend`: how region layers (and a base with a static mask) go into the image: 'mask' or 'poisson'.
Every change pushes a new document onto the history; undo and redo move along it.

Rendering reuses what did not change. The inversion's own segment images stand for unedited segments.
An edited code is drawn by the package's one rendering path (`editing.render_segments`): the latent
edits of a code are first folded into one W-space offset and one StyleSpace offset (with
`editing.apply_edits` and `editing.apply_style_edits` on zero codes), and those offsets are arguments of
its program. So a slider move, a new direction or another layer range never compiles anything new; it
re-renders only the codes whose edits changed, and recomposites.

All JAX work and every change of the document (commit, undo, redo, blending, a task's result) runs on
one worker thread (`executor`), in the order the requests were accepted, each against the document as
it is when it runs: a region projection reads the document when it starts on the worker and lands as
a new change on top of the document as it is when it ends. While a task runs, requests that would
wait behind it are refused at once (`EditorBusy`). The history is guarded by a lock so that the web
server can read the state while the worker is busy.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import math
import os
import re
import stat
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from .. import editing, io
from ..align import PASTES, Alignment, as_mode, paste_back
from ..editing import DirectionEdit, StyleEdit, labelled
from ..editing.directions import resolve_direction
from ..editing.render import blend_region
from ..editing.saved import default_paste
from ..errors import ChunkyGANError, ConfigError, ImageError
from ..inversion import composite
from ..masks.colors import color_code
from ..progress import Progress
from ..results import generator_record
from .schema import MAX_STEPS, MAX_STRENGTH, check_edit, check_steps, check_target

__all__ = ["Document", "Edit", "EditorBusy", "EditorSession", "RegionLayer", "png_bytes", "sanitize_name"]

MAX_DIRECTION_VALUE = 1e4  # times MAX_STRENGTH stays far from float32 overflow in every layer
MAX_UPLOADED_DIRECTIONS = 32
CACHE_BYTES = 512 << 20
REGION_TINT = (64, 200, 255)
MAX_HISTORY = 500


class EditorBusy(ChunkyGANError):
    """A region projection is running; the document cannot change until it ends or is cancelled."""


class _Cancelled(Exception):
    """Raised from the projection's progress callback when the user cancelled it."""


# ---------------------------------------------------------------------------------------- the document
@dataclasses.dataclass(frozen=True)
class Edit:
    """One latent edit. target: ("segments", ()) for every base segment, ("segments", (i, ...)) for some,
    ("layer", id) for a region layer. kind: "direction" (source: a direction id; layers: (lo, hi) ws rows
    or None for all) or "style" (style_layer, channel)."""

    target: tuple
    kind: str
    strength: float
    source: str = ""
    layers: tuple | None = None
    style_layer: str = ""
    channel: int = -1

    @property
    def key(self) -> tuple:
        return (self.target, self.kind, self.source, self.layers, self.style_layer, self.channel)

    @property
    def value(self) -> tuple:
        return self.key[1:] + (self.strength,)

    def touches_segment(self, i: int) -> bool:
        return self.target[0] == "segments" and (not self.target[1] or i in self.target[1])

    def to_json(self) -> dict:
        d = {"kind": self.kind, "strength": self.strength, "target": _target_json(self.target)}
        if self.kind == "direction":
            d.update(direction=self.source, layers=list(self.layers) if self.layers else None)
        else:
            d.update(layer=self.style_layer, channel=self.channel)
        return d


def _target_json(target) -> dict:
    if target[0] == "layer":
        return {"layer": target[1]}
    return {"segments": list(target[1]) if target[1] else "all"}


@dataclasses.dataclass(eq=False)
class RegionLayer:
    """A projected region: `result` is the single-segment result of `local_edit` / `fill_holes` (its
    latents are the region's code, its static mask 1 - region); `generated` is G(code)."""

    id: int
    kind: str  # "region" (project this region) or "fill" (hole filling)
    region: np.ndarray  # [H, W] in [0, 1]
    result: object
    generated: np.ndarray  # [H, W, 3]
    steps: int

    def to_json(self) -> dict:
        area = float(np.mean(self.region > 0.5))
        lpips = float(self.result.final_losses.get("lpips", float("nan")))
        return {"id": self.id, "kind": self.kind, "steps": self.steps, "area": round(area, 4),
                "lpips": float(f"{lpips:.3g}") if np.isfinite(lpips) else None}


@dataclasses.dataclass(frozen=True)
class Document:
    edits: tuple = ()
    layers: tuple = ()
    blend: str = "mask"

    def with_edit(self, edit: Edit) -> "Document":
        """Set `edit`'s strength: an edit with the same key changes in place, strength 0 removes it."""
        edits = list(self.edits)
        same = [i for i, e in enumerate(edits) if e.key == edit.key]
        if same:
            if edit.strength == 0.0:
                del edits[same[-1]]
            else:
                edits[same[-1]] = edit
        elif edit.strength != 0.0:
            edits.append(edit)
        return dataclasses.replace(self, edits=tuple(edits))

    def edits_of_layer(self, layer_id: int) -> list[Edit]:
        return [e for e in self.edits if e.target == ("layer", layer_id)]

    def edits_of_segment(self, i: int) -> list[Edit]:
        return [e for e in self.edits if e.touches_segment(i)]


# ---------------------------------------------------------------------------------------- helpers
def png_bytes(image_uint8: np.ndarray) -> bytes:
    buf = BytesIO()
    Image.fromarray(np.ascontiguousarray(image_uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def sanitize_name(name, default="edit") -> str:
    """A file-name stem from the page: path parts joined by '-' ('.' and '..' dropped), then letters,
    digits, '.', '_' and '-' only, no leading or trailing dot, at most 64 characters (so no path, no
    hidden file, no traversal)."""
    parts = [p for p in re.split(r"[\\/]+", str(name or "")) if p not in ("", ".", "..")]
    stem = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts)))
    stem = re.sub(r"\.png$", "", stem, flags=re.IGNORECASE)  # "edit.png" means the stem "edit"
    stem = stem.strip(".-_")[:64].strip(".-_")
    return stem or default


def decode_region_png(data, resolution: int) -> np.ndarray:
    """A painted region (PNG bytes, or a data: URL / base64 text of one) -> float32 [H, W] in [0, 1].
    Painted pixels are those with alpha (an RGBA canvas) or brightness (a greyscale mask)."""
    if isinstance(data, str):
        text = data.split(",", 1)[1] if data.startswith("data:") else data
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ImageError("the region is not base64-encoded PNG data") from None
    if not isinstance(data, (bytes, bytearray)) or not bytes(data[:8]).startswith(b"\x89PNG"):
        raise ImageError("the region must be a PNG image")
    try:
        img = Image.open(BytesIO(data))
        if img.size != (resolution, resolution):
            raise ImageError(f"the region is {img.size[0]}x{img.size[1]}, the image is {resolution}x{resolution}")
        img.load()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"the region is not a readable PNG ({e})") from None
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        arr = np.asarray(img.convert("RGBA"))[..., 3]
    else:
        arr = np.asarray(img.convert("L"))
    return (arr.astype(np.float32) / 255.0)


def read_npy(data: bytes, name: str) -> np.ndarray:
    """A float .npy array from uploaded bytes, its header checked before anything is allocated: the
    declared shape must account for exactly the bytes that follow the header (no pickles, no object
    arrays, no .npz)."""
    f = BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"format version {version[0]}.{version[1]} (save it with numpy's default)")
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = header(f, max_header_size=4096)
    except (ValueError, EOFError, OSError) as e:
        raise ConfigError(f"{name}: not a numpy .npy direction file ({e})") from None
    if dtype not in (np.float32, np.float64):
        raise ConfigError(f"{name}: direction dtype must be float32 or float64, got {dtype}")
    count, held = math.prod(shape), len(data) - f.tell()
    if count * dtype.itemsize != held:
        raise ConfigError(f"{name}: its header declares {count} values of {dtype} ({count * dtype.itemsize} bytes) "
                          f"but the file holds {held} bytes after it")
    return np.frombuffer(data, dtype, count, offset=f.tell()).reshape(shape, order="F" if fortran else "C")


def _bounded(direction: np.ndarray, name: str) -> np.ndarray:
    """A direction whose values keep every edit finite: |value| <= MAX_DIRECTION_VALUE."""
    peak = float(np.max(np.abs(direction), initial=0.0))
    if not peak <= MAX_DIRECTION_VALUE:
        raise ConfigError(f"{name}: direction values must lie in [-{MAX_DIRECTION_VALUE:g}, {MAX_DIRECTION_VALUE:g}] "
                          f"(found {peak:.3g}); scale it down")
    return direction


class _Cache:
    """Rendered images by key, least recently used dropped first beyond a byte budget."""

    def __init__(self, budget: int = CACHE_BYTES):
        self.budget, self.size, self.items = budget, 0, collections.OrderedDict()

    def get(self, key):
        hit = self.items.get(key)
        if hit is not None:
            self.items.move_to_end(key)
        return hit

    def put(self, key, value: np.ndarray):
        if key in self.items:
            self.size -= self.items.pop(key).nbytes
        self.items[key] = value
        self.size += value.nbytes
        while self.size > self.budget and len(self.items) > 1:
            self.size -= self.items.popitem(last=False)[1].nbytes


@dataclasses.dataclass
class Task:
    id: int
    kind: str
    steps: int
    step: int = 0
    state: str = "running"  # running, done, error, cancelled
    message: str = ""
    started: float = dataclasses.field(default_factory=time.perf_counter)
    seconds: float = 0.0
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)

    def to_json(self) -> dict:
        secs = self.seconds if self.state != "running" else time.perf_counter() - self.started
        return {"id": self.id, "kind": self.kind, "state": self.state, "step": self.step, "steps": self.steps,
                "message": self.message, "seconds": round(secs, 2)}


# ---------------------------------------------------------------------------------------- the session
class EditorSession:
    """The editor's state over one inversion result.

    result: an `InversionResult`; generator: the generator object it was made with; workdir: the only
    folder the editor writes to (it must exist; exported results record the generator as the result does,
    or as `results.generator_record` finds it, so that `bin/edit` can continue from them); directions: a
    folder of .npy direction files; pca: how many "pca:K" directions to offer when the editing package
    can find directions in the generator itself; paste: how an aligned result's export goes into the
    photo, "residual" or "projection" (`align.PASTES`; None: residual where the face in the photo is larger
    than the generator's images, as `bin/edit` does)."""

    def __init__(self, result, generator, *, workdir, directions=None, pca: int = 8,
                 region_steps: int = 100, cache_bytes: int = CACHE_BYTES, paste: str | None = None):
        # generator: the one the result was inverted with (directions are its); drawer: what renders, the
        # generator with the result's own weights and noise (editing.result_drawer)
        self.result, self.generator = result, generator
        self.drawer = editing.result_drawer(generator, result)
        r = generator.resolution
        if tuple(np.shape(result.target)[:2]) != (r, r):
            raise ConfigError(f"the result is {np.shape(result.target)[0]} px but the generator makes {r} px")
        self.resolution = r
        self.workdir = Path(workdir).resolve()
        if not self.workdir.is_dir():
            raise ConfigError(f"working folder {workdir} does not exist")
        self.recorded_generator = generator_record(generator) or result.settings.get("generator")
        self.settings = dict(result.settings)
        self.noise_mode = self.settings.get("noise_mode", "const")
        self.dtype = self.settings.get("dtype", "float32")
        self.region_steps = int(region_steps)
        if paste is not None and paste not in PASTES:
            raise ConfigError(f"paste must be one of {', '.join(PASTES)}, got {paste!r}")
        self.paste = paste
        self.mode = self.settings.get("photo_mode", "rgb")  # a greyscale photo's images are shown in grey
        self.masks = np.asarray(result.masks, np.float32)
        self.n = int(self.masks.shape[0])
        self.labels = np.argmax(self.masks, axis=0).astype(np.uint8 if self.n < 256 else np.uint16)
        self.target = np.asarray(result.target, np.float32)
        codes = result.latents["codes"]
        # A result saved without its segment images (store 'none') gets them rendered from its codes.
        self.segment_images = np.asarray(result.segment_images if result.segment_images is not None else
                                         editing.render_segments(self.drawer, {"codes": codes},
                                                                 noise_mode=self.noise_mode, dtype=self.dtype),
                                         np.float32)
        self._base_codes = [jax.tree_util.tree_map(lambda x, i=i: np.asarray(x, np.float32)[i:i + 1], codes)
                            for i in range(self.n)]
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="editor-jax")
        self._lock = threading.RLock()
        self._history, self._pos, self.version = [Document()], 0, 1
        self._next_layer, self._next_task = 1, 1
        self._cache = _Cache(cache_bytes)
        self._written: set[Path] = set()
        self._identity: dict[Path, tuple] = {}  # (device, inode) of each file the editor wrote
        self.task: Task | None = None
        self._current_png = (0, b"")
        try:
            editing.latent_space(generator, codes)
            self.editable, self.why_not = True, ""
        except ChunkyGANError as e:
            self.editable, self.why_not = False, str(e)
        self.num_ws = generator.num_ws if "w" in generator.latent_spaces else None
        has_s = self.editable and "s" in generator.latent_spaces  # StyleSpace (protocol.Generator)
        self.style_dims = dict(generator.config.style_dims()) if has_s else {}
        self._directions: dict[str, dict] = {}
        self.direction_errors: list[str] = []
        self._add_direction_sources(directions, pca)
        self._still = {  # the unedited images, precomputed once
            "photo": png_bytes(io.to_uint8(self.target)),
            "projection": png_bytes(self._shown(self._base_image(Document()))),
            "masks": png_bytes(color_code(self.masks)),
            "labels": png_bytes(self.labels.astype(np.uint8)) if self.n < 256 else b"",
        }

    # ------------------------------------------------------------------ directions
    def _add_direction_sources(self, folder, pca):
        if folder is not None:
            folder = Path(folder)
            if not folder.is_dir():
                raise ConfigError(f"--directions {folder} is not a folder")
            for path in sorted(folder.glob("*.npy")):
                entry = {"id": f"file:{path.name}", "name": path.stem, "path": path, "array": None}
                if self.editable:
                    try:
                        entry["array"] = _bounded(editing.load_direction(path, self.generator), path.name)
                    except ChunkyGANError as e:
                        self.direction_errors.append(str(e))
                        continue
                self._directions[entry["id"]] = entry
        if self.editable:  # directions the generator yields by itself (computed on first use, cached)
            for k in range(int(pca)):
                spec = f"pca:{k}"
                self._directions[spec] = {"id": spec, "name": f"PCA {k}", "path": None, "array": None,
                                          "spec": spec}

    def add_direction(self, name: str, data: bytes) -> dict:
        """A .npy direction uploaded from the page (kept in memory, never written); on the worker."""
        return self._call(self._add_direction, name, data)

    def _add_direction(self, name: str, data: bytes) -> dict:
        if not self.editable:
            raise ConfigError(f"this result cannot be edited: {self.why_not}")
        if sum(1 for d in self._directions.values() if d["id"].startswith("upload:")) >= MAX_UPLOADED_DIRECTIONS:
            raise ConfigError(f"at most {MAX_UPLOADED_DIRECTIONS} uploaded directions")
        label = sanitize_name(name, "direction")
        array = _bounded(editing.load_direction(read_npy(bytes(data), label), self.generator), label)
        stem = sanitize_name(Path(str(name)).stem, "direction")
        with self._lock:  # state() reads the list from the server's thread
            # a new id for every upload: edits in the history keep meaning the array they were made with
            ident = next(i for i in (f"upload:{stem}" if k == 1 else f"upload:{stem}-{k}" for k in range(1, 10_000))
                         if i not in self._directions)
            self._directions[ident] = {"id": ident, "name": ident.split(":", 1)[1], "path": None, "array": array}
        return self.state()

    def _direction(self, source: str):
        entry = self._directions.get(source)
        if entry is None:
            raise ConfigError(f"unknown direction {source!r}")
        if entry["array"] is None:
            if "spec" in entry:
                entry["array"] = np.asarray(resolve_direction(entry["spec"], self.generator), np.float32)
            else:
                entry["array"] = editing.load_direction(entry["path"], self.generator)
        return entry["array"]

    # ------------------------------------------------------------------ directions from labels
    def sample_png(self, seed: int) -> bytes:
        """The generator's random sample `seed`, the one the new-direction panel shows and labels."""
        return self._call(self._sample_png, seed)

    def panel_seeds(self, start: int, count: int) -> list[int]:
        """The seeds of the panel's samples at positions start .. start+count-1 (`labelled.panel_seeds`:
        samples spread over the generator's principal span, not i.i.d. ones)."""
        return self._call(self._panel_seeds, start, count)

    def _panel_seeds(self, start: int, count: int) -> list[int]:
        if not self.editable:
            raise ConfigError(f"this result cannot be edited: {self.why_not}")
        return labelled.panel_seeds(self.generator, start, count)

    def _sample_png(self, seed: int) -> bytes:
        if not self.editable:
            raise ConfigError(f"this result cannot be edited: {self.why_not}")
        return png_bytes(io.to_uint8(labelled.sample_images(self.generator, [int(seed)])[0]))

    def fit_labels(self, body: dict) -> dict:
        """Fit a direction to labelled samples ({"labels": [[seed, 0|1], ...], "name", "save"}): its
        held-out accuracy and a preview strip; with save, NAME.npy/.json/.png written into the working
        folder and the direction offered as a slider."""
        return self._call(self._fit_labels, body)

    def _fit_labels(self, body: dict) -> dict:
        if not self.editable:
            raise ConfigError(f"this result cannot be edited: {self.why_not}")
        seeds, labels, _ = labelled.parse_labels(body["labels"])
        stem = sanitize_name(body.get("name"), "direction")
        found = labelled.direction_from_labels(self.generator, seeds, labels, name=stem)
        preview = labelled.preview_strip(self.generator, found, [int(seeds[labels == c][0]) for c in (1, 0)])
        out = {k: found.record[k] for k in ("accuracy", "train_accuracy", "labels", "positives", "negatives", "folds")}
        out["preview"] = "data:image/png;base64," + base64.b64encode(png_bytes(preview)).decode()
        if body.get("save"):
            stem = self._free_stem(stem, ("{}.npy", "{}.json", "{}.png"))
            names = [f"{stem}{suffix}" for suffix in (".npy", ".json", ".png")]
            for name in names:
                self._out(name)
            labelled.save_direction(found, self.workdir / names[0], preview=preview, overwrite=True)
            out["files"] = [self._wrote(name) for name in names]
            with self._lock:  # state() reads the list from the server's thread
                ident = f"labelled:{stem}"
                self._directions[ident] = {"id": ident, "name": stem, "path": self.workdir / names[0],
                                           "array": _bounded(found.direction, stem)}
            out["state"] = self.state()
        return out

    def localized(self, body: dict) -> dict:
        """The StyleSpace channels whose effect on the projection lies most inside a segment's mask or a
        painted region ({"segment": i} or {"region": PNG}, "top": n; `editing.localized_channels`)."""
        return self._call(self._localized, body)

    def _localized(self, body: dict) -> dict:
        if not self.editable:
            raise ConfigError(f"this result cannot be edited: {self.why_not}")
        if not self.style_dims:
            raise ConfigError(f"this {type(self.generator).__name__} has no StyleSpace: channels for a segment need "
                              "a StyleGAN2")
        if body.get("region") is not None:
            where = decode_region_png(body["region"], self.resolution)
        else:
            where = int(body["segment"])
        return {"channels": editing.localized_channels(self.result, self.generator, where, top=body["top"])}

    # ------------------------------------------------------------------ history
    @property
    def document(self) -> Document:
        with self._lock:
            return self._history[self._pos]

    def _push(self, doc: Document) -> None:
        with self._lock:
            if doc == self._history[self._pos]:
                return
            del self._history[self._pos + 1:]
            self._history.append(doc)
            if len(self._history) > MAX_HISTORY:
                del self._history[0]
            self._pos = len(self._history) - 1
            self.version += 1

    def check_idle(self):
        if self.task is not None and self.task.state == "running":
            raise EditorBusy(f"a {self.task.kind} is running; wait for it or cancel it")

    def submit(self, fn, *args) -> Future:
        """Queue `fn(*args)` on the worker, behind the changes accepted before it; refused at once
        (EditorBusy) while a task runs, since it would wait for the task's end."""
        with self._lock:  # start_task takes it too: a change is queued either before a task or not at all
            self.check_idle()
            return self.executor.submit(fn, *args)

    def _call(self, fn, *args):
        """`submit` and wait: the Python API of the changes (never called from the worker itself)."""
        return self.submit(fn, *args).result()

    # the worker's operations, by the names the server asks for them (`request`)
    OPERATIONS = ("preview", "commit", "undo", "redo", "set_blend", "image_png", "add_direction", "export",
                  "panel_seeds", "sample_png", "fit_labels", "localized")

    def request(self, name: str, *args) -> Future:
        if name not in self.OPERATIONS:
            raise ValueError(f"no editor operation {name!r}")
        return self.submit(getattr(self, "_" + name), *args)

    def undo(self) -> dict:
        return self._call(self._undo)

    def redo(self) -> dict:
        return self._call(self._redo)

    def _undo(self) -> dict:
        with self._lock:
            if self._pos == 0:
                raise ConfigError("nothing to undo")
            self._pos -= 1
            self.version += 1
        return self.state()

    def _redo(self) -> dict:
        with self._lock:
            if self._pos >= len(self._history) - 1:
                raise ConfigError("nothing to redo")
            self._pos += 1
            self.version += 1
        return self.state()

    def state(self) -> dict:
        with self._lock:
            doc, can_undo, can_redo, version = (self._history[self._pos], self._pos > 0,
                                               self._pos < len(self._history) - 1, self.version)
            directions = [{"id": d["id"], "name": d["name"]} for d in self._directions.values()]
        return {
            "resolution": self.resolution, "segments": self.n, "editable": self.editable,
            "why_not": self.why_not, "generator": type(self.generator).__name__,
            "space": self.settings.get("space"), "num_ws": self.num_ws,
            "styles": [{"name": k, "channels": v} for k, v in self.style_dims.items()],
            "directions": directions,
            "direction_errors": list(self.direction_errors),
            "document": {"edits": [e.to_json() for e in doc.edits], "layers": [l.to_json() for l in doc.layers],
                         "blend": doc.blend},
            "can_undo": can_undo, "can_redo": can_redo, "version": version,
            "poisson": self.result.static_mask is not None or bool(doc.layers),
            "aligned": self.alignment()[0] is not None, "region_steps": self.region_steps,
            "task": None if self.task is None else self.task.to_json(),
            "workdir": str(self.workdir),
        }

    # ------------------------------------------------------------------ parsing requests
    def parse_edit(self, d, doc: Document | None = None) -> Edit:
        """An edit from its JSON form (the schema's strict types first, then this session's bounds)."""
        check_edit(d)
        if not self.editable:
            raise ConfigError(f"this result cannot be edited: {self.why_not}")
        doc = doc or self.document
        target = self.parse_target(d.get("target"), doc)
        strength = float(d["strength"])
        kind = d["kind"]
        if kind == "direction":
            source = d["direction"]
            if source not in self._directions:
                raise ConfigError(f"unknown direction {source!r}")
            layers = d.get("layers")
            if layers is not None and self.num_ws is None:
                raise ConfigError(f"layers: this generator ({type(self.generator).__name__}) has no ws rows; "
                                  "give null")
            if layers is not None:
                layers = editing.layer_range(tuple(layers), self.num_ws)
                layers = None if layers == (0, self.num_ws) else layers
            return Edit(target, "direction", strength, source=source, layers=layers)
        if kind == "style":
            if not self.style_dims:
                raise ConfigError("StyleSpace edits need a StyleGAN2 generator")
            layer = editing.resolve_style_layer(self.generator, d["layer"])
            channel = d["channel"]
            if not 0 <= channel < self.style_dims[layer]:
                raise ConfigError(f"channel of S layer {layer} must be an integer in 0..{self.style_dims[layer] - 1}, "
                                  f"got {channel!r}")
            return Edit(target, "style", strength, style_layer=layer, channel=channel)
        raise ConfigError(f"an edit's kind is 'direction' or 'style', got {kind!r}")

    def parse_target(self, t, doc: Document) -> tuple:
        if check_target(t) is None or t == "all":
            return ("segments", ())
        if "layer" in t:
            ids = [l.id for l in doc.layers]
            if t["layer"] not in ids:
                raise ConfigError(f"no region layer {t['layer']!r} (layers: {ids or 'none'})")
            return ("layer", int(t["layer"]))
        segs = t["segments"]
        if segs == "all" or segs == []:
            return ("segments", ())
        idx = tuple(sorted(editing.segment_indices(segs, self.n)))
        return ("segments", () if len(idx) == self.n else idx)

    def parse_steps(self, steps) -> int:
        return self.region_steps if check_steps(steps) is None else steps

    # ------------------------------------------------------------------ rendering
    def _offsets(self, edits: list[Edit], codes):
        """The W-space and StyleSpace offsets that `edits` add to one code (None where there are none)."""
        dirs = [DirectionEdit(self._direction(e.source), e.strength, e.layers) for e in edits if e.kind == "direction"]
        styles = [StyleEdit(e.style_layer, e.channel, e.strength) for e in edits if e.kind == "style"]
        w_offset = s_offset = None
        if dirs:
            zero = jax.tree_util.tree_map(jnp.zeros_like, codes)
            w_offset = editing.apply_edits({"codes": zero}, self.drawer, dirs)["codes"][0]
        if styles:
            zero = {k: jnp.zeros((1, d), jnp.float32) for k, d in self.style_dims.items()}
            s_offset = editing.apply_style_edits({"codes": zero}, self.drawer, styles)["codes"]
        return w_offset, s_offset

    def _draw(self, codes, w_offset, s_offset) -> np.ndarray:
        return np.asarray(editing.render_segments(self.drawer, codes, noise_mode=self.noise_mode, dtype=self.dtype,
                                                  w_offset=w_offset, s_offset=s_offset), np.float32)

    def _code_image(self, key, codes, edits: list[Edit], unedited: np.ndarray) -> np.ndarray:
        if not edits:
            return unedited
        full = (key, tuple(e.value for e in edits))
        hit = self._cache.get(full)
        if hit is None:
            w_offset, s_offset = self._offsets(edits, codes)
            hit = self._draw(codes, w_offset, s_offset)[0]
            self._cache.put(full, hit)
        return hit

    def _render_segments(self, indices: list[int], edits: list[Edit]) -> None:
        """Render the base segments `indices`, which share `edits`, in one call and cache each image.
        Several segments go as one batch of all n codes (padded with copies), so there are only two
        batch sizes to compile: 1 and n."""
        codes = [self._base_codes[i] for i in indices]
        if len(codes) > 1:
            codes += codes[-1:] * (self.n - len(codes))
        batch = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *codes)
        w_offset, s_offset = self._offsets(edits, self._base_codes[indices[0]])
        out = self._draw(batch, w_offset, s_offset)
        values = tuple(e.value for e in edits)
        for k, i in enumerate(indices):
            self._cache.put((("segment", i), values), out[k])

    def _base_image(self, doc: Document) -> np.ndarray:
        per_segment = [doc.edits_of_segment(i) for i in range(self.n)]
        blend = doc.blend if self.result.static_mask is not None else "mask"
        key = ("base", tuple(tuple(e.value for e in es) for es in per_segment), blend)
        hit = self._cache.get(key)
        if hit is None:
            todo: dict[tuple, list[int]] = {}  # segments to render, grouped by their edits
            for i, es in enumerate(per_segment):
                values = tuple(e.value for e in es)
                if es and self._cache.get((("segment", i), values)) is None:
                    todo.setdefault(values, []).append(i)
            for indices in todo.values():
                self._render_segments(indices, per_segment[indices[0]])
            imgs = [self._code_image(("segment", i), self._base_codes[i], es, self.segment_images[i])
                    for i, es in enumerate(per_segment)]
            hit = np.asarray(composite(jnp.asarray(np.stack(imgs)), jnp.asarray(self.masks)), np.float32)
            if self.result.static_mask is not None:
                region = 1.0 - np.asarray(self.result.static_mask, np.float32)
                hit = blend_region(hit, self.target, region, blend)
            self._cache.put(key, hit)
        return hit

    def render(self, doc: Document | None = None) -> np.ndarray:
        """The document's image [H, W, 3] in [-1, 1] (generated pixels may overshoot a little)."""
        doc = doc or self.document
        image = self._base_image(doc)
        key = ("base", tuple(e.value for e in doc.edits if e.target[0] == "segments"), doc.blend)
        for layer in doc.layers:
            edits = doc.edits_of_layer(layer.id)
            key = (key, layer.id, tuple(e.value for e in edits), doc.blend)
            hit = self._cache.get(key)
            if hit is None:
                codes = layer.result.latents["codes"]
                generated = self._code_image(("layer", layer.id), codes, edits, layer.generated)
                hit = np.clip(blend_region(generated, image, layer.region, doc.blend), -1.0, 1.0).astype(np.float32)
                self._cache.put(key, hit)
            image = hit
        return image

    def ready_png(self, name: str) -> bytes | None:
        """An image that needs no JAX work: the unedited ones, or the current one if already rendered."""
        if name in self._still and self._still[name]:
            return self._still[name]
        if name == "current":
            version, data = self._current_png
            return data if version == self.version else None
        return None

    def image_png(self, name: str) -> bytes:
        return self._call(self._image_png, name)

    def _shown(self, image) -> np.ndarray:
        """A rendered image as uint8, as the photo shows it: in grey for a greyscale photo."""
        return as_mode(io.to_uint8(image), self.mode)

    def _image_png(self, name: str) -> bytes:
        if name == "current":
            version = self.version
            data = png_bytes(self._shown(self.render()))
            self._current_png = (version, data)
            return data
        if name in self._still and self._still[name]:
            return self._still[name]
        if name.startswith("region-"):
            layer = next((l for l in self.document.layers if f"region-{l.id}" == name), None)
            if layer is not None:  # a tint whose opacity is the region's value
                alpha = np.round(np.clip(layer.region, 0, 1) * 255).astype(np.uint8)
                tint = np.broadcast_to(np.array(REGION_TINT, np.uint8), alpha.shape + (3,))
                return png_bytes(np.concatenate([tint, alpha[..., None]], axis=-1))
        raise KeyError(name)

    def preview(self, edit_json) -> bytes:
        """The image with one edit set (not committed): what a slider shows while it moves."""
        return self._call(self._preview, edit_json)

    def commit(self, edit_json) -> dict:
        return self._call(self._commit, edit_json)

    def set_blend(self, blend) -> dict:
        return self._call(self._set_blend, blend)

    def _preview(self, edit_json) -> bytes:
        doc = self.document
        return png_bytes(self._shown(self.render(doc.with_edit(self.parse_edit(edit_json, doc)))))

    def _commit(self, edit_json) -> dict:
        doc = self.document
        new = doc.with_edit(self.parse_edit(edit_json, doc))
        self.render(new)  # a failing edit fails here, before the history changes
        self._push(new)
        return self.state()

    def _set_blend(self, blend) -> dict:
        if blend not in ("mask", "poisson"):
            raise ConfigError(f"blend must be 'mask' or 'poisson', got {blend!r}")
        new = dataclasses.replace(self.document, blend=blend)
        self.render(new)
        self._push(new)
        return self.state()

    # ------------------------------------------------------------------ region projections (background)
    def start_task(self, kind: str, region, steps=None, target=None) -> dict:
        """Start "project" (editing.local_edit on the painted region of the current image) or "fill"
        (editing.fill_holes on a correction region, starting from the target's edited code) on the
        worker thread; returns the task's status at once. Called from the server's thread. The task
        runs after the changes queued before it, on the document as it is then."""
        if kind not in ("project", "fill"):
            raise ConfigError(f"unknown task {kind!r}")
        if not self.editable:
            raise ConfigError(f"this result cannot be edited: {self.why_not}")
        with self._lock:
            self.check_idle()
            steps = self.parse_steps(steps)
            region = decode_region_png(region, self.resolution) if not isinstance(region, np.ndarray) else region
            if not np.any(region > 0):
                raise ImageError("the region is empty: paint the pixels first")
            if kind == "fill":  # checked now for a clear answer, resolved again when the task runs
                self._fill_source(target, self.document)
            self.task = Task(self._next_task, kind, steps)
            self._next_task += 1
            task = self.task
            self.executor.submit(self._run_task, task, region, target)
        return task.to_json()

    def _fill_source(self, target, doc: Document) -> tuple:
        source = self.parse_target(target, doc)
        if source[0] == "segments" and len(source[1]) != 1 and self.n != 1:
            raise ConfigError("hole filling starts from one code: select one segment, or a region layer")
        return source

    def cancel_task(self) -> dict:
        task = self.task
        if task is None or task.state != "running":
            raise ConfigError("nothing is running")
        task.cancel.set()
        return task.to_json()

    def _projection_settings(self) -> dict:
        return {**editing.recorded_projection(self.settings), "noise_mode": self.noise_mode, "dtype": self.dtype}

    def _run_task(self, task: Task, region: np.ndarray, target) -> None:
        bar = Progress(task.steps, unit="steps")

        def callback(step, steps, losses):
            task.step = int(step)
            bar.update(int(step), f"{task.kind}, loss {float(losses[0]):.4f}")
            if task.cancel.is_set():
                raise _Cancelled

        try:
            doc = self.document  # after every change queued before the task
            source = self._fill_source(target, doc) if task.kind == "fill" else None
            image = np.clip(self.render(doc), -1.0, 1.0)
            if task.kind == "project":
                out = editing.local_edit(image, self.drawer, region, None, steps=task.steps,
                                         settings=self._projection_settings(), callback=callback)
            else:
                out = editing.fill_holes(self._edited_latents(doc, source), self.drawer, image, region,
                                         steps=task.steps, segment=0, settings=self._projection_settings(),
                                         callback=callback)
            out.result.tuning = self.result.tuning  # projected with the tuned weights: renders with them
            if "noise" in self.result.latents:  # and with the result's noise
                out.result.latents = dict(out.result.latents, noise=self.result.latents["noise"])
            with self._lock:
                layer = RegionLayer(self._next_layer, "region" if task.kind == "project" else "fill",
                                    np.asarray(out.region, np.float32), out.result,
                                    np.asarray(out.generated, np.float32), task.steps)
                self._next_layer += 1
                now = self.document  # a new change on top of the document as it is now
                self._push(dataclasses.replace(now, layers=now.layers + (layer,)))
                task.message = f"layer {layer.id}: lpips {layer.to_json()['lpips']}"
                task.state = "done"
        except _Cancelled:
            task.state, task.message = "cancelled", f"cancelled after {task.step} of {task.steps} steps"
        except ChunkyGANError as e:
            task.state, task.message = "error", str(e)
        except Exception as e:  # shown on the page as one line; the details go to the terminal
            traceback.print_exc()
            task.state, task.message = "error", f"internal error ({type(e).__name__}: {e})"
        finally:
            task.seconds = time.perf_counter() - task.started
            if task.state == "cancelled":
                print(f"\n{task.kind} {task.message}", flush=True)

    def _edited_latents(self, doc: Document, source) -> dict:
        """The edited code (segment axis first, one segment) that hole filling starts from."""
        if source[0] == "layer":
            layer = next(l for l in doc.layers if l.id == source[1])
            latents, edits = layer.result.latents, doc.edits_of_layer(layer.id)
        else:
            i = source[1][0] if source[1] else 0
            latents, edits = {"codes": self._base_codes[i]}, doc.edits_of_segment(i)
        return editing.apply_edits({"codes": latents["codes"]}, self.drawer, self._api_edits(edits))

    # ------------------------------------------------------------------ export
    def _api_edits(self, edits: list[Edit]) -> list:
        out = []
        for e in edits:
            segments = "all" if e.target[0] == "layer" or not e.target[1] else tuple(e.target[1])
            if e.kind == "direction":
                out.append(DirectionEdit(self._direction(e.source), e.strength, e.layers, segments))
            else:
                out.append(StyleEdit(e.style_layer, e.channel, e.strength, segments))
        return out

    def edited_result(self, doc: Document | None = None):
        """The document as an `InversionResult` that `bin/edit` and `editing` can continue from: without
        region layers the base result with its segment edits (`editing.edit_result`); with layers the top
        layer's single-code result over the image below it, with that layer's edits."""
        doc = doc or self.document
        if doc.layers:
            top = doc.layers[-1]
            below = np.clip(self.render(dataclasses.replace(doc, layers=doc.layers[:-1])), -1.0, 1.0)
            edits = doc.edits_of_layer(top.id)
            base, blend = dataclasses.replace(top.result, target=below), doc.blend
        else:
            edits = [e for e in doc.edits if e.target[0] == "segments"]
            base = self.result
            blend = doc.blend if self.result.static_mask is not None else "mask"
        if not self.editable:
            out = dataclasses.replace(self.result, settings=dict(self.result.settings))
        else:
            out = editing.edit_result(base, self.generator, self._api_edits(edits), blend=blend)
            records = out.settings.get("edits", [])
            for record, e in zip(records[len(records) - len(edits):], edits):
                if e.kind == "direction":
                    record["direction"] = e.source  # the direction's name, not "array"
        if self.recorded_generator:
            out.settings["generator"] = self.recorded_generator
        out.settings["editor"] = {"edits": [e.to_json() for e in doc.edits],
                                  "layers": [l.to_json() for l in doc.layers], "blend": doc.blend}
        return out

    def alignment(self):
        """(alignment record, photo path) of a result aligned from a photo, else (None, None). Read from
        the result's own fields where results carry them, else from its settings."""
        record = getattr(self.result, "alignment", None) or self.settings.get("alignment")
        if not record:
            return None, None
        photo = getattr(self.result, "photo", None) or self.settings.get("photo") or self.settings.get("image")
        return record, photo

    def _free_stem(self, stem: str, names=("{}.png", "{}_pasted.png", "{}_result")) -> str:
        """`stem`, or stem-2, stem-3, ...: the first whose outputs are absent or were written by us."""
        for k in range(1, 10_000):
            cand = stem if k == 1 else f"{stem}-{k}"
            paths = [self.workdir / n.format(cand) for n in names]
            if all(p in self._written or not os.path.lexists(p) for p in paths):
                return cand
        raise ConfigError(f"no free export name for {stem!r} in {self.workdir}")

    def _out(self, name: str) -> Path:
        path = self.workdir / name
        if path.parent != self.workdir or path.name != name:  # never anything but a direct child
            raise ConfigError(f"bad export name {name!r}")
        self._written.add(path)
        return path

    def export(self, name=None) -> dict:
        """Write NAME.png (the edited image), NAME_result/ (a saved result to continue from) and, for a
        result aligned from a photo, NAME_pasted.png (the edit pasted back into the full photo), all in
        the working folder. Files the editor did not write are never replaced: the name gets a suffix."""
        return self._call(self._export, name)

    def _export(self, name=None) -> dict:
        doc = self.document
        image = np.clip(self.render(doc), -1.0, 1.0)
        result = self.edited_result(doc)
        stem = self._free_stem(sanitize_name(name))  # its outputs are absent or this session's own:
        files, notes = [], []                          # replacing them is what a new export means
        edited = self._shown(image)
        io.save_png(self._out(f"{stem}.png"), edited, overwrite=True)
        files.append(self._wrote(f"{stem}.png"))
        alignment, photo = self.alignment()
        for name, value in (("alignment", alignment), ("photo", photo)):  # so that an edit of it pastes back too
            if value is not None and any(f.name == name for f in dataclasses.fields(result)):
                setattr(result, name, value)
        result.save(self._out(f"{stem}_result"), overwrite=True)
        files.append(f"{stem}_result")
        if alignment:
            try:
                if not photo or not Path(photo).is_file():
                    raise ImageError(f"the aligned photo {photo or '(not recorded)'} is not there")
                quad = Alignment.from_json(alignment)
                reference = None
                if (self.paste or default_paste(quad, self.resolution)) == "residual":
                    # the photo plus what the document changes in the projection (as bin/edit pastes)
                    unedited = np.clip(self.render(dataclasses.replace(doc, edits=(), layers=())), -1.0, 1.0)
                    reference = self._shown(unedited)
                pasted = paste_back(photo, edited, quad, reference=reference)
                io.save_png(self._out(f"{stem}_pasted.png"), pasted, overwrite=True)
                files.append(self._wrote(f"{stem}_pasted.png"))
            except ChunkyGANError as e:
                notes.append(f"no pasted-back photo: {e}")
        return {"files": files, "notes": notes, "workdir": str(self.workdir)}

    def mark_written(self, path) -> None:
        """Count `path` (in the working folder) as the editor's own output."""
        path = Path(path).resolve()
        if path.parent == self.workdir and path.exists():
            self._written.add(path)

    def _wrote(self, name: str) -> str:
        """Record what the file `name` (just written) is, so that a download can tell it was replaced."""
        st = os.lstat(self.workdir / name)
        self._identity[self.workdir / name] = (st.st_dev, st.st_ino)
        return name

    def read_written(self, name: str) -> bytes:
        """The bytes of a file the editor wrote into its working folder, by its name there; KeyError for
        anything else, including a link or another file put in its place (opened without following
        links, then checked to be the very file written)."""
        path = self.workdir / str(name)
        if path.parent != self.workdir or path not in self._identity:
            raise KeyError(name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            raise KeyError(name) from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != self._identity[path]:
                raise KeyError(name)
            return f.read()

    def close(self) -> None:
        task = self.task
        if task is not None and task.state == "running":
            task.cancel.set()
        self.executor.shutdown(wait=True, cancel_futures=True)
