"""Datasets on object storage (paths.py, files.py's bucket rules, dataset.py, bin/invert_dataset) against
real servers started by the fixtures on 127.0.0.1: gcp-storage-emulator for gs://, moto's server mode
for s3://. A bucket-to-bucket run gives bit for bit the local run's results; a generator loads from a
bucket; a folder the job did not write is never replaced; a run killed with SIGKILL and one stopped by
SIGTERM resume with nothing lost or doubled, the rest done by two processes sharing the bucket. Settings as in test_dataset.py (32 px, 2 segments, fixed
layout masks, AlexNet LPIPS at full resolution).
"""

import io as _io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chunkygan_jax import dataset, files, paths
from chunkygan_jax.checkpoints import load_generator
from chunkygan_jax.dataset import DatasetOptions
from chunkygan_jax.errors import ChunkyGANError, ConfigError
from chunkygan_jax.generators import fingerprint
from chunkygan_jax.inversion import InversionSettings, Inverter
from chunkygan_jax.masks.options import make_mask_source
from chunkygan_jax.results import load_result

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(segments=2, steps=6, lpips_net="alex", lpips_resolution="full", lambda_reg=0.0)
MASKS = "layout"
IMAGES = ["a.png", "sub/b.jpg", "c.png"]


def _png(seed, fmt="PNG"):
    small = np.random.RandomState(seed).uniform(0, 255, (4, 4, 3)).astype(np.uint8)
    buf = _io.BytesIO()
    Image.fromarray(small).resize((32, 32), Image.Resampling.BICUBIC).save(buf, fmt, quality=95)
    return buf.getvalue()


def _put_images(base, names, local=None):
    for i, rel in enumerate(names):
        data = _png(i, "JPEG" if rel.endswith(".jpg") else "PNG")
        paths.write_bytes(paths.join(base, rel), data)
        if local is not None:
            (local / rel).parent.mkdir(parents=True, exist_ok=True)
            (local / rel).write_bytes(data)


def _upload_folder(local: Path, url: str):
    for p in sorted(local.rglob("*")):
        if p.is_file():
            paths.upload(p, paths.join(url, p.relative_to(local).as_posix()))


@pytest.fixture(scope="module")
def inverter(tiny_generator):
    settings = InversionSettings(space="w+", **SETTINGS)
    return Inverter(tiny_generator, settings, make_mask_source(MASKS, SETTINGS["segments"], tiny_generator.resolution))


def _run(images, out, generator, inverter, **kw):
    return dataset.invert_dataset(images, out, generator, masks=MASKS, inverter=inverter,
                                  settings=SETTINGS, tune=kw.pop("tune", None),
                                  options=DatasetOptions(batch_size=1, progress=False, **kw))


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_bucket_to_bucket_run_matches_the_local_run(scheme, new_bucket, tiny_generator, tiny_checkpoint,
                                                    inverter, tmp_path):
    bucket = new_bucket(scheme)
    local_in = tmp_path / "in"
    _put_images(f"{bucket}/in", IMAGES, local=local_in)
    paths.write_bytes(f"{bucket}/in/notes.txt", b"not an image")
    _upload_folder(tiny_checkpoint, f"{bucket}/models/tiny")
    generator = load_generator(f"{bucket}/models/tiny")  # a generator read from the bucket
    assert fingerprint(generator) == fingerprint(tiny_generator)

    out = f"{bucket}/out"
    summary = _run(f"{bucket}/in", out, generator, inverter)
    assert (summary.inverted, summary.failed, summary.complete) == (len(IMAGES), 0, True)
    local = _run(local_in, tmp_path / "out", tiny_generator, inverter)
    assert local.inverted == len(IMAGES)
    for rel in IMAGES:
        got = load_result(paths.join(dataset.output_dir_for(out, rel), "result"))
        ref = load_result(dataset.output_dir_for(tmp_path / "out", rel) / "result")
        for k in ref.latents:
            np.testing.assert_array_equal(got.latents[k], ref.latents[k], err_msg=rel)
        np.testing.assert_array_equal(got.composite, ref.composite)
        marker = json.loads(paths.read_bytes(paths.join(dataset.output_dir_for(out, rel), files.MARKER)))
        assert marker["complete"] is True and set(marker["entries"]) == {"metrics.json", "masks.png",
                                                                            "projection.png", "result"}
    # a result saved to a bucket on its own loads back; once its marker says incomplete it is refused
    got.save(f"{bucket}/saved")
    again = load_result(f"{bucket}/saved")
    np.testing.assert_array_equal(again.composite, got.composite)
    marker = json.loads(paths.read_bytes(f"{bucket}/saved/{files.MARKER}"))
    paths.write_bytes(f"{bucket}/saved/{files.MARKER}", json.dumps({**marker, "complete": False}).encode())
    with pytest.raises(ChunkyGANError, match="upload did not finish"):
        load_result(f"{bucket}/saved")
    merged = [json.loads(x) for x in paths.read_text(f"{out}/manifest.jsonl").splitlines()]
    assert [r["image"] for r in merged] == sorted(IMAGES) and all(r["status"] == "done" for r in merged)
    # a glob over the bucket, and a rerun that finds everything done
    _, globbed = dataset.list_images(f"{bucket}/in/**/*.png")
    assert globbed == ["a.png", "c.png"]
    again = _run(f"{bucket}/in", out, generator, inverter)
    assert (again.skipped, again.pending, again.inverted) == (len(IMAGES), 0, 0)


