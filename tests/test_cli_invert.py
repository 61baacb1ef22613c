"""bin/invert end to end on a small checkpoint, and its handling of bad input."""

import json
import logging
import os
import struct
import subprocess
import sys
import zlib
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


def run(*args, cwd=None, tool="invert"):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "bin" / tool), *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


def one_line(proc, status, message):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == status and len(lines) == 1 and message in lines[0], (proc.returncode, proc.stderr)


def test_end_to_end_writes_every_output(checkpoint, face, tmp_path):
    out = tmp_path / "out"
    big = tmp_path / "face64.png"  # twice the generator's resolution: resized, and the tool says so
    Image.open(face).resize((64, 64), Image.Resampling.BICUBIC).save(big)
    proc = run(f"--image={big}", f"--generator={checkpoint}", f"--output_dir={out}", *FAST)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote" in proc.stdout and "6/6" in proc.stderr  # progress bar reached the end
    assert f"resized {big} from 64x64 to 32x32" in proc.stderr.splitlines()
    assert "s compiling, then" in proc.stdout and "ms/step" in proc.stdout
    for name in ("projection.png", "side_by_side.png", "masks.png", "segments.png", "progression.png",
                 "metrics.json", "result/latents.npz", "result/arrays.npz", "result/result.json"):
        assert (out / name).is_file(), name
    assert Image.open(out / "side_by_side.png").size == (64, 32)
    assert Image.open(out / "progression.png").size == (32 * 3, 64)  # snapshots after steps 1, 5 and 6
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 6 and np.isfinite(metrics["final_losses"]["lpips"])
    # compilation and steady steps apart: the first call's excess, then the later steps' mean
    assert metrics["compile_seconds"] >= 0 and metrics["ms_per_step"] > 0
    assert metrics["compile_seconds"] + 5 * metrics["ms_per_step"] / 1000 <= metrics["seconds"]
    # an existing output is never overwritten without --overwrite
    again = run(f"--image={face}", f"--generator={checkpoint}", f"--output_dir={out}", *FAST)
    one_line(again, 2, "--overwrite")
    # bin/edit: neither the inverted photo (even with --overwrite) nor an existing file without it
    photo = big.read_bytes()
    before = (out / "projection.png").read_bytes()
    edit = run(f"--latents={out / 'result'}", f"--output={big}", "--overwrite", tool="edit")
    one_line(edit, 2, "an input")
    edit = run(f"--latents={out / 'result'}", f"--output={out / 'projection.png'}", tool="edit")
    one_line(edit, 2, "already exists; pass --overwrite")
    assert big.read_bytes() == photo and (out / "projection.png").read_bytes() == before


def _bomb(path, side=20000):
    """A valid PNG header declaring side x side pixels (far past Pillow's bomb limit), and no data."""
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data
                                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def _bad_inputs(tmp_path, face):
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 3] = 128
    Image.fromarray(rgba).save(tmp_path / "translucent.png")
    Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(tmp_path / "wide.png")
    (tmp_path / "text.png").write_text("not an image")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "small_mask.png")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "dot.png")
    (tmp_path / "a_file").write_text("x")
    return [
        ([f"--image={_bomb(tmp_path / 'bomb.png')}"], "too many pixels"),
        ([f"--image={tmp_path / 'dot.png'}"], "under a quarter of the generator's 32 px"),
        ([f"--image={face}", f"--output_dir={tmp_path / 'a_file'}"], "not a folder"),
        ([f"--image={face}", f"--output_dir={tmp_path / 'a_file' / 'out'}"], "is a file, not a folder"),
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
    # One line and nothing else: the output checks run before the progress bar could start.
    for args, message in _bad_inputs(tmp_path, face):
        out = tmp_path / "never"
        proc = run(f"--generator={checkpoint}", f"--output_dir={out}", "--steps=6", *args)
        assert proc.returncode == 2, (args, proc.stderr[-1500:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporaries


def test_a_users_folder_is_never_replaced_and_impossible_requests_are_refused_up_front(checkpoint, face,
                                                                                        tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"\xff\xd8 someone's holiday")
    proc = run(f"--image={face}", f"--generator={checkpoint}", f"--output_dir={photos}", "--overwrite", *FAST)
    one_line(proc, 2, "not written by chunkygan_jax")
    assert os.listdir(photos) == ["holiday.jpg"]
    assert (photos / "holiday.jpg").read_bytes() == b"\xff\xd8 someone's holiday"
    # ten million segments: refused with the estimate (exit 4) before anything is allocated
    proc = run(f"--image={face}", f"--generator={checkpoint}", f"--output_dir={tmp_path / 'out'}",
               "--segments=10000000", "--steps=2")
    one_line(proc, 4, "10000000 segments at 32 px need at least")
    assert "GiB" in proc.stderr and not (tmp_path / "out").exists()


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


def test_resizes_are_reported_and_tiny_or_huge_images_refused(tmp_path, caplog):
    Image.fromarray(np.full((512, 512, 3), 90, np.uint8)).save(tmp_path / "big.png")
    with caplog.at_level(logging.INFO, logger="chunkygan_jax"):
        assert io.load_image(tmp_path / "big.png", 64).shape == (64, 64, 3)
    assert [r.getMessage() for r in caplog.records] == [f"resized {tmp_path / 'big.png'} from 512x512 to 64x64"]
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "dot.png")
    with pytest.raises(ImageError, match="under a quarter"):
        io.load_image(tmp_path / "dot.png", 64)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "quarter.png")
    assert io.load_image(tmp_path / "quarter.png", 64).shape == (64, 64, 3)  # a quarter is still accepted
    assert io.load_image(tmp_path / "dot.png", 64, upscale=True).shape == (64, 64, 3)  # asked for
    with pytest.raises(ImageError, match="too many pixels"):
        io.load_image(_bomb(tmp_path / "bomb.png"), 64)
    # 16-bit greyscale keeps its precision through a resize (8 bits would leave steps of 1/255)
    ramp = np.tile(np.linspace(1000, 1400, 64), (64, 1)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    img = io.load_image(tmp_path / "deep.png", 32)[..., 0]
    levels = (img[16] + 1) / 2 * 65535
    assert np.all(np.diff(levels[2:-2]) > 0) and np.ptp(levels) < 500  # 400/65535 spans ~1.6 8-bit levels
