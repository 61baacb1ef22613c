"""Torch-free readers for PyTorch StyleGAN2 checkpoints.

Reads NVIDIA stylegan2-ada-pytorch network pickles (`network-snapshot-*.pkl`) and `torch.save`
files (zip, e.g. rosinality `.pt`, and the older non-zip "legacy" stream) into numpy arrays,
without importing torch.

Every file is treated as hostile (see `chunkygan_jax.safe_pickle`):

* Every global a pickle names goes through an allow-list (`_Unpickler.resolve_global`) that maps it
  to a small local stand-in; nothing else is imported or called, no numpy array constructor is
  reachable, and the NVIDIA `module_src` (the network's Python source) is never executed.
* Arrays come only from storages this reader created, sized from the file; each tensor view is
  checked against its storage (offset, sizes, strides: none negative, none overlapping, all
  inside the storage) before it is built.
* Zip entries are checked against the bytes their storage needs before anything is inflated, and
  never inflated past that.
* Everything a file makes the reader allocate is charged to one budget of twice the file's size
  plus a fixed allowance, and every failure is a one-line `CheckpointError` naming the file.
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
from ..safe_pickle import MAX_DIMS, BoundedReader, MemoryBudget, SafeUnpickler, clip

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
_CHUNK = 16 << 20  # zip entries are inflated this much at a time, straight into their array
_MAX_DEPTH = 64  # submodule nesting; StyleGAN2 networks need 4
_MAX_NAME_BYTES = 64 << 20  # all state-dict names of one network together
# A TensorFlow network pickle's first object is a dnnlib.tflib.network.Network: the global that names
# it (GLOBAL up to protocol 3, a short string for STACK_GLOBAL from 4) comes within the first opcodes.
_TF_NETWORK_CLASS = (b"cdnnlib.tflib.network\nNetwork\n", b"\x8c\x14dnnlib.tflib.network")
_SNIFF_BYTES = 4096

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

# A storage this reader created: a 1-D array it owns. `filled` is False while a legacy stream's
# data (which follows the pickle) has not been read yet. The only way a pickle gets one is a
# persistent id, and being a namedtuple it cannot be altered by BUILD.
_Storage = collections.namedtuple("_Storage", "array filled")

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
        """Flat {torch name: array} in torch's state_dict order (params, buffers, then children).

        A crafted file could make the names explode (one submodule reachable along many paths,
        deep nesting, huge names), so a submodule may appear once, nesting is limited to
        64 levels and the names to 64 MiB together.
        """
        out: collections.OrderedDict = collections.OrderedDict()
        self._collect(out, "", set(), set(), [0])
        return out

    def _collect(self, out, prefix, active, seen, spent):
        if id(self) in active:  # only a crafted file can make a module its own descendant
            raise CheckpointError(clip(f"module {prefix!r} contains itself"))
        if id(self) in seen:
            raise CheckpointError(clip(f"submodule {prefix[:-1]!r} is reachable along more than one path"))
        if len(active) >= _MAX_DEPTH:
            raise CheckpointError(clip(f"submodule {prefix[:-1]!r} is nested more than {_MAX_DEPTH} levels deep"))
        active.add(id(self))
        seen.add(id(self))
        for group in (self.parameters, {k: v for k, v in self.buffers.items() if k not in self.non_persistent}):
            for name, value in group.items():
                if value is None:  # torch skips unset (None) parameters and buffers too
                    continue
                if not isinstance(name, str):
                    raise CheckpointError(clip(f"a tensor in {prefix!r} has a {type(name).__name__} for a name"))
                if not isinstance(value, np.ndarray):
                    raise CheckpointError(clip(f"{prefix}{name} is a {type(value).__name__}, not a tensor"))
                key = prefix + name
                spent[0] += len(key) + 100
                if spent[0] > _MAX_NAME_BYTES:
                    raise CheckpointError("state dict names take more than 64 MiB")
                out[key] = value
        for name, child in self.modules.items():
            if child is None:
                continue
            if not isinstance(name, str):
                raise CheckpointError(clip(f"a submodule of {prefix!r} has a {type(name).__name__} for a name"))
            if not isinstance(child, PersistentObject):
                raise CheckpointError(clip(f"submodule {prefix}{name} is a {type(child).__name__}, not a network object"))
            child._collect(out, f"{prefix}{name}.", active, seen, spent)
        active.discard(id(self))


def _plain(obj, memo=None):
    """Deep-copy dict containers as plain dicts (OrderedDict/EasyDict lose their extras).

    Shared sub-objects stay shared: expanding them could grow a crafted file exponentially.
    """
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, dict):
        out = memo[id(obj)] = {}
        out.update((k, _plain(v, memo)) for k, v in obj.items())
    elif isinstance(obj, list):
        out = memo[id(obj)] = []
        out.extend(_plain(v, memo) for v in obj)
    elif isinstance(obj, tuple) and type(obj) is tuple:
        out = memo[id(obj)] = tuple(_plain(v, memo) for v in obj)
    else:
        return obj
    return out


class _Unpickler(SafeUnpickler):
    """Unpickler that resolves only tensor/network globals, each to a local stand-in.

    Callables are bound methods of this unpickler or builtin classes; the pure-Python base
    class calls only those, creates objects only of `instantiable` classes and sets attributes
    only on `attribute_targets`, so one file cannot alter what the next load runs.
    `storage_loader(storage_type, key, numel, view_metadata)` returns the `_Storage` for a
    persistent id; None means the stream may hold no storages (e.g. an NVIDIA outer pickle).
    """

    instantiable = frozenset({dict, types.SimpleNamespace, collections.OrderedDict})
    attribute_targets = (collections.OrderedDict, types.SimpleNamespace)  # state_dict _metadata, argparse args

    def __init__(self, file, source: str, budget: MemoryBudget | None = None, storage_loader=None):
        super().__init__(file, source, budget=budget)
        self.storage_loader = storage_loader

    def find_class(self, module: str, name: str):
        # Protocol-2 pickles use Python 2 module names; pickle's own find_class maps them, ours must.
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
        if module.startswith(("dnnlib.tflib", "tensorflow")):  # sniff_format sends those to tf_pickle.py
            raise CheckpointError(f"{self.source}: a TensorFlow network pickle, not a PyTorch one (see read_tf_pickle)")
        return super().find_class(module, name)

    def resolve_global(self, module: str, name: str):
        allowed = {
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("builtins", "set"): set,  # protocols 2/3 have no set opcodes (_non_persistent_buffers_set)
            ("builtins", "frozenset"): frozenset,
            ("_codecs", "encode"): self.codecs_encode,  # protocol 2 spells bytes this way
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
            # numpy scalars in network kwargs; no numpy array can be made here.
            ("numpy", "dtype"): self.numpy_dtype,
            ("numpy._core.multiarray", "scalar"): self.numpy_scalar,  # numpy 2.x name
            ("numpy.core.multiarray", "scalar"): self.numpy_scalar,  # numpy 1.x name
        }
        if (module, name) in allowed:
            return allowed[module, name]
        if module == "torch" and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        return None

    def refusal(self, module: str, name: str) -> str:
        return f"refusing to load global {module}.{name} from {self.source}: not a tensor/network type"

    def persistent_load(self, pid):
        if self.storage_loader is None or not (type(pid) is tuple and len(pid) in (5, 6) and pid[0] == "storage"):
            raise CheckpointError(clip(f"{self.source}: unexpected persistent id {pid!r:.100}"))
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType) or type(numel) is not int or numel < 0:
            raise CheckpointError(clip(f"{self.source}: bad storage record {pid!r:.100}"))
        if type(key) not in (str, int) or len(str(key)) > 64:
            raise CheckpointError(clip(f"{self.source}: bad storage key {key!r:.40}"))
        return self.storage_loader(storage_type, str(key), numel, pid[5] if len(pid) == 6 else None)

    # ---- stand-ins for the allow-listed callables ----

    def _reconstruct_persistent_obj(self, meta):
        if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
            raise CheckpointError(f"{self.source}: unsupported persistent object record")
        # meta["module_src"] is the class's Python source; it is deliberately ignored, never run.
        self.budget.charge(256 + 100 * len(meta["state"]), "a network object")
        state = dict(meta["state"])
        parts = [state.pop(k, None) or {} for k in ("_parameters", "_buffers", "_modules")]
        if not all(isinstance(p, dict) for p in parts):
            raise CheckpointError(clip(f"{self.source}: malformed state of {meta.get('class_name')!r:.80}"))
        non_persistent = state.pop("_non_persistent_buffers_set", None) or ()
        if not isinstance(non_persistent, (set, frozenset, list, tuple)):
            raise CheckpointError(f"{self.source}: malformed _non_persistent_buffers_set")
        self.budget.charge(64 * len(non_persistent), "a network object")
        return PersistentObject(
            class_name=clip(meta.get("class_name"), 200),
            parameters=parts[0], buffers=parts[1], modules=parts[2],
            non_persistent=frozenset(non_persistent),
            attrs=state,
        )

    def _rebuild_parameter(self, data, requires_grad=False, backward_hooks=None, state=None):
        return data  # a Parameter is a tensor plus autograd flags; only the data matters here

    def _rebuild_tensor_v2(self, storage, offset, size, stride, *_autograd_and_metadata):
        if not isinstance(storage, _Storage):
            raise CheckpointError(f"{self.source}: tensor data does not come from a storage of this file")
        return _tensor_view(storage, offset, size, stride, self.source, self.budget)

    def _load_from_bytes(self, data):
        if type(data) is not bytes:
            raise CheckpointError(f"{self.source}: storage payload is not bytes")
        storage = _load_torch_stream(io.BytesIO(data), f"a storage in {self.source}", self.budget)
        if not isinstance(storage, _Storage):
            raise CheckpointError(f"{self.source}: storage payload holds no storage")
        return storage._replace(filled=True)  # its data has been read by now


def _tensor_view(storage: _Storage, offset, size, stride, source: str, budget: MemoryBudget) -> np.ndarray:
    """The array torch's `_rebuild_tensor_v2` describes, after checking it lies inside its storage.

    Contiguous tensors are views of their storage (tensors sharing a storage share memory, as in
    torch). Other layouts are copied once the storage holds its data; a legacy stream's tensors
    exist before their storage is filled, so those stay read-only views.
    """
    data = storage.array
    if not (isinstance(data, np.ndarray) and data.ndim == 1 and data.flags.c_contiguous):
        raise CheckpointError(f"{source}: tensor data does not come from a storage of this file")
    if type(size) not in (tuple, list) or type(stride) not in (tuple, list):
        raise CheckpointError(clip(f"{source}: malformed tensor record (size {size!r:.60}, stride {stride!r:.60})"))
    size, stride = tuple(size), tuple(stride)
    layout = f"offset={offset!r:.40} size={size!r:.80} stride={stride!r:.80}"

    def bad(problem):
        return CheckpointError(clip(f"{source}: bad tensor layout {layout}: {problem}"))

    if type(offset) is not int or any(type(v) is not int for v in size + stride):
        raise bad("offset, sizes and strides must be integers")
    if len(size) != len(stride) or len(size) > MAX_DIMS:
        raise bad(f"sizes and strides must match, at most {MAX_DIMS} dimensions")
    if offset < 0:
        raise bad("negative storage offset")
    if min(size, default=0) < 0:
        raise bad("negative size")
    if min(stride, default=0) < 0:
        raise bad("negative stride")
    count = math.prod(size)
    if count == 0:
        if offset > data.size or max(size, default=0) > data.size + 1:
            raise bad(f"outside its storage of {data.size} elements")
        return np.zeros(size, data.dtype)
    # No two index tuples may reach the same element: ordered by stride, each dimension must
    # step past everything the smaller-stride dimensions reach (so stride 0 on a size > 1 fails).
    reach = 0
    for s, n in sorted((s, n) for n, s in zip(size, stride) if n > 1):
        if s <= reach:
            raise bad(f"overlapping strides (stride {s} on a dimension of size {n})")
        reach += (n - 1) * s
    last = offset + reach
    if last >= data.size:
        raise bad(f"exceeds its storage (reaches element {last}, the storage has {data.size})")
    if _is_contiguous(size, stride):
        return data[offset:offset + count].reshape(size)
    window = data[offset:last + 1]  # every element the view reaches, checked above
    view = np.lib.stride_tricks.as_strided(window, size, [s * data.itemsize for s in stride], writeable=False)
    if not storage.filled:
        return view
    budget.charge(count * data.itemsize, f"a strided tensor of shape {size}")
    return np.ascontiguousarray(view)


def _is_contiguous(size, stride) -> bool:
    expected = 1
    for n, s in reversed(list(zip(size, stride))):
        if n != 1 and s != expected:
            return False
        expected *= n
    return True


def _load_torch_stream(f, source: str, budget: MemoryBudget):
    """Load a torch.save stream (zip or legacy) from a seekable binary file object."""
    head = f.read(4)
    f.seek(0)
    if head == _ZIP_PREFIX:
        return _load_zip(f, source, budget)
    return _load_legacy(f, source, budget)


def _zip_directory_size(f, size: int) -> int | None:
    """Size of the zip's central directory, read from its end record the way zipfile finds it."""
    tail_size = min(size, 22 + 0xFFFF)  # end record + the longest comment
    f.seek(size - tail_size)
    tail = f.read(tail_size)
    if tail[-22:-18] == b"PK\x05\x06" and tail[-2:] == b"\0\0":
        at = len(tail) - 22
    else:
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return None  # zipfile reports the damage
    directory = struct.unpack("<4s4H2LH", tail[at:at + 22])[5]
    eocd = size - tail_size + at
    if eocd >= 76:  # zip64: a locator just before the end record, the zip64 record before that
        f.seek(eocd - 76)
        record = f.read(76)
        if record[56:60] == b"PK\x06\x07" and record[:4] == b"PK\x06\x06":
            directory = struct.unpack("<Q", record[40:48])[0]
    return directory


