"""Torch-free readers for PyTorch StyleGAN2 checkpoints.

Reads NVIDIA stylegan2-ada-pytorch network pickles (`network-snapshot-*.pkl`) and `torch.save`
files (zip, e.g. rosinality `.pt`, and the older non-zip "legacy" stream) into numpy arrays,
without importing torch.

Safety: pickles can run arbitrary code, so every global a file names goes through an allow-list
(`_Unpickler.find_class`) that maps it to a small local stand-in. Nothing outside that list is
imported or called; the NVIDIA `module_src` (the network's Python source) is never executed.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
import pickle
import struct
import sys
import types
import zipfile
import zlib
from pathlib import Path
from typing import Any

import ml_dtypes  # ships with jax; gives numpy a bfloat16
import numpy as np

from ..errors import CheckpointError

__all__ = [
    "PersistentObject",
    "read_nvidia_pickle",
    "read_torch_zip",
    "sniff_format",
]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_VERSION = 1001  # torch.serialization.PROTOCOL_VERSION
# A legacy stream starts with the protocol-2 pickle of the magic number: PROTO 2, LONG1 10 bytes.
_LEGACY_PREFIX = b"\x80\x02\x8a\x0a" + _LEGACY_MAGIC.to_bytes(10, "little")
_ZIP_PREFIX = b"PK\x03\x04"
_ORBAX_MARKERS = ("_CHECKPOINT_METADATA", "_METADATA", "manifest.ocdbt")

# torch storage class name -> element dtype. A namedtuple has no __dict__, so a hostile BUILD
# opcode cannot alter these shared markers.
_StorageType = collections.namedtuple("_StorageType", "name dtype")
_STORAGE_TYPES = {
    name: _StorageType(name, np.dtype(dt))
    for name, dt in {
        "FloatStorage": np.float32,
        "HalfStorage": np.float16,
        "DoubleStorage": np.float64,
        "BFloat16Storage": ml_dtypes.bfloat16,
        "LongStorage": np.int64,
        "IntStorage": np.int32,
        "ShortStorage": np.int16,
        "CharStorage": np.int8,
        "ByteStorage": np.uint8,
        "BoolStorage": np.bool_,
        "UntypedStorage": np.uint8,  # numel is then a byte count
    }.items()
}

# The errors a damaged file can trigger inside pickle/zipfile/struct/numpy; all become CheckpointError.
_CORRUPT = (
    pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error, ValueError, TypeError,
    KeyError, IndexError, AttributeError, OverflowError, UnicodeDecodeError, RecursionError,
    MemoryError, NotImplementedError, zipfile.LargeZipFile, zlib.error,
)


@dataclasses.dataclass
class PersistentObject:
    """Stand-in for a `torch_utils.persistence` network object: its data, none of its code."""

    class_name: str
    parameters: dict  # name -> np.ndarray | None, as in torch's Module._parameters
    buffers: dict  # name -> np.ndarray | None, as in Module._buffers
    modules: dict  # name -> PersistentObject | None, as in Module._modules
    non_persistent: frozenset  # buffer names torch leaves out of state_dict()
    attrs: dict  # every other attribute: _init_kwargs, _init_args, z_dim, weight_gain, ...

    def state_dict(self) -> collections.OrderedDict:
        """Flat {torch name: array} in torch's state_dict order (params, buffers, then children)."""
        out: collections.OrderedDict = collections.OrderedDict()
        self._collect(out, "", set())
        return out

    def _collect(self, out, prefix, active):
        if id(self) in active:  # only a crafted file can make a module its own descendant
            raise CheckpointError(f"module {prefix!r} contains itself")
        active.add(id(self))
        for group in (self.parameters, {k: v for k, v in self.buffers.items() if k not in self.non_persistent}):
            for name, value in group.items():
                if value is None:  # torch skips unset (None) parameters and buffers too
                    continue
                if not isinstance(value, np.ndarray):
                    raise CheckpointError(f"{prefix}{name} is a {type(value).__name__}, not a tensor")
                out[prefix + name] = value
        for name, child in self.modules.items():
            if child is None:
                continue
            if not isinstance(child, PersistentObject):
                raise CheckpointError(f"submodule {prefix}{name} is a {type(child).__name__}, not a network object")
            child._collect(out, f"{prefix}{name}.", active)
        active.discard(id(self))


