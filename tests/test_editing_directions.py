"""Editing out of the box, on the demo DCGAN (z space) and a StyleGAN2 (the tiny golden generator): the
generator's own principal directions (pca:K; strength 1 = one standard deviation, measured), cached per
generator; on a quickstart-like result strength 0 reproduces the projection, strength 3 changes it
visibly, a region edit keeps every pixel outside the region, --sweep writes the strip, bin/directions
writes files, a record and a preview; layered local edits, Poisson and hole filling in z space; clear
errors for what a generator cannot do."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from chunkygan_jax import demo, editing, io
from chunkygan_jax.editing import DirectionEdit, SavedEdit, StyleEdit, principal
from chunkygan_jax.errors import ConfigError
from chunkygan_jax.inversion import Monitor, invert
from chunkygan_jax.report import write_report

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = 600  # PCA samples in these tests (real use: 20,000 W samples, 10,000 z samples)
STEPS = 2  # region projection steps; every region projection of one generator shares its compiled projector
FAST = dict(lpips_net="alex", lpips_resolution="full")


@pytest.fixture(scope="module")
def cache(demo_cache):
    """Every test here, and the tools they start, use one cache: the demo generator and the directions."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHUNKYGAN_CACHE", str(demo_cache))
        yield demo_cache


@pytest.fixture(scope="module", params=["demo", "stylegan2"])
def case(request, cache, tmp_path_factory):
    """(generator, --generator value, the report folder of a quickstart-like inversion of examples/face.png)."""
    if request.param == "demo":
        gen, arg, segments = demo.load_demo_generator(), "demo", 8
    else:
        gen, segments = request.getfixturevalue("tiny_generator"), 4
        arg = str(request.getfixturevalue("tiny_checkpoint"))
    face = io.load_image(ROOT / "examples" / "face.png", gen.resolution)
    result = invert(face, gen, segments=segments, steps=3, settings=FAST, monitor=Monitor(every=0))
    result.settings["generator"] = arg  # as bin/invert records it
    out = tmp_path_factory.mktemp(request.param) / "face"
    write_report(result, out)
    return gen, arg, out


def png(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def run_tool(name, *args):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(ROOT / "bin" / name), *args], capture_output=True, text=True,
                          env=env, timeout=300)


def box(r, lo, hi):
    m = np.zeros((r, r), np.float32)
    m[lo:hi, lo:hi] = 1.0
    return m


# ------------------------------------------------------------------------------------------ directions
def test_principal_components_exact_and_randomized_agree():
    rng = np.random.RandomState(0)
    axes = np.linalg.qr(rng.randn(300, 300))[0].T  # orthonormal rows
    scales = np.array([5.0, 3.0, 2.0] + [0.3] * 297)
    x = (rng.randn(1500, 300) * scales) @ axes + 7.0
    exact = principal.principal_components(x, 3, exact=True)
    randomized = principal.principal_components(x, 3, exact=False)
    for mean, found, var, total in (exact, randomized):
        assert np.all(np.abs(np.sum(found * axes[:3], axis=1)) > 0.99)  # the true axes, up to sampling
        np.testing.assert_allclose(np.sqrt(var), scales[:3], rtol=0.08)
        assert abs(total - np.sum(scales ** 2)) / total < 0.05 and np.abs(mean - x.mean(0)).max() < 1e-4
        assert np.all(found[np.arange(3), np.abs(found).argmax(1)] > 0)  # the sign rule
    np.testing.assert_allclose(np.sum(exact[1] * randomized[1], axis=1), 1.0, atol=1e-4)  # the same axes
    np.testing.assert_allclose(randomized[2], exact[2], rtol=1e-4)


def test_strength_one_is_one_standard_deviation(case):
    """W: held-out samples have std_k along axis k. z: moving by direction k shifts the k-th PCA
    coordinate of held-out samples' features by about one of its standard deviations."""
    gen, _, _ = case
    found = editing.principal_directions(gen, 2, samples=SAMPLES)
    codes, data = principal._sample(gen, principal.pca_space(gen), 1500, 99, False)  # other samples
    if found.record["space"] == "w":
        std = np.asarray(found.record["std"])
        held_out = np.std(codes @ (found.directions / std[:, None]).T, axis=0)
        np.testing.assert_allclose(held_out, std, rtol=0.1)
    else:
        mean, axes, var, _ = principal.principal_components(data, 2)
        z = codes[:300]
        base = np.asarray(principal._features(gen, jnp.asarray(z))) @ axes.T
        for k in range(2):
            moved = np.asarray(principal._features(gen, jnp.asarray(z + found.directions[k]))) @ axes.T
            shift = np.abs((moved - base).mean(axis=0)) / np.sqrt(var)
            assert 0.75 < shift[k] < 1.35 and shift[1 - k] < 0.3, (k, shift)
    assert found.record["generator_fingerprint"] and len(found.record["explained_variance"]) == 2
    assert found.record["explained_variance"][0] >= found.record["explained_variance"][1] > 0


