"""A tuned generator as a small change of a base generator's drawing weights (pivotal tuning's output).

A delta is a pytree of two dicts keyed by the parameter's flat name with '/' written as '.':
  low_rank[name] = {"up": [d0, r], "down": [r, d1 * ...]}   for the big tensors (convolution and affine
                   weights): delta = rms(W) * (up @ down) / sqrt(r), reshaped to W's shape (LoRA-style);
  full[name]     = [W's shape]                               for the small ones (biases, gains, ToRGB,
                   batch-norm scales): delta = rms(W) * full.
Scaling by the base tensor's root mean square makes one learning rate mean the same relative change for
every tensor and every generator (NVIDIA stores unit-variance weights with a run-time gain, the DCGAN
stores them at scale 0.02), and the 1/sqrt(r) makes a low-rank factor's Adam step move its tensor as
much as a full delta's would. `up` starts at zero, so a fresh delta changes nothing.

A tensor is low-rank when r * (d0 + rest) is less than half its size; everything else is stored full.
`apply_delta` materialises the tuned parameters (traceable: vmapped over per-image deltas it gives one
generator per image in one program). `save_delta` / `load_delta` keep a delta in one .npz; loading
checks every array's declared size against the file before reading it, and its names and shapes
against the base generator.
"""

from __future__ import annotations

import json
import math
import weakref
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .errors import ChunkyGANError, ConfigError
from .generators.protocol import fingerprint
from .trees import flat_leaves, unflatten_tree

DELTA_FILE = "tuning.npz"
STORE_DTYPES = ("float32", "float16")


def _key(name: str) -> str:
    return name.replace("/", ".")


def _split(shape) -> tuple[int, int]:
    return int(shape[0]), int(np.prod(shape[1:]))


def is_low_rank(shape, rank: int) -> bool:
    """Whether a tensor of this shape is stored as rank-`rank` factors (see the module docstring)."""
    if rank <= 0 or len(shape) < 2:
        return False
    d0, rest = _split(shape)
    return 2 * rank * (d0 + rest) < d0 * rest


def base_tensors(generator) -> dict[str, jax.Array]:
    """{delta key: the base tensor} for the generator's drawing parameters."""
    flat = flat_leaves(generator.params)
    return {_key(name): flat[name] for name in generator.drawing_params()}


def init_delta(generator, rank: int, seed: int = 0) -> dict:
    """A delta that changes nothing: `up` zeros, `down` unit normal (seeded), full deltas zeros."""
    rng = np.random.RandomState(seed)
    low, full = {}, {}
    for key, w in base_tensors(generator).items():
        shape = np.shape(w)
        if is_low_rank(shape, rank):
            d0, rest = _split(shape)
            low[key] = {"up": np.zeros((d0, rank), np.float32),
                        "down": rng.standard_normal((rank, rest)).astype(np.float32)}
        else:
            full[key] = np.zeros(shape, np.float32)
    return {"low_rank": low, "full": full}


def _rms(w) -> jax.Array:
    r = jnp.sqrt(jnp.mean(jnp.square(jnp.asarray(w, jnp.float32))))
    return jnp.where(r > 0, r, 1.0)  # an all-zero tensor: its delta is in absolute units


def materialise(base: dict, delta: dict) -> dict:
    """{key: the change of that tensor} (jnp; traceable)."""
    out = {}
    for key, f in delta["low_rank"].items():
        w = base[key]
        r = f["up"].shape[-1]
        out[key] = (_rms(w) / math.sqrt(r) * (f["up"] @ f["down"])).reshape(np.shape(w))
    for key, d in delta["full"].items():
        out[key] = _rms(base[key]) * d
    return out


def apply_delta(generator, delta: dict):
    """The tuned generator: base parameters plus the materialised delta (same class and config)."""
    base = base_tensors(generator)
    unknown = sorted((set(delta["low_rank"]) | set(delta["full"])) - set(base))
    if unknown:
        raise ConfigError(f"the delta changes parameters this generator does not have or may not tune: "
                          f"{unknown[:4]}")
    changes = materialise(base, delta)
    flat = flat_leaves(generator.params)
    for name in generator.drawing_params():
        key = _key(name)
        if key in changes:
            flat[name] = jnp.asarray(flat[name], jnp.float32) + changes[key]
    return generator.replace(params=unflatten_tree(flat))