def _plain(obj):
    """Deep-copy dict containers as plain dicts (OrderedDict/EasyDict lose their extras)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, tuple) and type(obj) is tuple:
        return tuple(_plain(v) for v in obj)
    return obj


class _Unpickler(pickle.Unpickler):
    """Unpickler that resolves only tensor/network globals, each to a local numpy stand-in.

    Callables are handed out as bound methods and the classes are immutable builtins, so a
    hostile BUILD opcode cannot rebind code (it can at most add inert entries to a method's
    function __dict__); one file cannot alter what the next load runs.
    `storage_loader(storage_type, key, numel, view_metadata)` returns the storage for a
    persistent id; None means the stream may hold no storages (e.g. an NVIDIA outer pickle).
    """

    def __init__(self, file, source: str, storage_loader=None):
        super().__init__(file)
        self.source = source
        self.storage_loader = storage_loader

    def find_class(self, module: str, name: str):
        # Protocol-2 pickles use Python 2 module names; pickle's own find_class maps them, ours must.
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
        if module.startswith(("dnnlib.tflib", "tensorflow")):
            raise CheckpointError(
                f"{self.source}: TensorFlow StyleGAN pickles are not supported; convert it to PyTorch "
                "first with stylegan2-ada-pytorch's legacy.py (convert_network_pickle) and pass the result")
        allowed = {
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("builtins", "set"): set,  # protocols 2/3 have no set opcodes (_non_persistent_buffers_set)
            ("builtins", "frozenset"): frozenset,
            ("_codecs", "encode"): self._codecs_encode,  # protocol 2 spells bytes this way
            ("dnnlib.util", "EasyDict"): dict,  # an attribute-access dict; the data is all we need
            ("dnnlib", "EasyDict"): dict,
            ("argparse", "Namespace"): types.SimpleNamespace,  # rosinality train.py saves its args
            ("torch", "Size"): tuple,
            ("torch_utils.persistence", "_reconstruct_persistent_obj"): self._reconstruct_persistent_obj,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): self._rebuild_parameter,
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor_v2,
            ("torch._utils", "_rebuild_tensor"): self._rebuild_tensor_v2,
            ("torch.storage", "_load_from_bytes"): self._load_from_bytes,
            ("numpy", "dtype"): np.dtype,
            ("numpy._core.multiarray", "scalar"): self._numpy_scalar,  # numpy 2.x name
            ("numpy.core.multiarray", "scalar"): self._numpy_scalar,  # numpy 1.x name
            ("numpy._core.multiarray", "_reconstruct"): self._numpy_reconstruct,
            ("numpy.core.multiarray", "_reconstruct"): self._numpy_reconstruct,
            ("numpy", "ndarray"): np.ndarray,
        }
        if (module, name) in allowed:
            return allowed[module, name]
        if module == "torch" and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        raise CheckpointError(f"refusing to load global {module}.{name} from {self.source}: not a tensor/network type")

    def persistent_load(self, pid):
        if self.storage_loader is None or not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise CheckpointError(f"{self.source}: unexpected persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"{self.source}: bad storage record {pid!r}")
        return self.storage_loader(storage_type, str(key), numel, pid[5] if len(pid) == 6 else None)

    # ---- stand-ins for the allow-listed callables ----

    def _reconstruct_persistent_obj(self, meta):
        if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
            raise CheckpointError(f"{self.source}: unsupported persistent object record")
        # meta["module_src"] is the class's Python source; it is deliberately ignored, never run.
        state = dict(meta["state"])
        parts = [state.pop(k, None) or {} for k in ("_parameters", "_buffers", "_modules")]
        if not all(isinstance(p, dict) for p in parts):
            raise CheckpointError(f"{self.source}: malformed state of {meta.get('class_name')!r}")
        return PersistentObject(
            class_name=str(meta.get("class_name")),
            parameters=parts[0], buffers=parts[1], modules=parts[2],
            non_persistent=frozenset(state.pop("_non_persistent_buffers_set", None) or ()),
            attrs=state,
        )

    def _rebuild_parameter(self, data, requires_grad=False, backward_hooks=None, state=None):
        return data  # a Parameter is a tensor plus autograd flags; only the data matters here

    def _rebuild_tensor_v2(self, storage, offset, size, stride, *_autograd_and_metadata):
        if not isinstance(storage, np.ndarray) or storage.ndim != 1:
            raise CheckpointError(f"{self.source}: tensor without a storage")
        size, stride = tuple(size), tuple(stride)
        if (len(size) != len(stride) or not isinstance(offset, int) or offset < 0
                or any(not isinstance(v, int) or v < 0 for v in size + stride)):
            raise CheckpointError(f"{self.source}: bad tensor layout offset={offset} size={size} stride={stride}")
        if 0 in size:
            return np.zeros(size, storage.dtype)
        # Bounds check first: as_strided would otherwise read outside the storage's memory.
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.size:
            raise CheckpointError(f"{self.source}: tensor exceeds its storage ({last} >= {storage.size})")
        if _is_contiguous(size, stride):
            # A view, not a copy: in a legacy stream the storage is filled after the tensors exist.
            return storage[offset:offset + math.prod(size)].reshape(size)
        return np.lib.stride_tricks.as_strided(
            storage[offset:], size, [s * storage.itemsize for s in stride], writeable=False)

    def _load_from_bytes(self, data):
        if not isinstance(data, (bytes, bytearray)):
            raise CheckpointError(f"{self.source}: storage payload is not bytes")
        storage = _load_torch_stream(io.BytesIO(data), f"a storage in {self.source}")
        if not isinstance(storage, np.ndarray):
            raise CheckpointError(f"{self.source}: storage payload holds no storage")
        return storage

    def _codecs_encode(self, text, encoding="utf-8"):
        if not isinstance(text, str) or encoding != "latin1":
            raise CheckpointError(f"{self.source}: unsupported encoded bytes")
        return text.encode("latin1")

    def _numpy_scalar(self, dtype, data=None):
        ok = isinstance(dtype, np.dtype) and not dtype.hasobject and isinstance(data, bytes)
        if not ok or len(data) != dtype.itemsize:
            raise CheckpointError(f"{self.source}: unsupported numpy scalar")
        return np.frombuffer(data, dtype)[0]

    def _numpy_reconstruct(self, subtype, shape, dtype):
        if subtype is not np.ndarray:
            raise CheckpointError(f"{self.source}: unsupported numpy array subclass")
        # numpy writes shape (0,) here and sets the real shape and data in BUILD (ndarray.__setstate__);
        # ignoring `shape` keeps a crafted file from allocating memory it does not contain.
        return np.ndarray((0,), np.dtype(dtype))


def _is_contiguous(size, stride) -> bool:
    expected = 1
    for n, s in reversed(list(zip(size, stride))):
        if n != 1 and s != expected:
            return False
        expected *= n
    return True


def _load_torch_stream(f, source: str):
    """Load a torch.save stream (zip or legacy) from a binary file object."""
    head = f.read(4)
    f.seek(0)
    if head == _ZIP_PREFIX:
        return _load_zip(f, source)
    return _load_legacy(f, source)


def _load_zip(f, source: str):
    zf = zipfile.ZipFile(f)
    pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
        raise CheckpointError(f"{source}: not a torch.save zip (no single <name>/data.pkl)")
    prefix = pkls[0][: -len("data.pkl")]
    order = "little"  # files from torch < 1.10 have no byteorder record and are little-endian
    if prefix + "byteorder" in zf.namelist():
        order = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if order not in ("little", "big"):
            raise CheckpointError(f"{source}: unknown byteorder record {order!r}")
    storages: dict[str, np.ndarray] = {}

    def load_storage(storage_type, key, numel, _view):
        if key not in storages:
            raw = zf.read(f"{prefix}data/{key}")  # zipfile checks the CRC: corruption is caught here
            nbytes = numel * storage_type.dtype.itemsize
            if len(raw) < nbytes:
                raise CheckpointError(f"{source}: storage {key} has {len(raw)} bytes, expected {nbytes}")
            stored = np.frombuffer(raw, storage_type.dtype, count=numel)
            storages[key] = stored.byteswap() if order != sys.byteorder else stored.copy()  # writable
        return storages[key]

    return _Unpickler(io.BytesIO(zf.read(pkls[0])), source, load_storage).load()


def _load_legacy(f, source: str):
    """Non-zip torch.save: magic, version, sys_info, main pickle, key list, then per key int64 numel + data."""
    size = f.seek(0, io.SEEK_END)  # bounds storage allocations by what the file can hold
    f.seek(0)

    def plain():  # the header, key-list pickles: no storages
        return _Unpickler(f, source).load()

    if plain() != _LEGACY_MAGIC:
        raise CheckpointError(f"{source}: not a torch.save file (bad magic number)")
    if plain() != _LEGACY_VERSION:
        raise CheckpointError(f"{source}: unsupported legacy torch.save version")
    sys_info = plain()
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
        raise CheckpointError(f"{source}: big-endian legacy torch.save files are not supported")
    roots: dict[str, np.ndarray] = {}

    def load_storage(storage_type, key, numel, view):
        # The data comes after the pickle; allocate now (bounded by the file size), fill below.
        if numel * storage_type.dtype.itemsize > size:
            raise CheckpointError(f"{source}: storage {key} is larger than the file")
        if key not in roots:
            roots[key] = np.zeros(numel, storage_type.dtype)
        root = roots[key]
        if root.size != numel or root.dtype != storage_type.dtype:
            raise CheckpointError(f"{source}: storage {key} declared twice with different sizes")
        if view is None:
            return root
        _view_key, view_offset, view_size = view  # torch < 1.0 storage views
        if view_offset < 0 or view_size < 0 or view_offset + view_size > numel:
            raise CheckpointError(f"{source}: storage view outside storage {key}")
        return root[view_offset:view_offset + view_size]

    result = _Unpickler(f, source, load_storage).load()
    keys = plain()
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(roots):
        raise CheckpointError(f"{source}: storage key list does not match the pickle")
    for key in map(str, keys):
        root = roots[key]
        (numel,) = struct.unpack("<q", f.read(8))
        if numel != root.size:
            raise CheckpointError(f"{source}: storage {key} has {numel} elements, expected {root.size}")
        raw = f.read(numel * root.itemsize)
        if len(raw) != numel * root.itemsize:
            raise CheckpointError(f"{source}: truncated data of storage {key}")
        data = np.frombuffer(raw, root.dtype)
        root[:] = data.byteswap() if sys.byteorder != "little" else data  # the data is little-endian
    return result


def _guarded(path, what, fn):
    """Run fn(path) turning every parse failure into CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        return fn(path)
    except CheckpointError:
        raise
    except _CORRUPT as e:
        raise CheckpointError(f"{path}: corrupt or truncated {what} ({type(e).__name__}: {e})") from e