def test_directions_are_cached_per_generator(case, monkeypatch):
    gen, _, _ = case
    first = editing.principal_directions(gen, 3, samples=SAMPLES)
    monkeypatch.setattr(principal, "compute_directions", lambda *a, **k: pytest.fail("not cached"))
    again = editing.principal_directions(gen, 3, samples=SAMPLES)
    np.testing.assert_array_equal(again.directions, first.directions)
    d = editing.resolve_direction("pca:2", gen, samples=SAMPLES)
    np.testing.assert_array_equal(d, editing.load_direction(first.directions[2], gen))
    assert d.shape == editing.direction_shape(gen)
    entries = list((Path(os.environ["CHUNKYGAN_CACHE"]) / "directions").iterdir())
    assert any(e.name.startswith(first.record["generator_fingerprint"][:16]) for e in entries)
    with pytest.raises(ConfigError, match="pca:0 .. pca:"):
        editing.resolve_direction("pca:100000", gen, samples=SAMPLES)
    monkeypatch.undo()  # a damaged entry is recomputed, with a warning
    entry = next(e for e in entries if e.name.startswith(first.record["generator_fingerprint"][:16])
                 and f"-n{SAMPLES}-" in e.name)
    (entry / "directions.json").write_text("{not json")
    with pytest.warns(UserWarning, match="recomputing"):
        again = editing.principal_directions(gen, 3, samples=SAMPLES)
    np.testing.assert_allclose(again.directions, first.directions, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ the quickstart
def test_pca_edits_of_a_quickstart_result(case, tmp_path):
    gen, _, out = case
    projection = png(out / "projection.png")
    kw = dict(direction="pca:0", pca_samples=SAMPLES)
    editing.edit_saved_result(out / "result", tmp_path / "zero.png", SavedEdit(strength=0, **kw))
    assert np.abs(png(tmp_path / "zero.png") - projection).max() <= 1  # the projection, up to rounding
    editing.edit_saved_result(out / "result", tmp_path / "three.png", SavedEdit(strength=3, **kw))
    change = np.abs(png(tmp_path / "three.png") - projection).mean()
    print(f"{type(gen).__name__}: mean |change| at strength 3: {change:.1f} levels")
    assert change > 8.0  # a visible edit (observed: demo ~25, tiny StyleGAN2 ~20)
    assert not (tmp_path / "three_compare.png").exists()  # only restricted edits get a side-by-side
    # an edit of some segments writes the side-by-side: projection | edit | changed pixels
    editing.edit_saved_result(out / "result", tmp_path / "seg.png", SavedEdit(strength=3, segments="0,1", **kw))
    compare = png(tmp_path / "seg_compare.png")
    tile = gen.resolution * -(-128 // gen.resolution)
    assert compare.shape[1] == 3 * tile + 4 and compare.shape[0] > tile


def test_region_edit_keeps_every_pixel_outside(case, tmp_path):
    gen, _, out = case
    r = gen.resolution
    region = box(r, r // 4, r // 2)
    Image.fromarray((region * 255).astype(np.uint8)).save(tmp_path / "region.png")
    edit = SavedEdit(direction="pca:1", strength=3, pca_samples=SAMPLES, region=tmp_path / "region.png",
                     projection={"steps": STEPS})
    editing.edit_saved_result(out / "result", tmp_path / "local.png", edit)
    photo, edited = io.to_uint8(io.load_image(ROOT / "examples" / "face.png", r)), png(tmp_path / "local.png")
    np.testing.assert_array_equal(edited[region == 0], photo[region == 0])  # every pixel outside
    assert np.abs(edited - photo)[region == 1].mean() > 5
    assert png(tmp_path / "local_compare.png").shape[1] == 3 * r * -(-128 // r) + 4


def test_sweep_from_the_command_line(case, tmp_path):
    gen, _, out = case
    r = gen.resolution
    sweep = run_tool("edit", f"--latents={out / 'result'}", "--direction=pca:0", "--sweep=-3:3:7",
                     f"--pca_samples={SAMPLES}", f"--output={tmp_path / 'sweep.png'}")
    assert sweep.returncode == 0, sweep.stderr
    strip = png(tmp_path / "sweep.png")
    f = -(-128 // r)  # tiles are enlarged by nearest neighbour to at least 128 px
    assert strip.shape == (16 + r * f, 7 * r * f + 6 * 2, 3)
    tiles = [strip[16:, j * (r * f + 2):j * (r * f + 2) + r * f][::f, ::f] for j in range(7)]
    assert np.abs(tiles[3] - png(out / "projection.png")).max() <= 1  # the middle one is strength 0
    assert np.abs(tiles[0] - tiles[6]).mean() > 8


def test_bin_directions(case, tmp_path):
    gen, arg, _ = case
    target = tmp_path / "dirs"
    args = [f"--output={target}", "--components=3", f"--samples={SAMPLES}"]
    if arg == "demo":  # the command line, with the default (demo) generator
        done = run_tool("directions", *args)
        assert done.returncode == 0, done.stderr
    else:
        editing.write_directions(gen, target, 3, samples=SAMPLES)
    record = json.loads((target / "directions.json").read_text())
    assert record["method"] == "ganspace" and len(record["explained_variance"]) == 3
    d1 = np.load(target / "direction_01.npy")
    np.testing.assert_array_equal(editing.load_direction(target / "direction_01.npy", gen),
                                  editing.resolve_direction("pca:1", gen, samples=SAMPLES))
    assert d1.shape == ((gen.w_dim,) if record["space"] == "w" else (gen.z_dim,))
    sheet = png(target / "preview.png")
    tile = gen.resolution * -(-128 // gen.resolution)
    assert sheet.shape[0] == 16 + 3 * tile + 2 * 2 and sheet.shape[1] > 7 * tile
    with pytest.raises(ConfigError, match="already exists; pass --overwrite"):
        editing.write_directions(gen, target, 2, samples=SAMPLES)
    editing.write_directions(gen, target, 2, samples=SAMPLES, overwrite=True)  # its own folder is replaced
    assert not (target / "direction_02.npy").exists()
    # a folder it did not write is refused (one line, exit status 2), and nothing in it is touched
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    if arg == "demo":
        bad = run_tool("directions", f"--output={tmp_path / 'mine'}", f"--samples={SAMPLES}")
        assert bad.returncode == 2 and "refusing" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    else:
        with pytest.raises(ConfigError, match="refusing"):
            editing.write_directions(gen, tmp_path / "mine", 2, samples=SAMPLES)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


# ------------------------------------------------------------------------------------------ z space
@pytest.fixture(scope="module")
def dcgan(cache):
    return demo.load_demo_generator()


def test_layered_local_edits_poisson_and_hole_filling_in_z(dcgan):
    face = io.load_image(ROOT / "examples" / "face.png", 64)
    d = editing.resolve_direction("pca:0", dcgan, samples=SAMPLES)
    first = editing.local_edit(face, dcgan, box(64, 8, 32), DirectionEdit(d, 3.0), steps=STEPS,
                               settings=FAST)
    np.testing.assert_array_equal(first.image[box(64, 8, 32) == 0], face[box(64, 8, 32) == 0])
    assert first.result.settings["space"] == "z" and first.result.latents["codes"].shape == (1, 100)
    d1 = editing.resolve_direction("pca:1", dcgan, samples=SAMPLES)
    second = editing.local_edit(first.image, dcgan, box(64, 28, 56), DirectionEdit(d1, -3.0), steps=STEPS,
                                blend="poisson", settings=FAST)
    from chunkygan_jax.blending import poisson_domain
    domain = np.asarray(poisson_domain(box(64, 28, 56)))
    np.testing.assert_array_equal(second.image[~domain], first.image[~domain])
    assert np.abs(second.image - first.image)[domain].max() > 0.05
    again = editing.reedit(first, dcgan, DirectionEdit(d, 0.0))  # the same projection, another strength
    np.testing.assert_array_equal(again.projection.latents["codes"], first.projection.latents["codes"])
    np.testing.assert_allclose(again.result.latents["codes"] + 3.0 * d, first.result.latents["codes"], atol=1e-5)
    hole = box(64, 30, 36)
    filled = editing.fill_holes(first, dcgan, first.image, hole, steps=STEPS, settings=FAST)
    np.testing.assert_array_equal(filled.image[hole == 0], first.image[hole == 0])
    assert np.abs(filled.result.latents["codes"] - first.result.latents["codes"]).max() < 0.5  # starts there


def test_what_z_space_cannot_do_fails_clearly(dcgan):
    latents = {"codes": dcgan.initial_codes("z", 2)}
    d = np.ones(100, np.float32)
    out = editing.apply_direction(latents, dcgan, d, 2.0, None, [1])
    np.testing.assert_array_equal(out["codes"][0], latents["codes"][0])
    np.testing.assert_allclose(out["codes"][1], latents["codes"][1] + 2.0, atol=1e-6)
    for call, msg in ((lambda: editing.apply_direction(latents, dcgan, d, 1.0, "0:4"), "layer ranges apply"),
                      (lambda: editing.apply_direction(latents, dcgan, np.ones(512, np.float32)), r"\(100,\) or \(1, 100\)"),
                      (lambda: editing.apply_style_edits(latents, dcgan, [StyleEdit(0, 0, 1.0)]), "StyleGAN2"),
                      (lambda: editing.latent_space(dcgan, np.zeros((2, 1, 100))), r"Z \[n, 100\]"),
                      (lambda: editing.parse_sweep("-3:3"), "lo:hi:count"),
                      (lambda: editing.parse_sweep("-3:3:1"), "count")):
        with pytest.raises(ConfigError, match=msg):
            call()
