"""Restricted unpickling of files that may have been crafted to attack the reader.

A pickle is a small program: its opcodes build objects, look globals up by name and call them.
Checkpoints and weight files are read through this module, which gives three guarantees:

* Nothing runs that the reader did not allow. `SafeUnpickler` resolves globals only through its
  subclass's allow-list, calls only what that list handed out, creates objects (NEWOBJ) only of
  declared classes and applies pickled state (BUILD) only to declared targets.
* No length or index written in the file makes the reader allocate for it. `prescan` walks the
  opcode stream with `pickletools.genops` before anything is built, and refuses lengths (strings,
  bytes, frames) longer than the bytes that remain, memo indices that skip ahead of what was
  stored, and opcodes no checkpoint needs.
* Memory stays proportional to the file. Each file gets one `MemoryBudget` (twice its size plus a
  fixed allowance); the pre-scan charges an upper bound for the objects the stream builds, and the
  allowed functions and the readers charge what they allocate. Going over it is refused.

Every refusal is a `CheckpointError` with one line naming the file and the problem.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import re
import struct
import sys

import numpy as np

from .errors import CheckpointError

__all__ = [
    "BUDGET_SLACK",
    "MAX_DIMS",
    "NDARRAY",
    "BoundedReader",
    "MemoryBudget",
    "SafeUnpickler",
    "check_shape",
    "clip",
    "prescan",
]

MIB = 1 << 20
# Fixed part of every file's memory budget: room for the bookkeeping of small files.
BUDGET_SLACK = 64 * MIB
MAX_DIMS = 32  # more than any tensor or array a network stores


def clip(text, limit: int = 300) -> str:
    """One line of at most `limit` characters (a crafted file controls names and reprs)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


class MemoryBudget:
    """What reading one file may allocate: twice the file's size plus `BUDGET_SLACK`.

    Charges are never refunded, so the sum is an upper bound of what is alive at any time.
    """

    def __init__(self, source: str, file_size: int, slack: int = BUDGET_SLACK):
        self.source = str(source)
        self.file_size = int(file_size)
        self.limit = 2 * self.file_size + slack
        self.used = 0

    @property
    def available(self) -> int:
        return self.limit - self.used

    def charge(self, nbytes: int, what: str) -> None:
        nbytes = max(int(nbytes), 0)
        if nbytes > self.available:
            raise CheckpointError(clip(
                f"{self.source}: {what} would need {_mib(nbytes)}, more memory than a {_mib(self.file_size)} "
                f"file can justify ({_mib(self.available)} of its {_mib(self.limit)} budget left)"))
        self.used += nbytes


class BoundedReader:
    """The bytes of a seekable binary file up to `end`, read without ever asking for more.

    A length read from the file decides how much `read(n)` asks for; clamping it to what remains
    keeps a false length from allocating anything. In strict mode a short read is an error
    instead of being returned, because the pure-Python unpickler does not check read lengths.
    """

    def __init__(self, file, end: int, *, strict: bool = False, source: str = "file"):
        self._file = file
        self._end = int(end)
        self._pos = file.tell()
        self._strict = strict
        self._source = source

    def _short(self, wanted: int, left: int):
        raise CheckpointError(f"{self._source}: truncated data: {wanted} bytes wanted, {max(left, 0)} left")

    def read(self, n: int | None = -1) -> bytes:
        left = self._end - self._pos
        if n is None or n < 0:
            n = left
        elif n > left:
            if self._strict:
                self._short(n, left)
            n = left
        data = self._file.read(max(n, 0))
        self._pos += len(data)
        if self._strict and len(data) != n:
            self._short(n, len(data))
        return data

    def readline(self, size: int | None = -1) -> bytes:
        left = max(self._end - self._pos, 0)
        data = self._file.readline(left if size is None or size < 0 else min(size, left))
        self._pos += len(data)
        return data

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._end}[whence]
        self._pos = self._file.seek(max(base + offset, 0))
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


# ---- pre-scan ----

_REFUSED_OPCODES = {
    "INST": "protocol-0 object construction", "OBJ": "protocol-1 object construction",
    "EXT1": "extension codes", "EXT2": "extension codes", "EXT4": "extension codes",
    "NEXT_BUFFER": "out-of-band buffers", "READONLY_BUFFER": "out-of-band buffers",
}
_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_TEXT = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
                   "BINUNICODE8"})