def read_nvidia_pickle(path) -> dict:
    """Read an NVIDIA stylegan2-ada-pytorch network pickle without torch.

    Returns {"G_ema" | "G" | "D": {"state": OrderedDict[torch name -> np.ndarray],
    "init_kwargs": dict, "class_name": str}} for each of those networks present.
    """

    def read(p: Path):
        with open(p, "rb") as f:
            if f.read(4) == _ZIP_PREFIX:
                raise CheckpointError(f"{p}: a torch.save zip, not an NVIDIA network pickle (see read_torch_zip)")
            f.seek(0)
            data = _Unpickler(f, str(p)).load()
        if not isinstance(data, dict):
            kind = type(data).__name__
            raise CheckpointError(f"{p}: not a stylegan2-ada-pytorch network pickle (top level is a {kind})")
        nets = {}
        for name in ("G", "D", "G_ema"):
            obj = data.get(name)
            if isinstance(obj, PersistentObject):
                kwargs = obj.attrs.get("_init_kwargs") or {}
                if not isinstance(kwargs, dict):
                    raise CheckpointError(f"{p}: {name} has malformed _init_kwargs")
                nets[name] = {"state": obj.state_dict(), "init_kwargs": _plain(kwargs), "class_name": obj.class_name}
        if not nets:
            raise CheckpointError(f"{p}: no G, D or G_ema network in this pickle (keys: {sorted(map(str, data))})")
        return nets

    return _guarded(path, "network pickle", read)