def _deflate_bound(n: int) -> int:
    """Most bytes deflate can take for n bytes of data (stored blocks, a header, slack)."""
    return n + n // 1000 + 1024


def _read_entry(zf: zipfile.ZipFile, name: str, nbytes: int, out: np.ndarray | None, source: str):
    """Read zip entry `name`, which must hold exactly `nbytes`, inflating no more than that.

    Fills `out` (a uint8 view) when given, else returns the bytes.
    """
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise CheckpointError(clip(f"{source}: zip entry {name} is missing")) from None
    if info.flag_bits & 0x1:
        raise CheckpointError(clip(f"{source}: zip entry {name} is encrypted"))
    if info.file_size != nbytes:
        raise CheckpointError(clip(f"{source}: zip entry {name} holds {info.file_size} bytes, {nbytes} expected"))
    if info.compress_type == zipfile.ZIP_STORED:
        ok = info.compress_size == nbytes
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        ok = info.compress_size <= _deflate_bound(nbytes)
    else:
        raise CheckpointError(clip(f"{source}: zip entry {name} uses compression method {info.compress_type}; "
                                   "torch.save files are stored or deflated"))
    if not ok:
        raise CheckpointError(clip(f"{source}: zip entry {name} has {info.compress_size} bytes of compressed "
                                   f"data, more than {nbytes} bytes can need"))
    buffer = out if out is not None else np.empty(nbytes, np.uint8)
    done = 0
    with zf.open(info) as fh:  # zipfile checks the CRC when the entry's last byte is read
        while done < nbytes:
            chunk = fh.read(min(nbytes - done, _CHUNK))  # inflates at most what is asked for
            if not chunk:
                break
            buffer[done:done + len(chunk)] = np.frombuffer(chunk, np.uint8)
            done += len(chunk)
    if done != nbytes:
        raise CheckpointError(clip(f"{source}: zip entry {name} ends after {done} of its {nbytes} bytes"))
    return None if out is not None else buffer.tobytes()


