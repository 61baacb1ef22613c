"""bin/invert end to end on a small checkpoint, and its handling of bad input."""

import json
import logging
import os
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
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


@pytest.fixture(scope="module")
def inverted(checkpoint, face, tmp_path_factory):
    """bin/invert with its defaults (masks: the segment generator G^S) on the tiny checkpoint, for a photo
    twice the generator's resolution (resized, and the tool says so)."""
    work = tmp_path_factory.mktemp("inverted")
    out, big = work / "out", work / "face64.png"
    Image.open(face).resize((64, 64), Image.Resampling.BICUBIC).save(big)
    proc = run(f"--image={big}", f"--generator={checkpoint}", f"--output_dir={out}", *FAST)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc, big


def test_end_to_end_writes_every_output(inverted, checkpoint, face):
    out, proc, big = inverted
    assert "wrote" in proc.stdout and "6/6" in proc.stderr  # progress bar reached the end
    assert f"resized {big} from 64x64 to 32x32" in proc.stderr.splitlines()
    assert "s compiling, then" in proc.stdout and "ms/step" in proc.stdout
    for name in ("projection.png", "side_by_side.png", "masks.png", "segments.png", "progression.png",
                 "metrics.json", "result/latents.npz", "result/arrays.npz", "result/result.json"):
        assert (out / name).is_file(), name
    assert Image.open(out / "projection.png").size == (32, 32)  # the result itself: generator resolution
    scale = 256 // 32  # sheets are enlarged with nearest-neighbour so that small images can be seen
    side = np.asarray(Image.open(out / "side_by_side.png"))
    assert side.shape == (32 * scale, 64 * scale, 3)
    np.testing.assert_array_equal(side[::scale, ::scale][:, 32:], np.asarray(Image.open(out / "projection.png")))
    masks = Image.open(out / "masks.png")
    assert masks.size[0] == 32 * scale and masks.size[1] > 32 * scale  # with the legend below
    # progression: a row of step labels over composites and masks after steps 1, 5 and 6
    prog = Image.open(out / "progression.png")
    assert prog.size[0] == 3 * 32 * scale and prog.size[1] > 2 * 32 * scale
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 6 and np.isfinite(metrics["final_losses"]["lpips"])
    record = metrics["settings"]["masks"]
    assert record["kind"] == "segmenter" and record["head"] == "kmeans" and record["learned"]
    assert metrics["mask_coherence"]["pieces"] >= 1
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


def test_edit_keeps_the_segment_code_unless_asked_and_refuses_another_segmenter(inverted, tiny_generator, tmp_path):
    """bin/edit on a G^S result: a global direction keeps X^S and the masks by default (the rule of the API
    and the editor too); with --segment_code it moves X^S and the masks are the recorded segmenter's
    masks for the moved code; a segmenter that did not make the result is refused (exit 2, one line)."""
    from chunkygan_jax.masks import segmenter as seg_lib
    from chunkygan_jax.results import load_result

    out = inverted[0]
    g = tiny_generator
    direction = np.random.RandomState(2).randn(g.num_ws, g.w_dim).astype(np.float32)
    np.save(tmp_path / "d.npy", direction)

    def edit(*args):
        return run(f"--latents={out / 'result'}", f"--direction={tmp_path / 'd.npy'}", "--strength=3", *args,
                   tool="edit")

    proc = edit(f"--output={tmp_path / 'k.png'}", f"--output_latents={tmp_path / 'k'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, kept = load_result(out / "result"), load_result(tmp_path / "k")
    np.testing.assert_array_equal(kept.latents["segment_code"], before.latents["segment_code"])
    np.testing.assert_array_equal(kept.masks, before.masks)
    assert np.abs(kept.composite - before.composite).max() > 1e-2  # the codes moved

    proc = edit(f"--output={tmp_path / 'e.png'}", f"--output_latents={tmp_path / 'e'}", "--segment_code")
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = load_result(tmp_path / "e")
    np.testing.assert_allclose(after.latents["segment_code"] - before.latents["segment_code"], 3 * direction,
                               atol=1e-5)
    seg = seg_lib.kmeans_segmenter(g, 2)  # the cached head the result records (same cache folder)
    np.testing.assert_allclose(after.masks, seg.masks_for_code(after.latents["segment_code"]), atol=1e-5)
    assert np.abs(after.masks - before.masks).max() > 1e-3  # the segments followed the edit

    seg_lib.save_segmenter(seg_lib.fit_kmeans(g, 2, seed=1), tmp_path / "other")
    bad = edit(f"--output={tmp_path / 'f.png'}", f"--segmenter={tmp_path / 'other'}", "--segment_code")
    one_line(bad, 2, "is not the segmenter that made this result")
    assert not (tmp_path / "f.png").exists()


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
        ([f"--image={face}", f"--segmenter={tmp_path}"], "not a segmenter checkpoint"),
        ([f"--image={face}", "--masks=logits", f"--segmenter={tmp_path}"], "applies to masks='segmenter'"),
        ([f"--image={face}", "--masks=confetti"], "neither a mask kind"),
    ]


def test_bad_input_one_line_exit_2_nothing_written(checkpoint, face, tmp_path):
    # One line and nothing else: the output checks run before the progress bar could start. The runs are
    # independent (each only reads its inputs), so two run at a time.
    out = tmp_path / "never"
    cases = list(_bad_inputs(tmp_path, face))
    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = list(pool.map(lambda case: run(f"--generator={checkpoint}", f"--output_dir={out}", "--steps=6",
                                               *case[0]), cases))
    for (args, message), proc in zip(cases, procs):
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


def test_report_pictures_are_readable():
    """The progression's steps (the paper's and doublings after 37), and masks.png: the colour-coded
    masks enlarged with nearest-neighbour over a legend with a swatch of every segment's colour."""
    from chunkygan_jax import report
    from chunkygan_jax.masks.colors import color_code, palette

    assert report.progression_steps(500) == [1, 5, 9, 15, 23, 37, 74, 148, 296, 500]
    assert report.progression_steps(40) == [1, 5, 9, 15, 23, 37, 40]
    assert report.progression_steps(6) == [1, 5, 6]
    labels = np.zeros((64, 64), int)
    labels[:, 32:] = 1
    labels[40:, 32:] = 2
    masks = (labels[None] == np.arange(3)[:, None, None]).astype(np.float32)
    sheet = report.masks_sheet(masks)
    assert sheet.shape[1] == 256 and sheet.shape[0] > 256
    np.testing.assert_array_equal(sheet[:256:4, ::4], color_code(masks))
    legend = sheet[256:]
    for colour in (palette(3) * 255 + 0.5).astype(np.uint8):
        assert np.any(np.all(legend == colour, axis=-1)), colour


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