_BYTES = frozenset({"BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"})
_INTS = frozenset({"INT", "LONG", "LONG1", "LONG4"})
# Upper bounds, in bytes, of what CPython allocates for one opcode (object headers, container
# growth, memo and stack slots); every pushed item also costs a stack slot (_SLOT).
_SLOT = 16
_FIXED_COST = {
    "EMPTY_DICT": 64, "DICT": 64, "EMPTY_LIST": 56, "LIST": 56, "EMPTY_SET": 216, "FROZENSET": 216,
    "TUPLE": 40, "TUPLE1": 48, "TUPLE2": 56, "TUPLE3": 64, "SETITEM": 100, "APPEND": 16, "MARK": 72,
    "MEMOIZE": 120, "PUT": 120, "BINPUT": 120, "LONG_BINPUT": 120, "GLOBAL": 256, "STACK_GLOBAL": 256,
    "REDUCE": 64, "BUILD": 64, "NEWOBJ": 64, "NEWOBJ_EX": 64, "PERSID": 64, "BINPERSID": 64,
    "FLOAT": 24, "BINFLOAT": 24, "BININT": 32, "BININT1": 32, "BININT2": 32,
}
_ITEM_COST = {"SETITEMS": 50, "DICT": 50, "APPENDS": 16, "LIST": 16, "ADDITEMS": 64, "FROZENSET": 64, "TUPLE": 8}


def _rule(op):
    """(kind, fixed cost, cost per MARK-ed item, uses a MARK, items it takes from the stack, items it pushes)."""
    name, before = op.name, op.stack_before
    marked = pickletools.markobject in before
    taken = before.index(pickletools.markobject) if marked else len(before)
    kind = ("refused" if name in _REFUSED_OPCODES else "mark" if name == "MARK" else "pop" if name == "POP"
            else "put" if name in _PUTS else "memoize" if name == "MEMOIZE" else "get" if name in _GETS
            else "proto" if name == "PROTO" else "frame" if name == "FRAME"
            else "text" if name in _TEXT or name == "GLOBAL" else "bytes" if name in _BYTES
            else "int" if name in _INTS else "")
    cost = _SLOT * len(op.stack_after) + _FIXED_COST.get(name, 0)
    return kind, cost, _ITEM_COST.get(name, 0), marked, taken, len(op.stack_after)


_RULES = {op.name: _rule(op) for op in pickletools.opcodes}


def _malformed(source, pos, problem) -> CheckpointError:
    return CheckpointError(clip(f"{source}: corrupt or truncated pickle at byte {pos}: {problem}"))


