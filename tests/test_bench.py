"""Every script in bench/ runs at its smallest setting, so that a change in the library cannot leave a
benchmark broken unnoticed. The numbers are not checked (they are meaningless at these sizes), only that
each script finishes and prints what it reports. XLA compiles without LLVM optimisation here: the
programs are tiny and compiling is most of each run. The cases run two at a time (see `started`)."""

import importlib.util
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
GOLDEN = ROOT.parent / "shared" / "golden"
FAST_XLA = "--xla_backend_optimization_level=0"


def env():
    flags = f"{os.environ.get('XLA_FLAGS', '')} {FAST_XLA}".strip()
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), XLA_FLAGS=flags)


def run(script, *args, cwd, stdin=None):
    proc = subprocess.run([sys.executable, str(BENCH / script), *map(str, args)], input=stdin, capture_output=True, text=True,
                          env=env(), cwd=cwd, timeout=600)
    assert proc.returncode == 0, f"{script} {' '.join(map(str, args))}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def official_checkout():
    """The official code for vs_official.py: torch installed and $STYLEGAN2_ADA_PYTORCH a checkout."""
    path = Path(os.environ.get("STYLEGAN2_ADA_PYTORCH", "/nonexistent"))
    if importlib.util.find_spec("torch") is None:
        return None, "torch is not installed"
    if not (path / "training" / "networks.py").is_file():
        return None, "STYLEGAN2_ADA_PYTORCH does not name a stylegan2-ada-pytorch checkout"
    return path, ""


# name -> (script, arguments (formatted with ckpt, out, golden), what its output must contain)
CASES = {
    "step": ("step.py", ["--smoke"], "ms/step"),
    "loop_forms": ("loop_forms.py", ["--smoke"], "| steps:raw |"),
    "compile_prepare": ("compile_prepare.py", ["--smoke"], "compile_s_prepared"),
    "memory_estimate": ("memory_estimate.py", ["--smoke"], "| tiny | 2 | float32 |"),
    "lpips_cost": ("lpips_cost.py", ["--size=32", "--runs=1", "--nets=alex"], "alex"),
    "parity_on_device": ("parity_on_device.py", ["--golden={golden}"], '"all_within_1e-4": true'),
    "segmenter_cost": ("segmenter_cost.py", ["--segments=2", "--steps=1", "--repeats=1", "--lpips=vgg",
                                             "--lpips_resolution=full", "--resolution=16"], "G^S learned"),
    "segmenter_samples": ("segmenter_samples.py", ["--generator={ckpt}", "--segments=2", "--samples=1",
                                                   "--metric_samples=2", "--output={out}/sheet.png"], "wrote"),
    "segmenter_real": ("segmenter_real.py", ["--generator={ckpt}", "--segments=2", "--steps=1", "--lpips_net=alex",
                                             "--methods=G^S", "--output={out}/real.json",
                                             "--sheet={out}/real.png"], "wrote"),
    "dataset_throughput": ("dataset_throughput.py", ["--devices=2", "--images=2", "--batch_size=2", "--segments=2",
                                                     "--steps=1", "--generator={ckpt}", "--sources=gcs"], "images/s"),
    "dataset_throughput_write": ("dataset_throughput.py", ["--write_only=32", "--rounds=1", "--segments=2"],
                                 "float16"),
    "editor_latency": ("editor_latency.py", ["--generator={ckpt}", "--segments=2", "--repeats=1", "--warmup=1"],
                       "slider move"),
    "editor_load": ("editor_load.py", ["--generator={ckpt}", "--segments=2", "--clients=2", "--seconds=2"],
                    "requests/s"),
    "foreign_parity": ("foreign_parity.py", [], "tf_f32"),
    "labelled_directions": ("labelled_directions.py", ["--generator={ckpt}", "--labels=20", "--trials=1",
                                                       "--attributes=projection,top", "--reference=100",
                                                       "--output={out}/labelled.json"], "| top | clear | 20 |"),
    "labelled_twenty": ("labelled_twenty.py", ["--generator={ckpt}", "--sets=1", "--properties=top",
                                               "--components=0,4", "--penalties=1/N", "--reports=5-fold",
                                               "--fresh=100", "--output={out}/twenty.json"], "| spread | 4 | 1/N |"),
    "tuning_real": ("tuning_real.py", ["--generator={ckpt}", "--segments=2", "--steps=1", "--tune_steps=2",
                                       "--rank=1", "--rounds=0", "--no_arithmetic", "--output={out}/tuning.json",
                                       "--sheet={out}/tuning.png", "--pasted_sheet={out}/pasted.png"],
                    "batched_over_alone"),
    "group_photos": ("group_photos.py", ["--generator={ckpt}", "--steps=1", "--segments=2"], '"ours"'),
    "group_figure": ("group_figure.py", ["{root}/docs/images/group_edit.png", "{root}/docs/images/group_edit.png",
                                         "--output={out}/figure.png", "--width=64"], "wrote"),
    "two_halves": ("two_halves.py", ["--steps=1", "--output={out}/two_halves.json"], "true halves"),
    "demo_face": ("demo_face.py", ["--steps=1", "--smoke", "--generator={ckpt}", "--output={out}/demo_face.json"],
                  "lpips"),
    "global_edit_masks": ("global_edit_masks.py", ["--generator={ckpt}", "--steps=1", "--segments=2",
                                                   "--directions=0", "--strengths=3",
                                                   "--output={out}/global_edit_masks.json"], "relabelled"),
    "editor_screenshot": ("editor_screenshot.py", ["{out}/result", "--output={out}/editor.png",
                                                   "--panel_output={out}/panel.png"], "held-out accuracy"),
    "start_symmetry": ("start_symmetry.py", ["--generator={ckpt}", "--smoke"], '"lpips_apart"'),
    "noise_sharing": ("noise_sharing.py", ["--seeds=0", "--steps=2", "--lpips_net=alex"], "| setting |"),
    "vs_official_ours": ("vs_official.py", [], ""),  # our worker alone (our_worker)
    "vs_official": ("vs_official.py", ["--official={official}", "--rounds=1", "--works=synth_fwd:1,step:2",
                                       "--resolution=32", "--channel_base=512", "--channel_max=32"], "| full ChunkyGAN"),
    "device_run": ("device_run.sh", [], ""),
}


