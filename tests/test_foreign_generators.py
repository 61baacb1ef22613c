"""NVIDIA TensorFlow StyleGAN2 pickles and conditional generators, against NVIDIA's official code.

The fixtures in tests/fixtures were made by make_official_fixtures.py: random generators in the exact
file layouts, and the outputs of the official torch Generator on them (the TensorFlow pickles
converted by the official legacy.py). No torch is needed here.
"""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chunkygan_jax.checkpoints import load_generator, read_record, save_generator
from chunkygan_jax.converters import stylegan2 as conv
from chunkygan_jax.converters.tf_pickle import read_tf_pickle
from chunkygan_jax.converters.torch_pickle import sniff_format
from chunkygan_jax.errors import CheckpointError, ConfigError
from chunkygan_jax.generators.protocol import bind_label, fingerprint
from chunkygan_jax.generators.statedict import compute_w_avg
from chunkygan_jax.generators.stylegan2 import sample_ws

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
TOL = 1e-4  # the brief's fp32 bound; measured differences are below 1e-5


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("CHUNKYGAN_CACHE", str(path))
    return path


@pytest.fixture(scope="module")
def converted():
    """name -> (generator, source record, official outputs), each fixture converted once."""
    out = {}
    for name in ("tf_f32", "tf_e16", "tf_cond16", "torch_cond32"):
        generator, record = conv.convert_file(FIXTURES / f"{name}.pkl")
        out[name] = (generator, record, dict(np.load(FIXTURES / f"{name}.npz")))
    return out


mapping = jax.jit(lambda g, z, label, psi, cutoff: g.mapping(z, label=label, truncation_psi=psi,
                                                            truncation_cutoff=cutoff), static_argnums=(3, 4))
synthesis = jax.jit(lambda g, ws, mode: g.synthesis(ws, noise_mode=mode), static_argnums=2)


def nchw(img):
    return np.transpose(np.asarray(img), (0, 3, 1, 2))


@pytest.mark.parametrize("name", ["tf_f32", "tf_e16", "tf_cond16", "torch_cond32"])
def test_matches_the_official_generator(converted, name):
    g, record, official = converted[name]
    assert record["format"] == ("nvidia-pkl" if name.startswith("torch") else "nvidia-tf-pkl")
    assert record["network"] == ("G_ema" if name.startswith("torch") else "Gs")
    assert record["w_avg_source"] == "checkpoint"
    np.testing.assert_array_equal(g.params["mapping"]["w_avg"], official["w_avg"])
    labels = jnp.asarray(official["labels"]) if g.num_classes else None
    assert g.num_classes == official["c"].shape[1]
    z = jnp.asarray(official["z"])
    assert np.abs(official["ws_trunc"] - official["ws"])[:, :4].min(axis=-1).max() > 0  # truncation is exercised
    np.testing.assert_allclose(mapping(g, z, labels, 1.0, None), official["ws"], atol=TOL, rtol=0)
    np.testing.assert_allclose(mapping(g, z, labels, 0.7, 4), official["ws_trunc"], atol=TOL, rtol=0)
    for codes, image, mode in (("ws", "img_w", "const"), ("ws_trunc", "img_trunc", "const"),
                               ("wplus", "img_wplus", "const"), ("wplus", "img_wplus_nonoise", "none")):
        got = nchw(synthesis(g, jnp.asarray(official[codes]), mode))
        np.testing.assert_allclose(got, official[image], atol=TOL, rtol=0, err_msg=f"{name} {image}")
    if g.num_classes:  # NVIDIA's c (one-hot rows) and class indices are the same thing
        c = jnp.asarray(official["c"])
        np.testing.assert_allclose(mapping(g, z, c, 1.0, None), official["ws"], atol=TOL, rtol=0)


def test_tf_reader_collects_gs_and_never_runs_its_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the fixture's build_module_src would leave a marker file here
    path = FIXTURES / "tf_f32.pkl"
    assert sniff_format(path) == "nvidia-tf-pkl"
    net = read_tf_pickle(path)
    assert net["name"] == "Gs" and net["version"] == 4
    assert net["static_kwargs"]["resolution"] == 32
    assert "dlatent_avg" in net["variables"] and "synthesis/noise6" in net["variables"]
    assert net["variables"]["synthesis/32x32/Conv0_up/weight"].shape == (3, 3, 32, 16)
    assert not list(tmp_path.iterdir())
    # build_module_src is not kept either
    assert not any("EXECUTED" in str(v) for v in net.values())