def _load_zip(f, source: str, budget: MemoryBudget):
    size = f.seek(0, io.SEEK_END)
    directory = _zip_directory_size(f, size)
    if directory is not None:
        if directory > size:
            raise CheckpointError(clip(f"{source}: zip directory of {directory} bytes in a {size}-byte file"))
        budget.charge(20 * directory, "the zip directory")  # zipfile keeps ~20 bytes per directory byte
    f.seek(0)
    zf = zipfile.ZipFile(BoundedReader(f, size, source=source))
    names = zf.namelist()
    pkls = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
        raise CheckpointError(f"{source}: not a torch.save zip (no single <name>/data.pkl)")
    prefix = pkls[0][: -len("data.pkl")]
    order = "little"  # files from torch < 1.10 have no byteorder record and are little-endian
    if prefix + "byteorder" in names:
        record = zf.getinfo(prefix + "byteorder")
        if record.file_size > 16:
            raise CheckpointError(f"{source}: byteorder record of {record.file_size} bytes")
        order = _read_entry(zf, prefix + "byteorder", record.file_size, None, source)
        order = order.decode("ascii", "replace").strip()
        if order not in ("little", "big"):
            raise CheckpointError(clip(f"{source}: unknown byteorder record {order!r:.40}"))
    storages: dict[str, _Storage] = {}

    def load_storage(storage_type, key, numel, _view):
        if key in storages:
            storage = storages[key]
            if storage.array.dtype != storage_type.dtype or storage.array.size != numel:
                raise CheckpointError(f"{source}: storage {key} declared twice with different types or sizes")
            return storage
        nbytes = numel * storage_type.dtype.itemsize
        budget.charge(nbytes, f"storage {key}")  # before anything is allocated or inflated
        array = np.empty(numel, storage_type.dtype)
        _read_entry(zf, f"{prefix}data/{key}", nbytes, array.view(np.uint8), source)
        if order != sys.byteorder:
            array.byteswap(inplace=True)
        storages[key] = _Storage(array, True)
        return storages[key]

    pkl_size = zf.getinfo(pkls[0]).file_size
    budget.charge(2 * pkl_size, "data.pkl")  # read, then copied into bytes
    data = _read_entry(zf, pkls[0], pkl_size, None, source)
    return _Unpickler(io.BytesIO(data), source, budget, load_storage).load()


