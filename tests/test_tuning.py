"""Pivotal tuning (tuning.py) and its weight deltas (deltas.py): the claims docs/tuning.md makes."""

import io as _io
import json
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chunkygan_jax import deltas
from chunkygan_jax.editing import DirectionEdit, edit_result
from chunkygan_jax.errors import ChunkyGANError, ConfigError
from chunkygan_jax.inversion import invert_batch
from chunkygan_jax.results import load_result
from chunkygan_jax.tuning import TuningSettings, as_tuning, locality_pool, tune_results

FAST = dict(segments=2, steps=8, lpips_net="alex", lpips_resolution="full")
TUNE = TuningSettings(steps=6, lr=0.05, rank=2)


@pytest.fixture(scope="module")
def targets(tiny_generator):
    """Two images the tiny generator can nearly but not exactly draw (random codes plus pixel noise)."""
    ws = jnp.asarray(tiny_generator.sample_codes(2, seed=5))
    imgs = np.asarray(tiny_generator.synthesis(ws))
    noise = np.random.RandomState(0).uniform(-0.3, 0.3, imgs.shape).astype(np.float32)
    return [np.clip(im + n, -1, 1) for im, n in zip(imgs, noise)]


@pytest.fixture(scope="module")
def inverted(tiny_generator, targets):
    return invert_batch(targets, tiny_generator, settings=FAST)


@pytest.fixture(scope="module")
def tuned(tiny_generator, inverted):
    return tune_results(inverted, tiny_generator, TUNE)


def test_a_fresh_delta_changes_nothing(tiny_generator):
    delta = deltas.init_delta(tiny_generator, rank=2)
    g = deltas.apply_delta(tiny_generator, delta)
    ws = jnp.asarray(tiny_generator.sample_codes(1, seed=1))
    assert np.array_equal(np.asarray(g.synthesis(ws)), np.asarray(tiny_generator.synthesis(ws)))
    assert set(delta["low_rank"]) | set(delta["full"]) == {k.replace("/", ".") for k in tiny_generator.drawing_params()}
    assert not any("mapping" in k or "noise_const" in k for k in list(delta["low_rank"]) + list(delta["full"]))


def test_tuning_lowers_lpips_and_keeps_the_mapping(tiny_generator, inverted, tuned):
    for before, after in zip(inverted, tuned):
        rec = after.tuning["record"]
        assert rec["lpips_before"] == pytest.approx(before.final_losses["lpips"], rel=1e-4)
        assert rec["lpips_after"] < 0.9 * rec["lpips_before"], rec
        assert after.final_losses["lpips"] == rec["lpips_after"]
        g = deltas.tuned_generator(tiny_generator, after.tuning)
        z = jnp.asarray(np.random.RandomState(3).randn(2, tiny_generator.config.z_dim), jnp.float32)
        assert np.array_equal(np.asarray(g.mapping(z)), np.asarray(tiny_generator.mapping(z)))


def test_batched_tuning_equals_tuning_alone(tiny_generator, inverted, tuned):
    """Per-image deltas, a loss summed over images, elementwise Adam and per-image locality keys: an image
    tunes the same alone as in a batch (up to float summation order, which Adam can amplify)."""
    alone = tune_results(inverted[1:], tiny_generator, TUNE)[0]
    # Adam can turn a near-zero gradient's rounding into a full step: bounded relative to the change
    diff, moved = np.abs(alone.composite - tuned[1].composite), np.abs(tuned[1].composite - inverted[1].composite)
    assert np.median(diff) <= 0.02 * np.median(moved) and diff.max() <= 0.05 * moved.max()
    assert alone.tuning["record"]["lpips_after"] == pytest.approx(tuned[1].tuning["record"]["lpips_after"], abs=1e-3)


def test_tuned_result_reloads_bit_exactly_and_renders_the_same(tiny_generator, tuned, tmp_path):
    path = tuned[0].save(tmp_path / "r")
    back = load_result(path)
    a = jax.tree_util.tree_leaves(tuned[0].tuning["delta"])
    b = jax.tree_util.tree_leaves(back.tuning["delta"])
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert np.array_equal(back.composite, tuned[0].composite)
    assert back.tuning["record"]["base_fingerprint"] == tuned[0].tuning["record"]["base_fingerprint"]
    assert json.loads((path / "result.json").read_text())["tuning"]["delta_bytes"] > 0
    # Rendering the reloaded result (no edit) gives the projection it stores: the delta is applied.
    again = edit_result(back, tiny_generator, [])
    np.testing.assert_allclose(again.composite, back.composite, atol=1e-4)
    untuned = edit_result(back.__class__(**{**back.__dict__, "tuning": None}), tiny_generator, [])
    assert np.abs(untuned.composite - back.composite).max() > 1e-3  # and it matters


def test_another_generator_is_refused(small_generator, tiny_generator, tuned, tmp_path):
    back = load_result(tuned[0].save(tmp_path / "r"))
    other = tiny_generator.replace(params=jax.tree_util.tree_map(lambda x: x * 1.0001, tiny_generator.params))
    with pytest.raises(ConfigError, match="tuned on another generator"):
        edit_result(back, other, [])
    with pytest.raises(ConfigError, match="tuned on another generator"):
        deltas.tuned_generator(small_generator, back.tuning)