def test_sniffing_finds_tensorflow_pickles_by_their_network_class(tmp_path):
    stack_global = b"\x80\x04\x8c\x14dnnlib.tflib.network\x8c\x07Network\x93)\x81}b."  # protocol 4
    (tmp_path / "p4.pkl").write_bytes(stack_global)
    assert sniff_format(tmp_path / "p4.pkl") == "nvidia-tf-pkl"
    with pytest.raises(CheckpointError, match=r"p4\.pkl: not a TensorFlow StyleGAN2 network pickle"):
        read_tf_pickle(tmp_path / "p4.pkl")
    # the module's name in text (say a PyTorch pickle's embedded source) does not make a TensorFlow pickle
    (tmp_path / "src.pkl").write_bytes(pickle.dumps({"module_src": "import dnnlib.tflib.network"}, protocol=3))
    assert sniff_format(tmp_path / "src.pkl") == "nvidia-pkl"
    assert sniff_format(FIXTURES / "torch_cond32.pkl") == "nvidia-pkl"


def test_tf_refusals():
    net = read_tf_pickle(FIXTURES / "tf_f32.pkl")

    def convert(variables=None, **kwargs):
        return conv.from_tf_network({**net, "variables": variables or net["variables"],
                                     "static_kwargs": {**net["static_kwargs"], **kwargs}})

    v = net["variables"]
    with pytest.raises(CheckpointError, match="'resnet' synthesis architecture"):
        convert({**v, "synthesis/8x8/Skip/weight": np.zeros((1, 1, 32, 32), np.float32)})
    with pytest.raises(CheckpointError, match="'orig' synthesis architecture"):
        convert({**v, "synthesis/ToRGB_lod0/weight": np.zeros((1, 1, 16, 3), np.float32)})
    with pytest.raises(CheckpointError, match="LabelConcat"):
        convert({**v, "mapping/LabelConcat/weight": np.zeros((4, 32), np.float32)})
    with pytest.raises(CheckpointError, match="unexpected variables .*synthesis/64x64/Conv/weight"):
        convert({**v, "synthesis/64x64/Conv/weight": np.zeros((3, 3, 16, 16), np.float32)})
    with pytest.raises(CheckpointError, match="missing: synthesis.b8.conv0.noise_const"):
        convert({k: a for k, a in v.items() if k != "synthesis/noise1"})
    with pytest.raises(CheckpointError, match="nonlinearity='relu'; only 'lrelu'"):
        convert(nonlinearity="relu")
    with pytest.raises(CheckpointError, match="options this converter does not know: fancy_option"):
        convert(fancy_option=1)
    with pytest.raises(CheckpointError, match="resolution=64 but its variables imply 32"):
        convert(resolution=64)
    g, _ = convert(conv_clamp=256, mapping_lrmul=0.1, truncation_psi=0.5)
    assert g.config.conv_clamp == 256.0 and g.config.mapping_lr_multiplier == 0.1


def test_conditional_generator_needs_exactly_one_class(converted):
    g, record, official = converted["torch_cond32"]
    assert record["class_w_avg_source"] == conv.CLASS_W_AVG_COMPUTED
    z = jnp.asarray(official["z"])
    with pytest.raises(ConfigError, match=r"conditional \(5 classes\): give a class label 0..4"):
        g.mapping(z)
    with pytest.raises(ConfigError, match="conditional"):
        g.w_avg
    with pytest.raises(ConfigError, match="conditional"):
        bind_label(g, None)
    with pytest.raises(ConfigError, match="class index 0..4"):
        g.with_label(5)
    with pytest.raises(ConfigError, match="class indices 0..4"):
        g.mapping(z, label=np.array([0, 1, 7]))
    unconditional = converted["tf_f32"][0]
    with pytest.raises(ConfigError, match="unconditional"):
        bind_label(unconditional, 0)
    with pytest.raises(ConfigError, match="unconditional"):
        unconditional.mapping(jnp.zeros((1, 32)), label=0)
    with pytest.raises(ConfigError, match="unconditional"):
        sample_ws(unconditional, 2, 0, label=1)
    assert bind_label(unconditional, None) is unconditional