def _load_legacy(f, source: str, budget: MemoryBudget):
    """Non-zip torch.save: magic, version, sys_info, main pickle, key list, then per key int64 numel + data."""
    size = f.seek(0, io.SEEK_END)  # bounds storage allocations by what the file can hold
    f.seek(0)

    def plain():  # the header, key-list pickles: no storages
        return _Unpickler(f, source, budget).load()

    if plain() != _LEGACY_MAGIC:
        raise CheckpointError(f"{source}: not a torch.save file (bad magic number)")
    if plain() != _LEGACY_VERSION:
        raise CheckpointError(f"{source}: unsupported legacy torch.save version")
    sys_info = plain()
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
        raise CheckpointError(f"{source}: big-endian legacy torch.save files are not supported")
    roots: dict[str, np.ndarray] = {}
    declared = [0]  # bytes of all storages so far: their data must all be in the file

    def load_storage(storage_type, key, numel, view):
        # The data comes after the pickle; allocate now (bounded by the file size), fill below.
        if key not in roots:
            nbytes = numel * storage_type.dtype.itemsize
            declared[0] += nbytes
            if declared[0] > size:
                raise CheckpointError(clip(f"{source}: storage {key} of {nbytes} bytes takes its storages past "
                                           f"the {size} bytes of the file"))
            budget.charge(nbytes, f"storage {key}")
            roots[key] = np.zeros(numel, storage_type.dtype)
        root = roots[key]
        if root.size != numel or root.dtype != storage_type.dtype:
            raise CheckpointError(f"{source}: storage {key} declared twice with different sizes")
        if view is None:
            return _Storage(root, False)
        # torch < 1.0 storage views: (view key, offset, size)
        if not (type(view) is tuple and len(view) == 3 and type(view[1]) is int and type(view[2]) is int):
            raise CheckpointError(clip(f"{source}: malformed storage view {view!r:.80}"))
        _view_key, view_offset, view_size = view
        if view_offset < 0 or view_size < 0 or view_offset + view_size > numel:
            raise CheckpointError(f"{source}: storage view outside storage {key}")
        return _Storage(root[view_offset:view_offset + view_size], False)

    result = _Unpickler(f, source, budget, load_storage).load()
    keys = plain()
    if not isinstance(keys, list) or len(keys) != len(roots) or sorted(map(str, keys)) != sorted(roots):
        raise CheckpointError(f"{source}: storage key list does not match the pickle")
    for key in map(str, keys):
        root = roots[key]
        (numel,) = struct.unpack("<q", f.read(8))
        if numel != root.size:
            raise CheckpointError(f"{source}: storage {key} has {numel} elements, expected {root.size}")
        if f.readinto(root.view(np.uint8)) != root.nbytes:
            raise CheckpointError(f"{source}: truncated data of storage {key}")
        if sys.byteorder != "little":  # the data is little-endian
            root.byteswap(inplace=True)
    return result