def test_bucket_folders_the_job_did_not_write_are_never_replaced(new_bucket, tiny_generator, inverter):
    bucket = new_bucket("gs")
    _put_images(f"{bucket}/in", IMAGES[:1])
    out = f"{bucket}/out"
    theirs = paths.join(dataset.output_dir_for(out, "a.png"), "holiday.jpg")
    paths.write_bytes(theirs, b"a photo")
    summary = _run(f"{bucket}/in", out, tiny_generator, inverter)
    assert (summary.inverted, summary.failed) == (0, 1)
    assert "not written by chunkygan_jax" in dataset.read_manifest(out)["a.png"]["error"]
    assert paths.read_bytes(theirs) == b"a photo"
    assert paths.listdir(dataset.output_dir_for(out, "a.png")) == ["holiday.jpg"]
    # a file needs overwrite, a folder of ours with a user's file added is refused even with it
    with files.atomic_path(f"{bucket}/note.txt") as tmp:
        tmp.write_text("one")
    with pytest.raises(ConfigError, match="already exists; pass --overwrite"):
        with files.atomic_path(f"{bucket}/note.txt") as tmp:
            tmp.write_text("two")
    assert paths.read_text(f"{bucket}/note.txt") == "one"
    with files.atomic_path(f"{bucket}/ours", is_dir=True) as tmp:
        (tmp / "x.txt").write_text("x")
    paths.write_bytes(f"{bucket}/ours/mine.txt", b"user")
    with pytest.raises(ConfigError, match=r"chunkygan_jax did not write \(mine.txt\)"):
        files.check_writable(f"{bucket}/ours", overwrite=True, is_dir=True)
    with pytest.raises(ConfigError, match="does not exist"):
        files.check_folder("gs://no-such-bucket-here/out")


# ------------------------------------------------------------------------------------------ kill, preempt
def _cli(images, out, generator, *extra, steps=10):
    return [sys.executable, str(ROOT / "bin" / "invert_dataset"), f"--images={images}", f"--output_dir={out}",
            f"--generator={generator}", f"--segments={SETTINGS['segments']}", f"--steps={steps}",
            f"--lpips_net={SETTINGS['lpips_net']}", f"--lpips_resolution={SETTINGS['lpips_resolution']}",
            f"--lambda_reg={SETTINGS['lambda_reg']}", f"--masks={MASKS}", "--batch_size=1", "--noprogress", *extra]


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    return env


def _published(out, names):
    return [rel for rel in names if files.published(dataset.output_dir_for(out, rel), dataset.IMAGE_RESULT_KIND)]