# Scripts run by another test, where their input is made anyway.
ELSEWHERE = {"photo_figure.py": "tests/test_photos.py::test_invert_align_end_to_end draws its --align report"}


def test_every_bench_script_has_a_case():
    scripts = {p.name for p in BENCH.iterdir() if p.suffix in (".py", ".sh")}
    assert scripts == {script for script, _, _ in CASES.values()} | set(ELSEWHERE)


def our_worker(out):
    """vs_official.py's JAX worker through its own stdin protocol: setup (the masks the official side
    reads), parity (3 full steps with learned logits) and one timed step, without torch, on the golden
    32 px weights."""
    from conftest import golden_state, load_golden
    from chunkygan_jax.generators import stylegan2_from_nvidia

    data = load_golden("nvidia_P1")
    state = golden_state(data)
    np.savez(out / "state.npz", **state)
    g = stylegan2_from_nvidia(state, conv_clamp=256)
    ws = np.asarray(g.mapping(np.random.RandomState(0).randn(8, g.config.z_dim).astype(np.float32)))
    target = np.random.RandomState(1).uniform(-1, 1, (1, g.resolution, g.resolution, 3)).astype(np.float32)
    np.savez(out / "inputs.npz", ws=ws, target=target)
    commands = [{"cmd": "setup"}, {"cmd": "parity"}, {"cmd": "time", "work": "step", "n": 2}]  # compiled once
    stdout = run("vs_official.py", "--worker=jax", f"--tmp={out}", "--official=unused", f"--resolution={g.resolution}",
                 cwd=out, stdin="".join(json.dumps(c) + "\n" for c in commands))
    replies = [json.loads(line) for line in stdout.splitlines()]
    assert len(replies) == 3 and not any("error" in r for r in replies), replies
    assert set(np.load(out / "lpips.npz").files) >= {"logits2", "logits8"}
    assert np.isfinite(np.load(out / "parity_ours.npz")["losses"]).all()


def skip_reason(name):
    if name == "device_run":
        return "needs an NVIDIA GPU; it runs parity_on_device.py and step.py, whose cases run here"
    if name == "vs_official" and official_checkout()[0] is None:
        return f"the official comparison: {official_checkout()[1]}"
    return None


def run_case(name, checkpoint, out):
    script, args, expected = CASES[name]
    if name == "vs_official_ours":
        return our_worker(out)
    if name == "editor_screenshot":  # a saved result to open
        from chunkygan_jax.checkpoints import load_generator
        from chunkygan_jax.inversion import invert

        result = invert(np.zeros((32, 32, 3), np.float32), load_generator(checkpoint), segments=2, steps=1,
                        settings=dict(lpips_net="alex", lpips_resolution="full"))
        result.settings["generator"] = str(checkpoint)
        result.save(out / "result")
    args = [a.format(ckpt=checkpoint, out=out, golden=GOLDEN, official=official_checkout()[0], root=ROOT)
            for a in args]
    stdout = run(script, *args, cwd=out)
    assert expected in stdout, stdout[-2000:]


@pytest.fixture(scope="module")
def started(request, tiny_checkpoint, tmp_path_factory):
    """Every selected case that can run here, started at once and run two at a time: XLA compiles on one
    core per process, and compiling is most of each case."""
    test = "test_bench_script_runs_at_its_smallest_setting"
    names = [item.callspec.params["name"] for item in request.session.items
             if getattr(item, "originalname", None) == test and skip_reason(item.callspec.params["name"]) is None]
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        yield {name: pool.submit(run_case, name, tiny_checkpoint, tmp_path_factory.mktemp(name)) for name in names}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bench_script_runs_at_its_smallest_setting(name, started):
    reason = skip_reason(name)
    if reason:
        pytest.skip(reason)
    started[name].result()  # the case's own assertion error, if it failed