def _guarded(path, what, fn):
    """Run fn(path, budget) turning every failure into a one-line CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        return fn(path, MemoryBudget(str(path), path.stat().st_size))
    except CheckpointError as e:
        raise CheckpointError(clip(e, 500)) from None
    except OSError as e:
        raise CheckpointError(clip(f"cannot read {what} {path}: {e.strerror or e}")) from e
    except _CORRUPT as e:
        raise CheckpointError(clip(f"{path}: corrupt or truncated {what} ({type(e).__name__}: {e})")) from e


def read_nvidia_pickle(path) -> dict:
    """Read an NVIDIA stylegan2-ada-pytorch network pickle without torch.

    Returns {"G_ema" | "G" | "D": {"state": OrderedDict[torch name -> np.ndarray],
    "init_kwargs": dict, "class_name": str}} for each of those networks present.
    """

    def read(p: Path, budget: MemoryBudget):
        with open(p, "rb") as f:
            if f.read(4) == _ZIP_PREFIX:
                raise CheckpointError(f"{p}: a torch.save zip, not an NVIDIA network pickle (see read_torch_zip)")
            f.seek(0)
            data = _Unpickler(f, str(p), budget).load()
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
                try:
                    state = obj.state_dict()
                except CheckpointError as e:
                    raise CheckpointError(f"{p}: {name}: {e}") from None
                nets[name] = {"state": state, "init_kwargs": _plain(kwargs), "class_name": obj.class_name}
        if not nets:
            keys = clip(sorted(str(k)[:40] for k in data)[:20], 200)
            raise CheckpointError(f"{p}: no G, D or G_ema network in this pickle (keys: {keys})")
        return nets

    return _guarded(path, "network pickle", read)


def read_torch_zip(path) -> Any:
    """Read a torch.save file (zip format, or the pre-1.6 legacy format) without torch.

    Tensors become numpy arrays (contiguous ones are views of their storage: tensors that shared
    a storage in torch share memory here too; other layouts are copies, or read-only views in a
    legacy file); containers keep their types (dict/OrderedDict/list/tuple; argparse.Namespace
    becomes types.SimpleNamespace).
    """

    def read(p: Path, budget: MemoryBudget):
        with open(p, "rb") as f:
            head = f.read(len(_LEGACY_PREFIX))
            if not (head.startswith(_ZIP_PREFIX) or head == _LEGACY_PREFIX):
                hint = " (NVIDIA network pickles are read by read_nvidia_pickle)" if head[:1] == pickle.PROTO else ""
                raise CheckpointError(f"{p}: not a torch.save file{hint}")
            f.seek(0)
            return _load_torch_stream(f, str(p), budget)

    return _guarded(path, "torch checkpoint", read)


def sniff_format(path) -> str:
    """Guess a checkpoint's format from its first bytes (files) or marker files (directories).

    Returns "nvidia-pkl", "nvidia-tf-pkl" (NVIDIA's TensorFlow network pickles, which name their
    network class within the first few kilobytes), "torch-zip", "torch-legacy" (pre-1.6 torch.save;
    read_torch_zip reads it) or "orbax-dir"; raises CheckpointError("unknown format") otherwise.
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
        head = f.read(_SNIFF_BYTES)
    if head.startswith(_ZIP_PREFIX):
        return "torch-zip"
    if head.startswith(_LEGACY_PREFIX):
        return "torch-legacy"
    if len(head) >= 2 and head[0] == pickle.PROTO[0] and 2 <= head[1] <= 5:
        return "nvidia-tf-pkl" if any(tag in head for tag in _TF_NETWORK_CLASS) else "nvidia-pkl"
    raise CheckpointError(f"unknown format: {path} is not a network pickle, torch.save file or orbax directory")