def delta_bytes(delta: dict, dtype: str = "float32") -> int:
    """The delta's size stored as `dtype` (its arrays' bytes; the file adds a few hundred per array)."""
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(delta)) * np.dtype(dtype).itemsize)


def params_bytes(generator) -> int:
    return int(sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(generator.params)))


_FINGERPRINTS: dict = {}  # id(generator) -> fingerprint, while the generator lives


def _fingerprint(generator) -> str:
    key = id(generator)
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = fingerprint(generator)
        weakref.finalize(generator, _FINGERPRINTS.pop, key, None)
    return _FINGERPRINTS[key]


def check_base(generator, record: dict) -> None:
    """Refuse (one line) a tuning made for another generator than `generator`."""
    want, have = str(record.get("base_fingerprint")), _fingerprint(generator)
    if want != have:
        raise ConfigError(f"this result was tuned on another generator (fingerprint {want[:12]}..., the one "
                          f"given is {have[:12]}...); pass the generator it was inverted and tuned with, "
                          "not a tuned one")


def tuned_generator(generator, tuning: dict | None):
    """The generator a result renders with: `generator` itself for an untuned result (tuning None), else
    the base `generator` with the result's delta applied (checked to be this generator's). Memoised, so
    repeated edits of one result reuse one tuned generator (and its compiled programs)."""
    if tuning is None:
        return generator
    check_base(generator, tuning["record"])
    check_shapes(generator, tuning["delta"], tuning["record"]["rank"])
    applied = tuning.setdefault("applied", {})  # lives with the result; never saved
    key = id(generator)
    if key not in applied:
        applied[key] = apply_delta(generator, jax.tree_util.tree_map(jnp.asarray, tuning["delta"]))
        weakref.finalize(generator, applied.pop, key, None)  # an id is reused only after its object dies
    return applied[key]


def check_shapes(generator, delta: dict, rank: int) -> None:
    """Refuse a delta whose tensors are not exactly this generator's (names and shapes) at `rank`."""
    want = _expected_shapes(generator, rank)
    have = {f"{part}/{k}": tuple(np.shape(f[part])) for k, f in delta["low_rank"].items() for part in ("up", "down")}
    have.update({f"full/{k}": tuple(np.shape(d)) for k, d in delta["full"].items()})
    if have != want:
        wrong = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        raise ConfigError(f"the tuning's tensors do not fit this generator ({', '.join(wrong[:3])}); pass the "
                          "generator the result was inverted and tuned with")


def cast_delta(delta: dict, dtype: str) -> dict:
    """The delta in its storage dtype and back to float32 (what a saved delta reloads as)."""
    if dtype not in STORE_DTYPES:
        raise ConfigError(f"a delta is stored as one of {', '.join(STORE_DTYPES)}, got {dtype!r}")
    return jax.tree_util.tree_map(lambda x: np.asarray(x).astype(dtype).astype(np.float32), delta)