def test_the_stored_delta_is_small(tiny_generator, tuned):
    """At most 5% of the generator's parameter bytes, here and for a 1024 px StyleGAN2 (from shapes)."""
    rec = tuned[0].tuning["record"]
    assert rec["delta_bytes"] == deltas.delta_bytes(tuned[0].tuning["delta"], "float16")
    from chunkygan_jax.generators.stylegan2 import StyleGAN2, ffhq_config

    big = StyleGAN2(ffhq_config(1024), jax.eval_shape(lambda: _shapes_only(ffhq_config(1024))))
    default = TuningSettings()
    shapes = deltas._expected_shapes(big, default.rank)
    stored = sum(int(np.prod(s)) for s in shapes.values()) * np.dtype(default.store).itemsize
    total = sum(int(np.prod(x.shape)) * 4 for x in jax.tree_util.tree_leaves(big.params))
    assert stored <= 0.05 * total, (stored, total)


def _shapes_only(config):
    from chunkygan_jax.generators.stylegan2 import random_params
    return jax.tree_util.tree_map(jnp.asarray, random_params(0, config))


def test_locality_limits_the_change_at_nearby_codes(tiny_generator, inverted):
    """Against a run without it, the locality term keeps images at codes near the pivots closer to the
    original generator's."""
    run = dict(steps=20, lr=0.02, rank=2)
    free = tune_results(inverted[:1], tiny_generator, TuningSettings(**run, locality_weight=0.0))[0]
    kept = tune_results(inverted[:1], tiny_generator, TuningSettings(**run, locality_weight=1.0))[0]
    pool, spread = locality_pool(tiny_generator, "w+", num=16, seed=7)
    pivot = np.asarray(inverted[0].latents["codes"][0])
    d = np.asarray(pool) - pivot
    near = pivot + kept.tuning["record"]["settings"]["locality_radius"] * spread * d / np.linalg.norm(d.reshape(16, -1), axis=1)[:, None, None]
    base = np.asarray(tiny_generator.synthesis(jnp.asarray(near)))
    change = lambda r: np.abs(np.asarray(deltas.tuned_generator(tiny_generator, r.tuning)
                                         .synthesis(jnp.asarray(near))) - base).mean()
    assert change(kept) < 0.7 * change(free), (change(kept), change(free))  # measured: 0.41x


def test_early_stop_at_an_lpips_threshold(tiny_generator, inverted):
    before = inverted[0].final_losses["lpips"]
    r = tune_results(inverted[:1], tiny_generator, TuningSettings(steps=30, lr=0.05, rank=2,
                                                                  lpips_threshold=0.97 * before))[0]
    rec = r.tuning["record"]
    assert rec["steps_run"] < 30
    assert rec["lpips_after"] <= 0.97 * before + 1e-3  # float16 storage may move it a hair


def test_segment_limited_edit_stays_in_its_segment(tiny_generator, tuned):
    """On a tuned result, an edit of segment 0 changes segment 0's image only, so a pixel changes by at
    most its weight in segment 0's mask times that image's change (nothing outside the segment moves)."""
    r = tuned[0]
    direction = np.random.RandomState(0).randn(tiny_generator.w_dim).astype(np.float32)
    plain = edit_result(r, tiny_generator, [])  # rendered like the edit (the result's own was vmapped)
    edited = edit_result(r, tiny_generator, [DirectionEdit(direction, 3.0, segments=[0])])
    assert np.array_equal(edited.segment_images[1:], plain.segment_images[1:])
    moved = np.abs(edited.segment_images[0] - plain.segment_images[0])
    assert moved.max() > 1e-2
    change = np.abs(edited.composite - plain.composite)
    assert np.all(change <= np.asarray(r.masks[0])[..., None] * moved + 1e-5)


def test_settings_are_checked():
    assert as_tuning(None) is None and as_tuning(0) is None and as_tuning(False) is None
    assert as_tuning(7).steps == 7
    for bad in (dict(steps=0), dict(rank=-1), dict(lr=float("nan")), dict(lr=True), dict(store="int8"),
                dict(lpips_threshold=0.0), dict(locality_radius=-1.0)):
        with pytest.raises(ConfigError):
            TuningSettings(**bad).validate()
    with pytest.raises(ConfigError):
        as_tuning("many")