def _start_and_signal(cmd, out, sig, after):
    """Start the tool; send `sig` once `after` batches have their manifest object (their results are
    published before it); return (returncode, stderr)."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while len(paths.listdir(f"{out}/manifest")) < after and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before the signal:\n{proc.stderr.read()[-3000:]}"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def test_sigkill_then_sigterm_then_two_processes_resume_on_a_bucket_losing_and_doubling_nothing(
        new_bucket, tiny_checkpoint):
    from chunkygan_jax.cli import EXIT_PREEMPTED

    bucket = new_bucket("s3")
    names = [f"img{i:02d}.png" for i in range(6)]
    _put_images(f"{bucket}/in", names)
    out = f"{bucket}/out"
    cmd = _cli(f"{bucket}/in", out, tiny_checkpoint)

    code, err = _start_and_signal(cmd, out, signal.SIGKILL, after=1)
    assert code == -signal.SIGKILL, err[-3000:]
    killed = _published(out, names)
    assert 1 <= len(killed) < len(names)
    # what a kill during an upload leaves: a claimed folder whose marker says incomplete, some objects
    half = dataset.output_dir_for(out, names[-1])
    paths.write_bytes(paths.join(half, files.MARKER), json.dumps(
        {"written_by": "chunkygan_jax", "kind": dataset.IMAGE_RESULT_KIND, "complete": False,
         "entries": ["metrics.json", "projection.png"]}).encode())
    paths.write_bytes(paths.join(half, "metrics.json"), b'{"version": 1, "status": "do')

    code, err = _start_and_signal(cmd, out, signal.SIGTERM, after=len(paths.listdir(f"{out}/manifest")) + 1)
    assert code == EXIT_PREEMPTED, err[-3000:]
    assert "stopped by SIGTERM" in err and err.strip().splitlines()[-1].startswith("stopped by SIGTERM")
    stopped = _published(out, names)
    merged = dataset.read_manifest(out)  # the manifest is complete: every published result has its line
    assert set(stopped) <= {rel for rel, r in merged.items() if r["status"] == "done"}
    assert len(stopped) < len(names) and names[-1] not in stopped
    lines = [json.loads(x) for x in paths.read_text(f"{out}/manifest.jsonl").splitlines()]
    assert sorted(r["image"] for r in lines) == sorted(merged)  # the merged view was written on SIGTERM

    # the rest by a job of two processes (jax.distributed on CPU) sharing the bucket: each takes its share
    # files[p::2] of what is left
    from conftest import _free_port

    started, port = time.time(), _free_port()
    procs = [subprocess.Popen(cmd + [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                                     f"--process_id={i}"], env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    summary = outputs[0][0]
    assert f"{len(stopped)} already done" in summary and f"{len(names) - len(stopped)} inverted" in summary, summary
    now = {0: [], 1: []}
    for name in paths.listdir(f"{out}/manifest"):
        for r in map(json.loads, paths.read_text(f"{out}/manifest/{name}").splitlines()):
            assert name.startswith(f"process-{r['process']:05d}-")
            if r["time"] >= started:
                now[r["process"]].append(r["image"])
    left = [rel for rel in names if rel not in stopped]
    assert sorted(now[0]) == [rel for rel in names[0::2] if rel in left]
    assert sorted(now[1]) == [rel for rel in names[1::2] if rel in left] and now[1]
    assert _published(out, names) == names  # nothing lost
    lines = [json.loads(x) for x in paths.read_text(f"{out}/manifest.jsonl").splitlines()]
    assert [r["image"] for r in lines] == names and all(r["status"] == "done" for r in lines)  # nothing doubled
    assert paths.listdir(f"{out}/results") == names
    for rel in names:
        assert paths.listdir(dataset.output_dir_for(out, rel)) == sorted(
            [files.MARKER, "masks.png", "metrics.json", "projection.png", "result"])
        assert load_result(paths.join(dataset.output_dir_for(out, rel), "result")).loss_history.shape == (10,)



def test_a_segmenter_loads_from_a_bucket(new_bucket, tiny_generator, tmp_path):
    from chunkygan_jax.masks import segmenter as seg_lib
    from chunkygan_jax.masks.options import make_mask_source, mask_source_record

    seg = seg_lib.kmeans_segmenter(tiny_generator, 2, cache_dir=tmp_path / "cache")
    seg_lib.save_segmenter(seg, tmp_path / "head")
    bucket = new_bucket("gs")
    _upload_folder(tmp_path / "head", f"{bucket}/heads/two")
    source = make_mask_source("segmenter", 2, tiny_generator.resolution, generator=tiny_generator,
                              segmenter=f"{bucket}/heads/two/")
    assert seg_lib.segmenter_identity(source) == seg_lib.segmenter_identity(seg)
    record = mask_source_record("segmenter", source, tiny_generator, 2, segmenter=f"{bucket}/heads/two/")
    assert record["from"] == f"{bucket}/heads/two"  # the URL, not a local path made from it