def test_a_bound_generator_is_an_unconditional_generator_of_its_class(converted):
    g, _, official = converted["torch_cond32"]
    bound = bind_label(g, 2)
    assert bound.label == 2 and bind_label(bound, None) is bound
    z = jnp.asarray(official["z"])
    # sample 2 of the fixture has class 2: the bound mapping reproduces the official one there
    np.testing.assert_allclose(bound.mapping(z[2:]), official["ws"][2:], atol=TOL, rtol=0)
    # each class's w_avg is the mean of 10,000 mapped z of that class, as the record says
    class_w_avg = np.asarray(g.params["mapping"]["class_w_avg"])
    assert class_w_avg.shape == (5, 32)
    np.testing.assert_array_equal(bound.w_avg, class_w_avg[2])
    np.testing.assert_allclose(class_w_avg[2], compute_w_avg(g, label=2), atol=1e-6, rtol=0)
    assert np.abs(class_w_avg[0] - class_w_avg[2]).max() > 0.05  # the classes differ
    # sampling and the inversion protocol run in the bound class
    np.testing.assert_array_equal(sample_ws(bound, 4, 7), sample_ws(g, 4, 7, label=2))
    codes = bound.initial_codes("w+", 2)
    np.testing.assert_array_equal(codes[1, 0], class_w_avg[2])
    img = bound.synthesize(codes, "w+")
    assert img.shape == (2, 32, 32, 3) and np.isfinite(np.asarray(img)).all()
    assert fingerprint(bound) != fingerprint(g.with_label(1))  # caches are per class


def test_conditional_and_tf_checkpoints_round_trip(converted, tmp_path, cache):
    g, record, _ = converted["tf_cond16"]
    saved = save_generator(g, tmp_path / "cond", source=record)
    assert saved["class_w_avg_source"] == conv.CLASS_W_AVG_COMPUTED
    assert saved["config"]["c_dim"] == 3 and "label" not in saved["config"]
    loaded = load_generator(tmp_path / "cond")
    assert loaded.num_classes == 3 and loaded.label is None
    np.testing.assert_array_equal(loaded.params["mapping"]["class_w_avg"], g.params["mapping"]["class_w_avg"])
    # an unconditional generator's record does not change: no class fields at all
    plain = save_generator(converted["tf_f32"][0], tmp_path / "plain")
    assert not {"c_dim", "embed_features", "label"} & set(plain["config"]) and "class_w_avg_source" not in plain
    # load_generator takes the TensorFlow pickle itself, converted once into the cache
    direct = load_generator(FIXTURES / "tf_e16.pkl")
    assert fingerprint(direct) == fingerprint(converted["tf_e16"][0])
    entry = next((cache / "generators").iterdir())
    assert read_record(entry)["source"]["format"] == "nvidia-tf-pkl"


def test_bin_convert_reads_tf_and_conditional_pickles(tmp_path, cache):
    env = {**os.environ, "CHUNKYGAN_CACHE": str(cache), "JAX_PLATFORMS": "cpu"}
    for name, expect in (("tf_f32", "(nvidia-tf-pkl, sha256 "), ("torch_cond32", "conditional: 5 classes")):
        res = subprocess.run([sys.executable, str(ROOT / "bin" / "convert"), "--input", str(FIXTURES / f"{name}.pkl"),
                              "--output", str(tmp_path / name)], capture_output=True, text=True, env=env, cwd=ROOT,
                             timeout=120)
        assert res.returncode == 0, res.stderr
        assert expect in res.stdout and "32px" in res.stdout
        assert read_record(tmp_path / name)["source"]["file"] == f"{name}.pkl"


def test_bin_invert_takes_a_class_label_for_a_conditional_generator(tmp_path, cache):
    """bin/invert --label=K on the conditional fixture; without a label, or a label for an unconditional
    generator, one line and exit 2 before any work."""
    from chunkygan_jax import io

    env = {**os.environ, "CHUNKYGAN_CACHE": str(cache), "JAX_PLATFORMS": "cpu"}
    image = tmp_path / "img.png"
    io.save_png(image, (np.random.RandomState(0).uniform(0, 255, (32, 32, 3))).astype(np.uint8))
    pkl = FIXTURES / "torch_cond32.pkl"
    fast = ["--steps=2", "--segments=2", "--lpips_net=alex", "--lpips_resolution=full", "--masks=logits"]

    def invert(*args):
        return subprocess.run([sys.executable, str(ROOT / "bin" / "invert"), f"--image={image}", *fast, *args],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)

    res = invert(f"--generator={pkl}", "--label=3", f"--output_dir={tmp_path / 'out'}")
    assert res.returncode == 0, res.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["settings"]["label"] == 3
    for args, message in (([f"--generator={pkl}"], "give a class label"),
                          ([f"--generator={pkl}", "--label=9"], "class"),
                          (["--label=1", f"--generator={ROOT / 'tests' / 'fixtures' / 'tf_f32.pkl'}"], "unconditional")):
        res = invert(*args, f"--output_dir={tmp_path / 'refused'}")
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and message in lines[-1] and "Traceback" not in res.stderr, res.stderr[-2000:]
        assert not (tmp_path / "refused").exists()