def read_torch_zip(path) -> Any:
    """Read a torch.save file (zip format, or the pre-1.6 legacy format) without torch.

    Tensors become numpy arrays (views of their storage: tensors that shared a storage in torch
    share memory here too; non-contiguous ones are read-only); containers keep their types
    (dict/OrderedDict/list/tuple; argparse.Namespace becomes types.SimpleNamespace).
    """

    def read(p: Path):
        with open(p, "rb") as f:
            head = f.read(len(_LEGACY_PREFIX))
            if not (head.startswith(_ZIP_PREFIX) or head == _LEGACY_PREFIX):
                hint = " (NVIDIA network pickles are read by read_nvidia_pickle)" if head[:1] == pickle.PROTO else ""
                raise CheckpointError(f"{p}: not a torch.save file{hint}")
            f.seek(0)
            return _load_torch_stream(f, str(p))

    return _guarded(path, "torch checkpoint", read)


def sniff_format(path) -> str:
    """Guess a checkpoint's format from its first bytes (files) or marker files (directories).

    Returns "nvidia-pkl", "torch-zip", "torch-legacy" (pre-1.6 torch.save; read_torch_zip reads
    it) or "orbax-dir"; raises CheckpointError("unknown format") otherwise.
    """
    path = Path(path)
    if path.is_dir():
        # An orbax checkpoint, or a CheckpointManager root whose step folders are checkpoints.
        for d in [path, *(c for c in path.iterdir() if c.is_dir())]:
            if any((d / m).exists() for m in _ORBAX_MARKERS):
                return "orbax-dir"
        raise CheckpointError(f"unknown format: {path} is a directory without orbax checkpoint files")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_PREFIX))
    if head.startswith(_ZIP_PREFIX):
        return "torch-zip"
    if head.startswith(_LEGACY_PREFIX):
        return "torch-legacy"
    if len(head) >= 2 and head[0] == pickle.PROTO[0] and 2 <= head[1] <= 5:
        return "nvidia-pkl"
    raise CheckpointError(f"unknown format: {path} is not a network pickle, torch.save file or orbax directory")