# ---------------------------------------------------------------------------------------- files
def save_delta(path, delta: dict, *, base_fingerprint: str, record: dict, dtype: str = "float32") -> None:
    """Write a (batch-free) delta to `path` (.npz): the arrays in `dtype` plus a JSON record with the base
    generator's fingerprint. The caller owns the file's atomicity (results are written aside and renamed)."""
    arrays = {f"up/{k}": f["up"] for k, f in delta["low_rank"].items()}
    arrays.update({f"down/{k}": f["down"] for k, f in delta["low_rank"].items()})
    arrays.update({f"full/{k}": d for k, d in delta["full"].items()})
    arrays = {k: np.asarray(v).astype(dtype) for k, v in arrays.items()}
    meta = json.dumps({**record, "base_fingerprint": base_fingerprint, "dtype": dtype})
    arrays["record"] = np.frombuffer(meta.encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _expected_shapes(generator, rank: int) -> dict[str, tuple]:
    shapes = {}
    for key, w in base_tensors(generator).items():
        shape = tuple(np.shape(w))
        if is_low_rank(shape, rank):
            d0, rest = _split(shape)
            shapes[f"up/{key}"], shapes[f"down/{key}"] = (d0, rank), (rank, rest)
        else:
            shapes[f"full/{key}"] = shape
    return shapes


MAX_RECORD_BYTES = 1 << 16
_ANY_SHAPE = "any"  # an expectation that takes any shape (its size is still checked against the file)


def _read_checked_npz(path: Path, expected: dict, *, exact: bool = True) -> dict[str, np.ndarray]:
    """The `expected` arrays of an .npz ({name: (shape, dtype names)}; a shape of None: any 1-D array up to
    MAX_RECORD_BYTES); with `exact` the archive may hold nothing else. Every member's header is read and
    checked against the expectation and against its size in the archive before its data is read."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            members = {i.filename[:-4]: i for i in infos if i.filename.endswith(".npy")}
            if len(members) != len(infos) or not set(expected) <= set(members) or \
                    (exact and set(members) != set(expected)):
                missing, extra = sorted(set(expected) - set(members)), sorted(set(members) - set(expected))
                raise ChunkyGANError(f"{path}: not a delta of this generator (missing {missing[:3]}, "
                                     f"unexpected {extra[:3]})")
            for name, want in expected.items():
                info, (want_shape, dtypes) = members[name], want
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version not in ((1, 0), (2, 0)):
                        raise ChunkyGANError(f"{path}: {name}: unsupported .npy version {version}")
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = read_header(f)
                    if dtype.hasobject or dtype.name not in dtypes or fortran:
                        raise ChunkyGANError(f"{path}: {name}: dtype {dtype} is not one of {list(dtypes)}")
                    if want_shape is None:
                        bad = len(shape) != 1 or shape[0] > MAX_RECORD_BYTES
                    else:
                        bad = want_shape != _ANY_SHAPE and tuple(shape) != tuple(want_shape)
                    if bad:
                        raise ChunkyGANError(f"{path}: {name}: shape {tuple(shape)}"
                                             + ("" if want_shape is None else f", this generator needs {want_shape}"))
                    need = int(np.prod(shape)) * dtype.itemsize
                    if need > info.file_size - f.tell():
                        raise ChunkyGANError(f"{path}: {name}: declares {need} bytes, the file holds fewer")
                    out[name] = np.frombuffer(f.read(need), dtype).reshape(shape)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as e:
        raise ChunkyGANError(f"{path}: not a readable delta file ({e})") from None
    return out


def read_record(path) -> dict:
    """The JSON record of a delta file (base fingerprint, rank, dtype, ...); reads nothing else."""
    path = Path(path)
    raw = _read_checked_npz(path, {"record": (None, ("uint8",))}, exact=False)["record"]
    try:
        record = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, ValueError):
        raise ChunkyGANError(f"{path}: the delta's record is not JSON") from None
    if not isinstance(record, dict) or not isinstance(record.get("rank"), int) or \
            record.get("dtype") not in STORE_DTYPES:
        raise ChunkyGANError(f"{path}: the delta's record lacks its rank or dtype")
    return record


def load_delta(path) -> tuple[dict, dict]:
    """(delta as float32, record) from a file `save_delta` wrote. Every array's declared size is checked
    against the file before it is read, dtypes must be the record's, values finite; whether the delta
    fits a generator is checked when it is applied (`tuned_generator`)."""
    path = Path(path)
    record = read_record(path)
    try:
        with zipfile.ZipFile(path) as z:
            names = [i.filename[:-4] for i in z.infolist() if i.filename != "record.npy"]
    except (OSError, zipfile.BadZipFile) as e:
        raise ChunkyGANError(f"{path}: not a readable delta file ({e})") from None
    if any(n.split("/", 1)[0] not in ("up", "down", "full") or "/" not in n for n in names):
        raise ChunkyGANError(f"{path}: not a delta file (unexpected arrays {sorted(names)[:3]})")
    arrays = _read_checked_npz(path, {**{n: (_ANY_SHAPE, (record["dtype"],)) for n in names},
                                      "record": (None, ("uint8",))})
    arrays.pop("record")
    delta = {"low_rank": {}, "full": {}}
    for name, a in arrays.items():
        a = a.astype(np.float32)
        if not np.all(np.isfinite(a)):
            raise ChunkyGANError(f"{path}: {name} holds non-finite values")
        kind, key = name.split("/", 1)
        if kind == "full":
            delta["full"][key] = a
        else:
            delta["low_rank"].setdefault(key, {})[kind] = a
    if any(set(f) != {"up", "down"} for f in delta["low_rank"].values()):
        raise ChunkyGANError(f"{path}: a low-rank tensor lacks one of its factors")
    return delta, record
