"""Directions of one's own: a direction fitted to labelled samples recovers a toy attribute defined from
the generator itself (a known direction's projection: held-out accuracy and the cosine to the truth;
the brightness of the top third of the image: moving along the direction raises it on fresh samples),
strength 1 is one standard deviation, the files are ordinary and usable by resolve_direction, bad
labels get one clear line; and the StyleSpace channels ranked for a region do act inside it."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chunkygan_jax import demo, editing
from chunkygan_jax.editing import StyleEdit, labelled
from chunkygan_jax.editing.render import render_segments
from chunkygan_jax.errors import ConfigError
from chunkygan_jax.generators.stylegan2 import sample_ws
from chunkygan_jax.results import InversionResult, save_result

ROOT = Path(__file__).resolve().parents[1]


def run_tool(name, *args):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(ROOT / "bin" / name), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def dcgan(demo_cache):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHUNKYGAN_CACHE", str(demo_cache))
        yield demo.load_demo_generator()


def unit(v):
    v = np.asarray(v, np.float64).reshape(-1)
    return v / np.linalg.norm(v)


# ------------------------------------------------------------------------------------------ the fit
def test_projection_attribute_is_recovered_in_z(dcgan):
    seeds = np.arange(5000, 5200)
    codes = np.stack([labelled.sample_code(dcgan, s) for s in seeds])
    u = unit(np.random.RandomState(3).randn(codes.shape[1]))
    y = (codes @ u > 0).astype(int)
    found = labelled.direction_from_labels(dcgan, seeds, y, name="toy", components=0)  # the full space
    assert found.record["accuracy"] >= 0.75 and found.record["folds"] == 5 and found.record["components"] == 0
    assert unit(found.direction) @ u > 0.75  # a random direction of 100-d z: |cos| ~ 0.1
    fresh = dcgan.sample_codes(2000, 77)
    assert np.mean((fresh @ unit(found.direction) > 0) == (fresh @ u > 0)) > 0.75
    # strength 1 = one standard deviation of the generator's samples along the direction
    assert abs(np.std(fresh @ unit(found.direction)) - np.linalg.norm(found.direction)) < 0.06
    assert found.record["seeds"] == seeds.tolist() and found.record["labels"] == 200


def test_brightness_attribute_moves_fresh_samples(dcgan):
    """The issue's criterion on pixels: label by the top third's brightness; +2 brightens fresh samples."""
    codes = dcgan.sample_codes(120, 11)
    top = lambda z: np.asarray(render_segments(dcgan, z, "z"))[:, : dcgan.resolution // 3].mean(axis=(1, 2, 3))
    value = top(codes)
    y = (value > np.median(value)).astype(int)
    found = labelled.fit_direction(dcgan, codes, y)
    assert found.record["accuracy"] >= 0.6  # chance is 0.5; samples near the median are ambiguous
    held = dcgan.sample_codes(60, 12)
    assert np.mean(top(held + 2 * found.direction) > top(held)) >= 0.95
    assert np.mean(top(held - 2 * found.direction) < top(held)) >= 0.95


def test_twenty_labels_of_a_pixel_property(dcgan):
    """The issue's setting: 20 samples of the demo generator labelled by a property computed here from
    pixels (the top third's brightness): of 40 samples shown, the 10 brightest 1 and the 10 darkest 0, the
    middle skipped (the panel's "skip"). In 16 such sets of samples, the fit in the span of the first 20
    principal directions (the default) against the full z: held-out accuracy, accuracy on fresh clear
    cases (the brightest and darkest quarter of 400 fresh samples, cut at the pool's median along the
    normal), and +2 along it brightens held-out samples."""
    r = dcgan.resolution
    top = lambda z: np.asarray(render_segments(dcgan, z, "z"))[:, : r // 3].mean(axis=(1, 2, 3))
    pool = dcgan.sample_codes(400, 555)
    order = np.argsort(top(pool))
    clear, is_light = np.r_[order[:100], order[-100:]], np.arange(200) >= 100
    shown = np.stack([labelled.sample_code(dcgan, seed) for s in range(16) for seed in range(100 * s, 100 * s + 40)])
    brightness = top(shown).reshape(16, 40)
    assert labelled.default_components(dcgan) == 20
    got = {0: [], None: []}  # the full z; the default
    for s in range(16):
        ranked = np.argsort(brightness[s])
        x, y = shown[40 * s + np.r_[ranked[:10], ranked[-10:]]], np.repeat([0, 1], 10)
        for k, rows in got.items():
            found = labelled.fit_direction(dcgan, x, y, components=k)
            score = pool @ unit(found.direction)
            rows.append((found.record["accuracy"], np.mean((score[clear] > np.median(score)) == is_light),
                         found.direction))
    full, prior = ([np.asarray([row[i] for row in got[k]]) for i in range(3)] for k in got)
    print(f"held-out: {full[0].mean():.3f} full, {prior[0].mean():.3f} prior; fresh: {full[1].mean():.3f}, "
          f"{prior[1].mean():.3f}; prior sets >= 0.8: {(prior[0] >= 0.8).sum()}")
    # measured: held-out 0.816 (0.650 in the full z; 10 of the 16 sets reach 0.8), fresh 0.809 (0.697)
    assert prior[0].mean() >= 0.75 and prior[0].mean() >= full[0].mean() + 0.06
    assert prior[1].mean() >= 0.78 and prior[1].mean() >= full[1].mean() + 0.08
    x, y = shown[:20], np.arange(20) % 2  # the held-out accuracy does not depend on the labels' order
    perm = np.random.RandomState(0).permutation(20)
    assert (labelled.fit_direction(dcgan, x[perm], y[perm]).record["accuracy"]
            == labelled.fit_direction(dcgan, x, y).record["accuracy"])
    held = pool[:20]  # not among the labelled samples; every fitted direction brightens their top third
    moved = top((held[None] + 2 * prior[2][:, None]).reshape(-1, held.shape[1])).reshape(16, 20)
    assert (moved > top(held)).mean(axis=1).min() >= 0.9


def test_panel_seeds_spread_over_the_principal_span(dcgan):
    """The panel's samples: distinct seeds, the same on every call, each of its block of 400, spread wider
    over the first 10 principal directions than the block's first 40 seeds (which the panel would show
    were it i.i.d.)."""
    seeds = labelled.panel_seeds(dcgan, 0, 80)
    assert len(set(seeds)) == 80 and labelled.panel_seeds(dcgan, 38, 4) == seeds[38:42]
    assert all(s // 400 == i // 40 for i, s in enumerate(seeds))
    basis = labelled.prior_basis(dcgan, 10)
    coords = lambda ss: np.stack([labelled.sample_code(dcgan, s) for s in ss]) @ basis
    assert np.mean(coords(seeds[:40]) ** 2) > 1.4 * np.mean(coords(range(40)) ** 2)  # measured: 1.66 times
    for start, count in ((-1, 2), (0, 1001), (1.5, 2)):
        with pytest.raises(ConfigError, match="panel positions"):
            labelled.panel_seeds(dcgan, start, count)


def test_stylegan2_fit_in_w_with_a_layer_range(tiny_generator):
    g = tiny_generator
    seeds = np.arange(300)
    codes = np.stack([labelled.sample_code(g, s) for s in seeds])
    assert codes.shape == (300, g.w_dim)
    np.testing.assert_allclose(codes[7], sample_ws(g, 1, 7)[0, 0])  # seed k = the generator's sample k
    u = unit(np.random.RandomState(0).randn(g.w_dim))
    y = (codes @ u > np.median(codes @ u)).astype(int)
    found = labelled.direction_from_labels(g, seeds, y, layers="0:3")  # in W the default is the full space
    d = found.direction
    assert d.shape == (g.num_ws, g.w_dim) and not d[3:].any() and np.allclose(d[:3], d[0])
    assert found.record["layers"] == [0, 3] and found.record["space"] == "w" and found.record["components"] == 0
    spanned = labelled.direction_from_labels(g, seeds, y, components=8)  # in the span of pca:0..7 of W
    basis = labelled.prior_basis(g, 8)
    w = unit(spanned.direction[0])
    assert spanned.record["components"] == 8 and np.linalg.norm(basis.T @ w) == pytest.approx(1, abs=1e-5)
    assert np.linalg.norm(basis.T @ unit(d[0])) < 0.9  # the full fit leaves the span
    assert found.record["accuracy"] >= 0.8 and unit(d[0]) @ u > 0.8
    fresh = labelled.fit_codes(g, sample_ws(g, 2000, 5))
    assert abs(np.std(fresh @ unit(d[0])) / np.linalg.norm(d[0]) - 1) < 0.1


def test_labels_are_checked(tmp_path, tiny_generator):
    def bad(data, match):
        path = tmp_path / "labels.json"
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        with pytest.raises(ConfigError, match=match):
            labelled.read_labels(path)

    bad("[[1, 1], ", "not a JSON labels file")
    bad({"labels": [[1, 1]], "extra": 1}, "unknown keys")
    bad([[1, 2]], "a label is 1")
    bad([[-1, 1]], "a seed is an integer")
    bad([[1.5, 1]], "a seed is an integer")
    bad([[1, 1], [1, 0]], "seed 1 is labelled more than once")
    bad([1, 2], "expected \\[seed, label\\]")
    seeds, labels, name = labelled.parse_labels({"name": "smile", "labels": [{"seed": 4, "label": True}, [9, 0]]})
    assert seeds.tolist() == [4, 9] and labels.tolist() == [1, 0] and name == "smile"
    with pytest.raises(ConfigError, match="too few labels of a class: 3 with"):
        labelled.direction_from_labels(tiny_generator, range(10), [1, 1, 1] + [0] * 7)
    with pytest.raises(ConfigError, match="layer range 0:99"):
        labelled.direction_from_labels(tiny_generator, range(10), [1, 0] * 5, layers="0:99")


# ------------------------------------------------------------------------------------------ files and the tool
def test_bin_directions_from_labels(tmp_path, tiny_generator, tiny_checkpoint):
    g = tiny_generator
    codes = np.stack([labelled.sample_code(g, s) for s in range(40)])
    u = unit(np.random.RandomState(1).randn(g.w_dim))
    y = codes @ u > np.median(codes @ u)
    labels = tmp_path / "toy.json"
    labels.write_text(json.dumps({"name": "toy", "labels": [[s, bool(v)] for s, v in enumerate(y)]}))
    out = tmp_path / "dirs" / "toy.npy"
    proc = run_tool("directions", f"--generator={tiny_checkpoint}", f"--from_labels={labels}", f"--output={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "held-out accuracy" in proc.stdout
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["name"] == "toy" and record["labels"] == 40 and record["kind"] == "labelled direction"
    assert record["generator_fingerprint"] == editing.labelled.generator_fingerprint(g)
    d = editing.resolve_direction(str(out), g)  # an ordinary direction file
    direct = labelled.direction_from_labels(g, range(40), y.astype(int))
    np.testing.assert_allclose(d, direct.direction, atol=1e-5)
    assert abs(record["accuracy"] - direct.record["accuracy"]) < 1e-9
    preview = np.asarray(Image.open(out.with_suffix(".png")))
    assert preview.shape[1] > 7 * g.resolution  # seven strengths across
    again = run_tool("directions", f"--generator={tiny_checkpoint}", f"--from_labels={labels}", f"--output={out}")
    assert again.returncode == 2 and "--overwrite" in again.stderr.strip().splitlines()[-1]
    labels.write_text(json.dumps([[s, 1] for s in range(10)] + [[99, 0]]))
    few = run_tool("directions", f"--generator={tiny_checkpoint}", f"--from_labels={labels}",
                   f"--output={tmp_path / 'few.npy'}")
    assert few.returncode == 2 and "too few labels of a class" in few.stderr.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------ localized channels
@pytest.fixture(scope="module")
def sample_result(tiny_generator):
    """One sample of the tiny generator as a one-segment result (the StyleSpace paper's setting)."""
    g = tiny_generator
    ws = sample_ws(g, 1, 3)[:, :1]
    masks = np.ones((1, g.resolution, g.resolution), np.float32)
    image = editing.render(g, {"codes": ws}, masks)
    return InversionResult(target=image, composite=image, segment_images=image[None], masks=masks,
                           latents={"codes": ws}, loss_history=np.zeros(1), final_losses={},
                           settings={"generator": "unused"})


def change_ratio(result, g, region, layer, channel):
    """Measured by an actual edit: mean squared change per pixel inside over outside."""
    edited = editing.edit_result(result, g, [StyleEdit(layer, channel, 1.0)])
    e = ((edited.composite - result.composite) ** 2).sum(-1)
    return (e * region).sum() / region.sum() / ((e * (1 - region)).sum() / (1 - region).sum())


def test_top_channel_acts_inside_the_region(tiny_generator, sample_result):
    g = tiny_generator
    region = np.zeros((g.resolution, g.resolution), np.float32)
    region[:12, :12] = 1  # the top-left 14% of the image
    found = editing.localized_channels(sample_result, g, region, top=3)
    assert [c["locality"] for c in found] == sorted((c["locality"] for c in found), reverse=True)
    best = found[0]
    measured = change_ratio(sample_result, g, region, best["layer"], best["channel"])
    assert measured > 4.0 and abs(measured / best["ratio"] - 1) < 0.25  # the derivative predicts the edit
    rng = np.random.RandomState(0)
    names = [k for k in g.config.layer_names() if not k.endswith(".torgb")]
    styles = editing.to_styles(g, sample_result.latents["codes"])
    randoms = [change_ratio(sample_result, g, region, k, rng.randint(styles[k].shape[1])) for k in rng.choice(names, 12)]
    assert max(randoms) < 4.0


def test_localized_listing_tool_and_refusals(tmp_path, tiny_generator, tiny_checkpoint, sample_result, dcgan):
    result = dataclasses.replace(sample_result, settings={"generator": str(tiny_checkpoint)})
    save_result(result, tmp_path / "result")
    out = tmp_path / "channels.json"
    with pytest.raises(ConfigError, match="cover some of the image"):  # segment 0's mask is the whole image
        editing.localized_channels(sample_result, tiny_generator, 0)
    mask = np.zeros((tiny_generator.resolution,) * 2, np.uint8)
    mask[:12, :12] = 255
    Image.fromarray(mask).save(tmp_path / "corner.png")
    proc = run_tool("directions", f"--localized={tmp_path / 'result'}", f"--region={tmp_path / 'corner.png'}",
                    "--top=4", f"--output={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    listed = json.loads(out.read_text())["channels"]
    region = np.zeros_like(mask, np.float32)
    region[:12, :12] = 1
    assert listed == editing.localized_channels(sample_result, tiny_generator, region, top=4)
    assert f"| {listed[0]['layer']} | {listed[0]['channel']} |" in proc.stdout
    z_result = dataclasses.replace(sample_result, latents={"codes": dcgan.sample_codes(1, 0)},
                                   masks=np.ones((1, 64, 64), np.float32))
    with pytest.raises(ConfigError, match="StyleSpace"):
        editing.localized_channels(z_result, dcgan, 0)
