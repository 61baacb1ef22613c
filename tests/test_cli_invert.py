"""bin/invert end to end on a small checkpoint, and its handling of bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chunkygan_jax import io
from chunkygan_jax.errors import ImageError

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--steps=6", "--segments=2", "--lpips_net=alex", "--lpips_resolution=full"]


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture(scope="module")
def face(tiny_generator, tmp_path_factory):
    import jax.numpy as jnp

    img = tiny_generator.synthesis(jnp.broadcast_to(tiny_generator.w_avg, (1, tiny_generator.num_ws,
                                                                           tiny_generator.w_dim)))[0]
    path = tmp_path_factory.mktemp("img") / "face.png"
    io.save_png(path, io.to_uint8(np.clip(np.asarray(img), -1, 1)))
    return path


def run(*args, cwd=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(ROOT / "bin" / "invert"), *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


def test_end_to_end_writes_every_output(checkpoint, face, tmp_path):
    out = tmp_path / "out"
    proc = run(f"--image={face}", f"--generator={checkpoint}", f"--output_dir={out}", *FAST)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote" in proc.stdout and "6/6" in proc.stderr  # progress bar reached the end
    for name in ("projection.png", "side_by_side.png", "masks.png", "segments.png", "progression.png",
                 "metrics.json", "result/latents.npz", "result/arrays.npz", "result/result.json"):
        assert (out / name).is_file(), name
    assert Image.open(out / "side_by_side.png").size == (64, 32)
    assert Image.open(out / "progression.png").size == (32 * 3, 64)  # snapshots after steps 1, 5 and 6
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 6 and np.isfinite(metrics["final_losses"]["lpips"])
    # an existing output is never overwritten without --overwrite
    again = run(f"--image={face}", f"--generator={checkpoint}", f"--output_dir={out}", *FAST)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def _bad_inputs(tmp_path, face):
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 3] = 128
    Image.fromarray(rgba).save(tmp_path / "translucent.png")
    Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(tmp_path / "wide.png")
    (tmp_path / "text.png").write_text("not an image")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "small_mask.png")
    return [
        ([f"--image={tmp_path / 'missing.png'}"], "no such file"),
        ([f"--image={tmp_path / 'text.png'}"], "not a readable image"),
        ([f"--image={tmp_path / 'translucent.png'}"], "transparent"),
        ([f"--image={tmp_path / 'wide.png'}"], "not square"),
        ([f"--image={face}", f"--static_mask={tmp_path / 'small_mask.png'}"], "expected 32x32"),
        ([f"--image={face}", "--segments=0"], "segments"),
        ([f"--image={face}", "--steps=0"], "steps"),
        ([f"--image={face}", "--space=q"], "latent space"),
        ([f"--image={face}", "--lpips_resolution=big"], "lpips_resolution"),
        (["--bogus_flag=1"], "bogus_flag"),
    ]


def test_bad_input_one_line_exit_2_nothing_written(checkpoint, face, tmp_path):
    for args, message in _bad_inputs(tmp_path, face):
        out = tmp_path / "never"
        proc = run(f"--generator={checkpoint}", f"--output_dir={out}", "--steps=6", *args)
        assert proc.returncode == 2, (args, proc.stderr[-1500:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert not out.exists()


def test_documented_conversions(tmp_path):
    grey = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    img = io.load_image(tmp_path / "grey.png", 32)
    assert img.shape == (32, 32, 3) and np.array_equal(img[..., 0], img[..., 2])
    deep = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")  # uint16 -> a 16-bit PNG
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    img16 = io.load_image(tmp_path / "deep.png", 32)
    np.testing.assert_allclose(img16[..., 0], deep / 65535.0 * 2 - 1, atol=1e-6)  # full 16-bit range kept
    opaque = np.full((32, 32, 4), 255, np.uint8)
    opaque[..., 0] = 10
    Image.fromarray(opaque).save(tmp_path / "opaque.png")
    assert io.load_image(tmp_path / "opaque.png", 32).shape == (32, 32, 3)  # opaque alpha is dropped
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "big.png")
    assert io.load_image(tmp_path / "big.png", 32).shape == (32, 32, 3)  # square: resized
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "wide.png")
    assert io.load_image(tmp_path / "wide.png", 32, crop="center").shape == (32, 32, 3)
    with pytest.raises(ImageError, match="not square"):
        io.load_image(tmp_path / "wide.png", 32)