def test_hostile_delta_files_are_refused_before_reading(tuned, tmp_path):
    path = tuned[0].save(tmp_path / "r") / deltas.DELTA_FILE
    good = zipfile.ZipFile(path).namelist()
    name = next(n for n in good if n.startswith("full/"))

    def rewrite(dest, member, payload):
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(dest, "w") as out:
            for n in src.namelist():
                out.writestr(n, payload if n == member else src.read(n))
        return dest

    def header(descr, shape, payload=b""):
        buf = _io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
        return buf.getvalue() + payload

    # A header that declares 10^12 float16 values in a file of a few bytes: refused, nothing allocated.
    with pytest.raises(ChunkyGANError, match="declares"):
        deltas.load_delta(rewrite(tmp_path / "huge.npz", name, header("<f2", (10**6, 10**6), b"\0" * 8)))
    # Object arrays (pickles) are never read.
    with pytest.raises(ChunkyGANError, match="dtype"):
        deltas.load_delta(rewrite(tmp_path / "obj.npz", name, header("|O", (1,), b"x" * 8)))
    # Non-finite values.
    arr = np.load(path)[name[:-4]].copy()
    arr.flat[0] = np.inf
    buf = _io.BytesIO()
    np.lib.format.write_array(buf, arr)
    with pytest.raises(ChunkyGANError, match="non-finite"):
        deltas.load_delta(rewrite(tmp_path / "inf.npz", name, buf.getvalue()))
    # Not a zip at all.
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ChunkyGANError):
        deltas.load_delta(tmp_path / "junk.npz")


def test_the_editor_renders_a_tuned_result_with_its_delta(tiny_generator, tuned, tmp_path):
    from chunkygan_jax.editor.session import EditorSession

    session = EditorSession(tuned[0], tiny_generator, workdir=tmp_path)
    np.testing.assert_allclose(session.render(session.document), tuned[0].composite, atol=1e-4)
    assert session.edited_result().tuning is tuned[0].tuning  # an export stays tuned


SHARDED = r"""
import json, sys, numpy as np, jax
jax.config.update("jax_default_matmul_precision", "highest")
from chunkygan_jax.checkpoints import load_generator
from chunkygan_jax.results import load_result
from chunkygan_jax.sharding import data_mesh
from chunkygan_jax.tuning import TuningSettings, tune_results
g = load_generator(sys.argv[1])
inv = [load_result(p) for p in sys.argv[3:]]
mesh = data_mesh(jax.devices())
sharded = tune_results(inv, g, TuningSettings(**json.loads(sys.argv[2])), mesh=mesh)  # 3 images on 2 devices: padded
np.save(sys.argv[3] + ".out.npy", np.stack([r.composite for r in sharded]))
print(len(mesh.devices.flat))
"""


def test_tuning_sharded_over_devices_matches_one_device(tiny_checkpoint, tiny_generator, inverted, tuned, tmp_path):
    """The parent's inverted results, tuned on 2 simulated devices (the third image a repeat of the first,
    so that the batch is padded), against the parent's unsharded batch."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from chunkygan_jax.results import save_result

    dirs = [save_result(r, tmp_path / f"r{i}") for i, r in enumerate(inverted + inverted[:1])]
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(root),
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, "-c", SHARDED, str(tiny_checkpoint), json.dumps(TUNE.to_dict())]
                          + [str(d) for d in dirs], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[-1]) == 2, proc.stdout
    sharded = np.load(str(dirs[0]) + ".out.npy")
    expected = np.stack([tuned[0].composite, tuned[1].composite, tuned[0].composite])
    untuned = np.stack([inverted[0].composite, inverted[1].composite, inverted[0].composite])
    # Each image alone in exact arithmetic; float summation order differs between the programs, and Adam
    # turns a near-zero gradient's rounding into a full step, so the bound is relative to how far tuning
    # moved the images (a row mixed up with another would be off by its whole change).
    diff, moved = np.abs(sharded - expected), np.abs(expected - untuned)
    print(f"apart: median {np.median(diff):.2g}, largest {diff.max():.2g}; "
          f"moved by tuning: median {np.median(moved):.2g}, largest {moved.max():.2g}")
    assert np.median(diff) <= 0.02 * np.median(moved) and diff.max() <= 0.05 * moved.max()


def test_a_grey_target_is_compared_in_luminance(inverted, tuned):
    """With the inversion's grey_loss, the LPIPS tuning reports for a grey target is that of the
    composite's luminance: a colour composite is at distance 0 from its own luminance, whatever its
    colours, while against a colour target the colours count."""
    from chunkygan_jax.lpips import load_lpips
    from chunkygan_jax.masks.composite import LUMA
    from chunkygan_jax.tuning import _programs

    s = inverted[0].settings
    assert s["grey_loss"] is True
    progs = _programs(True, s["space"], s["noise_mode"], s["dtype"], s["lpips_resolution"], True)
    net = load_lpips(s["lpips_net"])
    colour = jnp.asarray(tuned[0].composite)[None]
    grey = jnp.repeat((colour @ jnp.asarray(LUMA))[..., None], 3, axis=-1)
    mix = jnp.eye(3) + jnp.outer(jnp.asarray([0.6, 0.3, -0.5]), jnp.asarray([LUMA[1], -LUMA[0], 0.0]))  # mix @ LUMA == LUMA
    grey_feats = progs["features"](net, grey)
    seen_grey = [float(progs["distance"](net, x, grey, grey_feats)[0]) for x in (colour, colour @ mix)]
    assert max(seen_grey) < 1e-4, seen_grey
    seen_colour = float(progs["distance"](net, colour @ mix, colour, progs["features"](net, colour))[0])
    assert seen_colour > 1e-3, seen_colour