def prescan(file, source: str, budget: MemoryBudget, *, end: int | None = None) -> int:
    """Check one pickle in `file` from its current position to STOP, before it is unpickled.

    Refuses (CheckpointError) any string, bytes or frame length beyond the bytes that remain,
    memo indices that skip ahead of the entries stored so far, stack underflows, unknown
    protocols and opcodes no checkpoint needs, and charges `budget` an upper bound of the memory
    the stream's own objects can take. Returns the position just after STOP; leaves the file there.
    """
    if end is None:
        here = file.tell()
        end = file.seek(0, io.SEEK_END)
        file.seek(here)
    reader = BoundedReader(file, end, source=source)
    levels = [0]  # items above each MARK, innermost last: a model of the unpickler's stack
    puts = 0  # memo entries stored so far
    cost = 0
    largest_frame = 0
    ops = pickletools.genops(reader)
    while True:
        at = reader.tell()
        try:
            op, arg, pos = next(ops)
        except StopIteration:
            break
        except (ValueError, struct.error) as e:  # bad opcode, short data, undecodable text
            raise CheckpointError(clip(f"{source}: corrupt or truncated pickle at byte {at}: {e}")) from None
        kind, op_cost, item_cost, marked, taken, pushed = _RULES[op.name]
        # Stack model: refuse what would underflow, and count the items a MARK-ed opcode takes.
        if kind == "mark":
            levels.append(0)
        elif kind == "pop" and levels[-1] == 0 and len(levels) > 1:
            levels.pop()  # POP on a MARK discards the mark
        else:
            if kind == "refused":
                raise _malformed(source, pos, f"opcode {op.name} ({_REFUSED_OPCODES[op.name]}) is not allowed "
                                 "in a checkpoint")
            if marked:
                if len(levels) == 1:
                    raise _malformed(source, pos, f"{op.name} without a MARK")
                op_cost += item_cost * levels.pop()
            if levels[-1] < taken:
                raise _malformed(source, pos, f"{op.name} needs {taken} stack items, {levels[-1]} are there")
            levels[-1] += pushed - taken
        if kind:
            # Memo: the pickler numbers entries 0, 1, 2, ...; an index that skips ahead only makes
            # the unpickler grow its memo table.
            if kind == "put":
                if not 0 <= arg <= puts:
                    raise _malformed(source, pos, f"memo index {arg} skips ahead of the {puts} entries stored so far")
                puts += 1
            elif kind == "memoize":
                puts += 1
            elif kind == "get":
                if not 0 <= arg < puts:
                    raise _malformed(source, pos, f"memo index {arg} refers to nothing stored ({puts} entries so far)")
            elif kind == "text":
                op_cost += 4 * len(arg) + 80  # a str takes up to 4 bytes a character
            elif kind == "bytes":
                op_cost += len(arg) + 64
            elif kind == "int":
                op_cost += abs(arg).bit_length() // 8 + 32
            elif kind == "proto":
                if not 0 <= arg <= pickle.HIGHEST_PROTOCOL:
                    raise _malformed(source, pos, f"unsupported pickle protocol {arg}")
            elif kind == "frame":
                left = end - reader.tell()
                if arg > left:
                    raise _malformed(source, pos, f"frame of {arg} bytes, only {left} bytes left")
                largest_frame = max(largest_frame, arg)  # read into memory whole, one at a time
        cost += op_cost
        if cost + largest_frame > budget.available:
            budget.charge(cost + largest_frame, f"the objects of the pickle up to byte {pos}")
    budget.charge(cost + largest_frame, "the objects of the pickle")
    return reader.tell()


# ---- numpy records ----

