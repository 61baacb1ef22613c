"""Torch-free checkpoint readers: golden equality, old pickle dialects, and refusal of unsafe or broken files."""

import collections
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from chunkygan_jax.errors import CheckpointError
from chunkygan_jax.converters import read_nvidia_pickle, read_torch_zip, sniff_format

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NVIDIA_PKL = SHARED / "fixtures" / "nvidia_P1_sanitized.pkl"
NVIDIA_NPZ = SHARED / "golden" / "nvidia_P1.npz"
R1_PT = SHARED / "golden" / "R1_ckpt.pt"
R1_NPZ = SHARED / "golden" / "rosinality_R1.npz"


def golden_state(npz_path):
    with np.load(npz_path) as f:
        return {k[len("state/"):]: f[k] for k in f.files if k.startswith("state/")}


def assert_bitwise_equal(actual, expected):
    assert list(actual) == list(expected)
    for key, want in expected.items():
        got = actual[key]
        assert got.dtype == want.dtype and got.shape == want.shape, key
        assert got.tobytes() == want.tobytes(), key


# ---- real files ----

@pytest.fixture(scope="module")
def nvidia():
    return read_nvidia_pickle(NVIDIA_PKL)


def test_nvidia_pickle_matches_golden(nvidia):
    assert set(nvidia) == {"G", "D", "G_ema"}
    want = golden_state(NVIDIA_NPZ)
    assert len(want) == 75
    assert_bitwise_equal(nvidia["G_ema"]["state"], want)
    assert_bitwise_equal(nvidia["G"]["state"], want)
    assert nvidia["G_ema"]["class_name"] == "Generator"
    assert nvidia["D"]["class_name"] == "Discriminator" and len(nvidia["D"]["state"]) > 0


def test_nvidia_init_kwargs(nvidia):
    kw = nvidia["G_ema"]["init_kwargs"]
    assert (kw["z_dim"], kw["w_dim"], kw["c_dim"], kw["img_resolution"], kw["img_channels"]) == (64, 64, 0, 32, 3)
    assert kw["mapping_kwargs"] == {"num_layers": 2}
    assert kw["synthesis_kwargs"] == {"channel_base": 512, "channel_max": 64, "num_fp16_res": 0, "conv_clamp": None}
    assert type(kw["synthesis_kwargs"]) is dict  # EasyDict arrives as a plain dict


def test_rosinality_zip_matches_golden():
    ckpt = read_torch_zip(R1_PT)
    assert list(ckpt) == ["g_ema"]
    assert_bitwise_equal(ckpt["g_ema"], golden_state(R1_NPZ))


def test_sniff_format(tmp_path):
    assert sniff_format(NVIDIA_PKL) == "nvidia-pkl"
    assert sniff_format(R1_PT) == "torch-zip"
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "_CHECKPOINT_METADATA").write_text("{}")
    assert sniff_format(tmp_path / "ckpt") == "orbax-dir"
    (tmp_path / "junk.bin").write_bytes(b"hello world, not a checkpoint")
    for bad in (tmp_path / "junk.bin", tmp_path / "missing.pkl", tmp_path / "empty_dir"):
        if bad.name == "empty_dir":
            bad.mkdir()
        with pytest.raises(CheckpointError):
            sniff_format(bad)


# ---- a tiny opcode writer, to build pickles in the dialects of older torch/Python ----

MAGIC = 0x1950A86A20F9469CFC6C


class Global:
    def __init__(self, module, name):
        self.module, self.name = module, name


class Call:  # module.name(*args), pickled as GLOBAL + args tuple + REDUCE
    def __init__(self, module, name, *args):
        self.func, self.args = Global(module, name), args


class NewDict:  # cls.__new__(cls) + SETITEMS, as EasyDict is pickled
    def __init__(self, module, name, items):
        self.cls, self.items = Global(module, name), items


class NewObj:  # cls.__new__(cls) + BUILD(state), as a plain object such as argparse.Namespace
    def __init__(self, module, name, state):
        self.cls, self.state = Global(module, name), state


class Persid:  # a persistent id (a torch storage reference)
    def __init__(self, pid):
        self.pid = pid


def emit(obj, proto):
    """Pickle body with GLOBAL opcodes and no memo, like protocol 2/3 pickles of torch < 2."""
    if isinstance(obj, Global):
        return b"c%s\n%s\n" % (obj.module.encode(), obj.name.encode())
    if isinstance(obj, Call):
        return emit(obj.func, proto) + emit(obj.args, proto) + b"R"
    if isinstance(obj, NewDict):
        return emit(obj.cls, proto) + b")\x81" + emit(obj.items, proto)[1:]  # SETITEMS onto the new object
    if isinstance(obj, NewObj):
        return emit(obj.cls, proto) + b")\x81" + emit(obj.state, proto) + b"b"
    if isinstance(obj, Persid):
        return emit(obj.pid, proto) + b"Q"
    if isinstance(obj, collections.OrderedDict):
        return emit(Call("collections", "OrderedDict", [tuple(kv) for kv in obj.items()]), proto)
    if isinstance(obj, (set, frozenset)):
        return emit(Call("__builtin__" if proto == 2 else "builtins", "set", sorted(obj)), proto)
    if isinstance(obj, bytes) and proto == 2:
        return emit(Call("_codecs", "encode", obj.decode("latin1"), "latin1"), proto)
    if isinstance(obj, dict):
        return b"}(" + b"".join(emit(k, proto) + emit(v, proto) for k, v in obj.items()) + b"u"
    if isinstance(obj, list):
        return b"](" + b"".join(emit(v, proto) for v in obj) + b"e"
    if isinstance(obj, tuple):
        return b"(" + b"".join(emit(v, proto) for v in obj) + b"t"
    return pickle.dumps(obj, protocol=3)[2:-1]  # scalars and str/bytes: strip PROTO and STOP