class _TypeTag:
    """Stands for a class a pickle may name but never call (numpy.ndarray in numpy's array records)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return self.name


NDARRAY = _TypeTag("numpy.ndarray")
_PLAIN_DTYPE = re.compile(r"[biufc][0-9]{1,2}")  # numpy's own spelling: kind + item size ("f4", "b1")


def _is_plain_dtype(dtype) -> bool:
    """Numbers and booleans only: no objects, records, strings or sub-arrays."""
    return isinstance(dtype, np.dtype) and dtype.kind in "biufc" and dtype.fields is None and dtype.subdtype is None


def check_shape(shape, source: str, what: str = "array") -> tuple:
    """A shape tuple of at most MAX_DIMS non-negative ints, or CheckpointError."""
    if type(shape) is not tuple or len(shape) > MAX_DIMS or any(type(d) is not int or d < 0 for d in shape):
        raise CheckpointError(clip(f"{source}: {what} has an invalid shape {shape!r:.80}"))
    if math.prod(shape) == 0 and any(d > 2**31 for d in shape):
        raise CheckpointError(clip(f"{source}: {what} has an absurd empty shape {shape!r:.80}"))
    return shape


def _is_int(value, expected: int) -> bool:
    return type(value) is int and value == expected


# ---- the unpickler ----

class SafeUnpickler(pickle._Unpickler):
    """Base class of the restricted unpicklers: pre-scan, allow-list, and a per-file memory budget.

    Built on the pure-Python unpickler so that REDUCE, NEWOBJ and BUILD can be checked one by one.
    Subclasses set:

    * `resolve_global(module, name)`: the object a global stands for, or None to refuse it;
      `refusal(module, name)` words the refusal. Only objects returned here can be called.
    * `instantiable`: classes NEWOBJ may create (without arguments).
    * `attribute_targets`: classes whose instances BUILD may give attributes (a dict of str keys).
    * `persistent_load(pid)` if the format has persistent ids.

    `numpy_dtype`, `numpy_scalar` and `numpy_reconstruct` read numpy's own pickle records with
    checked input, and `codecs_encode` protocol 2's bytes; a subclass grants them in `resolve_global`
    when its format needs them.
    `load()` pre-scans the pickle, then reads it through a reader bounded to the scanned bytes.
    """

    instantiable: frozenset = frozenset()
    attribute_targets: tuple = ()

    def __init__(self, file, source, *, budget: MemoryBudget | None = None):
        if not (hasattr(file, "seekable") and file.seekable()):
            file = io.BytesIO(file.read())
        self.source = str(source)
        self._stream = file
        start = file.tell()
        self._stream_end = file.seek(0, io.SEEK_END)
        file.seek(start)
        self.budget = budget if budget is not None else MemoryBudget(self.source, self._stream_end - start)
        self._granted: dict = {}  # id -> (object, "module.name"); holding them keeps the ids unique
        self._unbuilt: dict = {}  # id -> dtype or array made here that BUILD may still fill in

    def load(self):
        start = self._stream.tell()
        end = prescan(self._stream, self.source, self.budget, end=self._stream_end)
        self._stream.seek(start)
        reader = BoundedReader(self._stream, end, strict=True, source=self.source)
        pickle._Unpickler.__init__(self, reader)
        return pickle._Unpickler.load(self)

    # ---- hooks for subclasses ----

    def resolve_global(self, module: str, name: str):
        return None

    def refusal(self, module: str, name: str) -> str:
        return f"refusing to load global {module}.{name} from {self.source}"

    def persistent_load(self, pid):
        raise CheckpointError(clip(f"{self.source}: unexpected persistent id {pid!r:.80}"))

    def find_class(self, module, name):
        sys.audit("pickle.find_class", module, name)  # as the standard unpicklers do
        obj = self.resolve_global(module, name)
        if obj is None:
            raise CheckpointError(clip(self.refusal(module, name)))
        self._granted[id(obj)] = (obj, f"{module}.{name}")
        return obj

    def _describe(self, obj) -> str:
        entry = self._granted.get(id(obj))
        return entry[1] if entry is not None and entry[0] is obj else f"a {type(obj).__name__}"

    def _is_granted(self, obj) -> bool:
        entry = self._granted.get(id(obj))
        return entry is not None and entry[0] is obj

    # ---- checked versions of the opcodes that call, create or mutate ----

    def _call(self, func, args):
        if not self._is_granted(func) or not callable(func):
            raise CheckpointError(clip(f"{self.source}: the pickle calls {self._describe(func)}, which is not an "
                                       "allowed function"))
        if type(args) is not tuple:
            raise CheckpointError(f"{self.source}: malformed call of {self._describe(func)}")
        if isinstance(func, type):  # a container class: calling it copies its arguments
            items = sum(len(a) for a in args if hasattr(type(a), "__len__"))
            self.budget.charge(64 + 160 * items, f"a copy made by {self._describe(func)}")
        return func(*args)

    def _new(self, cls, args, kwargs):
        if not self._is_granted(cls) or cls not in self.instantiable:
            raise CheckpointError(clip(f"{self.source}: the pickle creates an object of {self._describe(cls)}, "
                                       "which is not allowed"))
        if type(args) is not tuple or len(args) or type(kwargs) is not dict or len(kwargs):
            raise CheckpointError(f"{self.source}: {self._describe(cls)} is created with arguments")
        self.budget.charge(64, "an object")
        return cls.__new__(cls)

    def build(self, obj, state):
        """Apply BUILD's `state` to `obj`, only where that is known to be safe."""
        if self._unbuilt.get(id(obj)) is obj:
            del self._unbuilt[id(obj)]
            if isinstance(obj, np.dtype):
                return self._build_dtype(obj, state)
            return self._build_array(obj, state)
        if type(obj) in self.attribute_targets and type(state) is dict and all(type(k) is str for k in state):
            self.budget.charge(64 + 100 * len(state), "object attributes")
            vars(obj).update(state)
            return None
        raise CheckpointError(f"{self.source}: the pickle sets the state of a {type(obj).__name__}, which is not allowed")

    def _load_reduce(self):
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    def _load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, {}))

    def _load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, kwargs))

    def _load_build(self):
        state = self.stack.pop()
        self.build(self.stack[-1], state)

    def _load_bytearray8(self):
        # The base class allocates the claimed length before reading; read first, so that the
        # bounded reader refuses a length beyond the scanned bytes (the file may have changed).
        (size,) = struct.unpack("<Q", self.read(8))
        self.append(bytearray(self.read(size)))

    def _load_refused(self):
        raise CheckpointError(f"{self.source}: the pickle uses an opcode that is not allowed in a checkpoint")

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.REDUCE[0]] = _load_reduce
    dispatch[pickle.NEWOBJ[0]] = _load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = _load_newobj_ex
    dispatch[pickle.BUILD[0]] = _load_build
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8
    for _op in (pickle.INST, pickle.OBJ, pickle.EXT1, pickle.EXT2, pickle.EXT4, pickle.NEXT_BUFFER,
                pickle.READONLY_BUFFER):
        dispatch[_op[0]] = _load_refused
    del _op

    def codecs_encode(self, text, encoding="utf-8"):
        """_codecs.encode(str, "latin1"): how protocol-2 pickles spell bytes."""
        if type(text) is not str or encoding != "latin1":
            raise CheckpointError(f"{self.source}: unsupported encoded bytes")
        self.budget.charge(len(text) + 64, "encoded bytes")
        return text.encode("latin1")

    # ---- numpy's pickle records, read with checked input ----

    def numpy_dtype(self, spec, align=False, copy=False):
        """numpy.dtype("f4", ...): plain numeric types only, always a private copy (BUILD sets its byte order)."""
        if type(spec) is not str or not _PLAIN_DTYPE.fullmatch(spec):
            raise CheckpointError(clip(f"{self.source}: unsupported numpy dtype {spec!r:.40}"))
        try:
            dtype = np.dtype(spec, False, True)
        except TypeError:
            raise CheckpointError(clip(f"{self.source}: unsupported numpy dtype {spec!r}")) from None
        if not _is_plain_dtype(dtype):
            raise CheckpointError(clip(f"{self.source}: unsupported numpy dtype {spec!r}"))
        self._unbuilt[id(dtype)] = dtype
        return dtype

    def _build_dtype(self, dtype, state):
        # numpy writes (3, byteorder, None, None, None, -1, -1, 0) for a plain type (4, ..., None with metadata).
        ok = (type(state) is tuple and len(state) in (8, 9) and _is_int(state[0], len(state) - 5)
              and type(state[1]) is str and state[1] in "<>|=" and len(state[1]) == 1 and all(v is None for v in state[2:5])
              and _is_int(state[5], -1) and _is_int(state[6], -1) and _is_int(state[7], 0)
              and (len(state) == 8 or state[8] is None))
        if not ok:
            raise CheckpointError(clip(f"{self.source}: unsupported numpy dtype state {state!r:.80}"))
        dtype.__setstate__((3, state[1], None, None, None, -1, -1, 0))

    def numpy_scalar(self, dtype, data=None):
        """numpy.core.multiarray.scalar(dtype, bytes): one number of a plain dtype."""
        if not _is_plain_dtype(dtype) or type(data) is not bytes or len(data) != dtype.itemsize:
            raise CheckpointError(f"{self.source}: unsupported numpy scalar")
        return np.frombuffer(data, dtype)[0]

    def numpy_reconstruct(self, subtype, shape, dtype_code):
        """numpy.core.multiarray._reconstruct(ndarray, ...): an empty array that BUILD fills in."""
        if subtype is not NDARRAY:
            raise CheckpointError(f"{self.source}: unsupported numpy array subclass")
        # numpy writes shape (0,) here and the real shape and data in BUILD; ignoring `shape`
        # keeps a crafted record from allocating memory the file does not contain.
        array = np.empty(0, np.uint8)
        self._unbuilt[id(array)] = array
        return array

    def _build_array(self, array, state):
        # numpy's ndarray state: ([version 1,] shape, dtype, is_fortran, raw bytes).
        if type(state) is not tuple or len(state) not in (4, 5) or (len(state) == 5 and not _is_int(state[0], 1)):
            raise CheckpointError(f"{self.source}: unsupported numpy array record")
        shape, dtype, fortran, raw = state[-4:]
        check_shape(shape, self.source)
        if not _is_plain_dtype(dtype) or type(fortran) is not bool or type(raw) is not bytes:
            raise CheckpointError(f"{self.source}: unsupported numpy array record (dtype {dtype!r:.40})")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != len(raw):
            raise CheckpointError(f"{self.source}: numpy array of shape {shape} {dtype} needs {nbytes} bytes, "
                                  f"its record holds {len(raw)}")
        self.budget.charge(nbytes, f"a numpy array of shape {shape}")
        array.__setstate__((1, shape, dtype, fortran, raw))