def dump(obj, proto):
    return bytes([0x80, proto]) + emit(obj, proto) + b"."


STORAGE_NAMES = {np.float32: "FloatStorage", np.float16: "HalfStorage", np.int64: "LongStorage"}


def legacy_torch_save(obj, storages, proto=2):
    """A legacy (non-zip) torch.save stream; `storages` maps key -> 1-D array."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    out = b"".join(pickle.dumps(x, protocol=2) for x in (MAGIC, 1001, sys_info))
    out += dump(obj, proto) + pickle.dumps(list(storages), protocol=2)
    return out + b"".join(struct.pack("<q", a.size) + a.tobytes() for a in storages.values())


def storage_ref(key, arr):
    return Persid(("storage", Global("torch", STORAGE_NAMES[arr.dtype.type]), key, "cpu", arr.size, None))


def tensor(storage, offset, size, stride):
    return Call("torch._utils", "_rebuild_tensor_v2", storage, offset, size, stride, False, collections.OrderedDict())


def nvidia_tensor(arr, offset, size, stride):
    """A tensor as an NVIDIA pickle holds it: storage = _load_from_bytes(<legacy torch.save of the storage>)."""
    payload = legacy_torch_save(storage_ref("140", arr), {"140": arr})
    return tensor(Call("torch.storage", "_load_from_bytes", payload), offset, size, stride)


def parameter(t):
    return Call("torch._utils", "_rebuild_parameter", t, False, collections.OrderedDict())


def persistent(class_name, params=(), buffers=(), modules=(), non_persistent=(), module_src="", **attrs):
    state = {"training": False, "_parameters": collections.OrderedDict(params),
             "_buffers": collections.OrderedDict(buffers), "_non_persistent_buffers_set": set(non_persistent),
             "_modules": collections.OrderedDict(modules), **attrs}
    meta = {"type": "class", "version": 6, "module_src": module_src, "class_name": class_name, "state": state}
    return Call("torch_utils.persistence", "_reconstruct_persistent_obj", meta)


@pytest.mark.parametrize("proto", [2, 3])
def test_old_torch_nvidia_pickle(tmp_path, proto):
    """torch < 2.0 / Python < 3.8 dialect: OrderedDict containers, GLOBAL ops, numpy 1.x names, strided tensors."""
    data = np.arange(20, dtype=np.float32)
    half = np.array([1.5, -2.0, 0.25, 8.0], np.float16)
    f8 = Call("numpy", "dtype", "f8", False, True)
    scale = Call("numpy.core.multiarray", "scalar", f8, np.float64(0.5).tobytes())  # numpy 1.x module name
    child = persistent("FullyConnectedLayer", params=[("bias", parameter(nvidia_tensor(data, 5, (3,), (1,))))])
    net = persistent(
        "Generator",
        params=[("weight", parameter(nvidia_tensor(data, 2, (3, 4), (1, 3)))), ("unused", None)],
        buffers=[("noise_const", nvidia_tensor(half, 0, (2, 2), (2, 1))),
                 ("scratch", nvidia_tensor(half, 0, (4,), (1,)))],
        non_persistent=["scratch"],
        modules=[("affine", child), ("absent", None)],
        _init_kwargs={"z_dim": 8, "lr": scale, "mapping_kwargs": NewDict("dnnlib.util", "EasyDict", {"num_layers": 2})},
    )
    path = tmp_path / "old.pkl"
    path.write_bytes(dump({"training_set_kwargs": {"resolution": 4}, "G_ema": net, "augment_pipe": None}, proto))
    assert sniff_format(path) == "nvidia-pkl"
    got = read_nvidia_pickle(path)["G_ema"]
    assert list(got["state"]) == ["weight", "noise_const", "affine.bias"]  # torch's state_dict order and filtering
    want_weight = np.array([[data[2 + i + 3 * j] for j in range(4)] for i in range(3)])
    assert np.array_equal(got["state"]["weight"], want_weight)
    assert got["state"]["noise_const"].dtype == np.float16
    assert np.array_equal(got["state"]["noise_const"], half.reshape(2, 2))
    assert np.array_equal(got["state"]["affine.bias"], data[5:8])
    assert got["init_kwargs"] == {"z_dim": 8, "lr": 0.5, "mapping_kwargs": {"num_layers": 2}}


def test_legacy_torch_save_file(tmp_path):
    """Pre-1.6 torch.save (rosinality's older .pt files): shared storages and argparse args."""
    buf, steps = np.arange(10, dtype=np.float32), np.array([7, 8], np.int64)
    obj = {
        "g_ema": collections.OrderedDict([("a", tensor(storage_ref("0", buf), 0, (2, 3), (3, 1))),
                                          ("b", tensor(storage_ref("0", buf), 4, (6,), (1,))),
                                          ("t", tensor(storage_ref("0", buf), 1, (3, 2), (1, 3)))]),
        "step": tensor(storage_ref("1", steps), 0, (2,), (1,)),
        "args": NewObj("argparse", "Namespace", {"size": 32, "lr": 0.002}),
    }
    path = tmp_path / "old.pt"
    stream = legacy_torch_save(obj, {"0": buf, "1": steps})
    path.write_bytes(stream)
    assert sniff_format(path) == "torch-legacy"
    ckpt = read_torch_zip(path)
    assert np.array_equal(ckpt["g_ema"]["a"], buf[:6].reshape(2, 3))
    assert np.array_equal(ckpt["g_ema"]["b"], buf[4:])
    assert np.shares_memory(ckpt["g_ema"]["a"], ckpt["g_ema"]["b"])  # one storage, as in torch
    # A strided tensor is built before its storage is read: it must still see the data.
    assert np.array_equal(ckpt["g_ema"]["t"], buf[1:7].reshape(2, 3).T)
    assert ckpt["step"].dtype == np.int64 and ckpt["step"].tolist() == [7, 8]
    assert vars(ckpt["args"]) == {"size": 32, "lr": 0.002}


# ---- refusals ----

class RunsCommand:
    """Pickles as os.system(<command>); only ever pickled here, never unpickled by pickle.load."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}"
    for proto in (0, 2, 4):  # pickle writes os.system as posix.system (nt.system on Windows)
        path = tmp_path / f"evil{proto}.pkl"
        path.write_bytes(pickle.dumps({"G_ema": RunsCommand(cmd)}, protocol=proto))
        with pytest.raises(CheckpointError, match=r"refusing to load global (posix|nt|os)\.system from .*evil"):
            read_nvidia_pickle(path)
    path = tmp_path / "evil_hand.pkl"
    path.write_bytes(b"cos\nsystem\n(V" + cmd.encode() + b"\ntR.")
    msg = r"refusing to load global os\.system from .*evil_hand\.pkl: not a tensor/network type"
    with pytest.raises(CheckpointError, match=msg):
        read_nvidia_pickle(path)
    assert not marker.exists()


def test_zip_with_foreign_global(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps({"g_ema": RunsCommand(f"touch {marker}")}, protocol=2))
        zf.writestr("evil/version", "3\n")
    assert sniff_format(path) == "torch-zip"
    with pytest.raises(CheckpointError, match=r"refusing to load global \w+\.system"):
        read_torch_zip(path)
    assert not marker.exists()


def test_module_src_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    net = persistent("Generator", module_src=f"open({str(marker)!r}, 'w').close()\nraise SystemExit(1)\n")
    path = tmp_path / "src.pkl"
    path.write_bytes(dump({"G_ema": net}, 3))
    assert read_nvidia_pickle(path)["G_ema"]["class_name"] == "Generator"
    assert not marker.exists()


def test_tensorflow_pickles_go_to_their_own_reader(tmp_path):
    path = tmp_path / "tf.pkl"
    path.write_bytes(dump((Call("dnnlib.tflib.network", "Network"),), 3))
    assert sniff_format(path) == "nvidia-tf-pkl"
    with pytest.raises(CheckpointError, match="a TensorFlow network pickle, not a PyTorch one"):
        read_nvidia_pickle(path)


def test_refuses_truncated_and_random_files(tmp_path):
    cases = {
        "half.pkl": NVIDIA_PKL.read_bytes()[: NVIDIA_PKL.stat().st_size // 2],
        "half.pt": R1_PT.read_bytes()[: R1_PT.stat().st_size // 2],
        "random.bin": np.random.default_rng(0).bytes(4096),
        "empty.pkl": b"",
    }
    flipped = bytearray(R1_PT.read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF  # inside a tensor record: caught by the zip CRC
    cases["flipped.pt"] = bytes(flipped)
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        for reader in (read_nvidia_pickle, read_torch_zip):
            with pytest.raises(CheckpointError, match=name):
                reader(path)
    with pytest.raises(CheckpointError, match="not found"):
        read_nvidia_pickle(tmp_path / "missing.pkl")


def test_refuses_tensor_outside_storage(tmp_path):
    data = np.arange(4, dtype=np.float32)
    path = tmp_path / "oob.pkl"
    path.write_bytes(dump({"G_ema": persistent("G", params=[("w", nvidia_tensor(data, 2, (2, 2), (2, 1)))])}, 3))
    with pytest.raises(CheckpointError, match="exceeds its storage"):
        read_nvidia_pickle(path)
