"""Editing: directions touch exactly their rows and segments, strength 0 reproduces the projection,
StyleSpace edits, local layered edits keep the outside exactly, hole filling starts from the edited code,
bin/edit chains two edits; bad directions, ranges, segments and S layers/channels give clear errors."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from chunkygan_jax import editing, io
from chunkygan_jax.blending import poisson_domain
from chunkygan_jax.editing import DirectionEdit, StyleEdit
from chunkygan_jax.errors import ChunkyGANError, ConfigError, ImageError
from chunkygan_jax.inversion import Monitor
from chunkygan_jax.inversion import invert
from chunkygan_jax.results import load_result

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(lpips_net="alex", lpips_resolution="full")
REGION_STEPS = 3  # every region projection below shares one compiled projector


@pytest.fixture(scope="module")
def g(tiny_generator):
    return tiny_generator


@pytest.fixture(scope="module")
def direction(g):
    return (0.5 * np.random.RandomState(11).randn(g.num_ws, g.w_dim)).astype(np.float32)


@pytest.fixture(scope="module")
def projection(g, golden_p1):
    """A two-segment W projection (the authors' tool's default space) of a two-code image."""
    ws = jnp.asarray(np.random.RandomState(5).randn(2, g.config.z_dim).astype(np.float32))
    imgs = np.asarray(g.synthesis(g.mapping(ws)))
    r = g.resolution
    left = np.zeros((r, r), np.float32)
    left[:, : r // 2] = 1.0
    target = np.clip(left[..., None] * imgs[0] + (1 - left[..., None]) * imgs[1], -1, 1)
    return invert(target, g, segments=2, steps=3, masks=np.stack([left, 1 - left]),
                  settings=dict(space="w", lambda_reg=0.0, **FAST), monitor=Monitor(every=0))


def random_wplus(g, n, seed=0):
    return {"codes": jnp.asarray(np.random.RandomState(seed).randn(n, g.num_ws, g.w_dim).astype(np.float32))}


# ------------------------------------------------------------------------------------------ rendering
def test_one_rendering_program_with_edits_as_offsets(g, projection, direction):
    """Every image drawn from codes goes through render.py's one jitted program: an edit folded into W
    and S offsets draws what the edited codes draw, and new codes, offsets or strengths compile nothing."""
    from chunkygan_jax.editing.render import _draw

    codes = projection.latents["codes"]  # W [2, 1, w_dim]
    style = StyleEdit("b8.conv0", 3, 2.0)
    edited = editing.apply_edits({"codes": codes}, g, [DirectionEdit(direction, 1.5), style])
    want = np.asarray(editing.render_segments(g, edited))
    zero = {"codes": jnp.zeros_like(codes)}
    w_offset = editing.apply_edits(zero, g, [DirectionEdit(direction, 1.5)])["codes"][0]
    s_offset = editing.apply_style_edits({"codes": {k: jnp.zeros((1, d), jnp.float32) for k, d in
                                                    g.config.style_dims().items()}}, g, [style])["codes"]
    got = np.asarray(editing.render_segments(g, codes, w_offset=w_offset, s_offset=s_offset))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(got - np.asarray(editing.render_segments(g, codes))).max() > 1e-2  # the edit shows
    compiled = _draw._cache_size()
    again = editing.render_segments(g, np.asarray(codes) + 0.5, w_offset=-w_offset, s_offset=s_offset)
    assert _draw._cache_size() == compiled and np.all(np.isfinite(np.asarray(again)))


# ------------------------------------------------------------------------------------------ directions
def test_strength_zero_reproduces_the_projection(g, projection, direction):
    out = editing.edit_result(projection, g, DirectionEdit(direction, 0.0, "0:4"))
    codes = np.asarray(projection.latents["codes"])
    np.testing.assert_array_equal(out.latents["codes"], np.broadcast_to(codes, (2, g.num_ws, g.w_dim)))
    same = editing.render(g, {"codes": editing.to_wplus(g, projection.latents["codes"])}, projection.masks)
    np.testing.assert_array_equal(out.composite, same)
    np.testing.assert_allclose(out.composite, projection.composite, atol=1e-5)
    np.testing.assert_array_equal(out.masks, projection.masks)
    assert out.settings["space"] == "w+" and out.settings["edits"][0]["layers"] == [0, 4]


def test_direction_touches_only_its_rows_and_segments(g, direction):
    latents = random_wplus(g, 3)
    before = np.asarray(latents["codes"])
    after = np.asarray(editing.apply_direction(latents, g, direction, 1.5, "2:5", [0, 2])["codes"])
    changed = np.zeros(before.shape, bool)
    changed[[0, 2], 2:5] = True
    np.testing.assert_array_equal(after[~changed], before[~changed])  # bit for bit
    np.testing.assert_allclose(after[changed], (before + 1.5 * direction[None])[changed], rtol=1e-6)
    # the same under jit with a traced strength; and (w_dim,) / (1, w_dim) directions repeat one row
    jitted = jax.jit(lambda lat, s: editing.apply_direction(lat, g, direction, s, (2, 5), [0, 2]))
    np.testing.assert_array_equal(np.asarray(jitted(latents, jnp.float32(1.5))["codes"]), after)
    row = direction[3]
    a = editing.apply_direction(latents, g, row, 1.0, "0:8", 1)["codes"]
    b = editing.apply_direction(latents, g, row[None].astype(np.float64), 1.0, None, "1")["codes"]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.asarray(a)[1] - before[1], np.broadcast_to(row, (8, g.w_dim)), atol=1e-5)


def test_w_codes_are_broadcast_and_the_segment_code_can_follow(g, direction):
    w = {"codes": jnp.asarray(np.random.RandomState(1).randn(2, 1, g.w_dim).astype(np.float32)),
         "segment_code": jnp.zeros((g.num_ws, g.w_dim))}
    out = editing.apply_direction(w, g, direction, 2.0, "1:3", "all", segment_code=True)
    assert out["codes"].shape == (2, g.num_ws, g.w_dim)
    np.testing.assert_array_equal(out["codes"][:, 3:], np.broadcast_to(w["codes"], (2, 5, g.w_dim)))
    xs = np.asarray(out["segment_code"])
    np.testing.assert_allclose(xs[1:3], 2.0 * direction[1:3], rtol=1e-6)
    assert not xs[:1].any() and not xs[3:].any()
    # the rule of every global edit (API, bin/edit, editor): X^S stays unless asked
    assert editing.apply_direction(w, g, direction, 2.0)["segment_code"] is w["segment_code"]
    kept = editing.apply_edits(w, g, [editing.DirectionEdit(direction, 2.0)])
    assert kept["segment_code"] is w["segment_code"]
    moved = np.asarray(kept["codes"]) - np.asarray(w["codes"])  # the image codes did move, on every row
    np.testing.assert_allclose(moved, np.broadcast_to(2.0 * direction, moved.shape), rtol=1e-5, atol=1e-5)


def test_masks_follow_the_segment_code_with_a_mask_source(g, projection, direction):
    class LeftRight:  # a stand-in segment generator: the split column depends on X^S
        def masks_for_code(self, code):
            col = jnp.arange(g.resolution, dtype=jnp.float32) - g.resolution / 2 - jnp.mean(code) * 40
            left = jax.nn.sigmoid(-col)[None, :].repeat(g.resolution, 0)
            return jnp.stack([left, 1 - left])

    result = dataclasses.replace(projection, latents=dict(
        projection.latents, segment_code=np.zeros((g.num_ws, g.w_dim), np.float32)))
    edit = DirectionEdit(np.ones((g.num_ws, g.w_dim), np.float32), 0.1, None, "all", segment_code=True)
    with pytest.raises(ConfigError, match="mask_source"):
        editing.edit_result(result, g, edit)
    moved = editing.edit_result(result, g, edit, mask_source=LeftRight())
    still = editing.edit_result(result, g, DirectionEdit(edit.direction, 0.1), mask_source=LeftRight())
    assert np.abs(moved.masks - still.masks).max() > 0.1
    np.testing.assert_allclose(moved.masks.sum(0), 1.0, atol=1e-6)


# ------------------------------------------------------------------------------------------ StyleSpace
def test_style_edits_by_name_and_index(g):
    latents = random_wplus(g, 2, seed=3)
    styles = g.styles_from_ws(latents["codes"])
    names = g.config.layer_names()
    edits = [StyleEdit("b8.conv0", 5, 2.0, [1]), StyleEdit(4, 7, -1.5)]  # index 4 = b8.torgb
    out = editing.apply_style_edits(latents, g, edits)["codes"]
    assert names[4] == "b8.torgb" and set(out) == set(names)
    for name in names:
        diff = np.asarray(out[name]) - np.asarray(styles[name])
        expect = np.zeros_like(diff)
        if name == "b8.conv0":
            expect[1, 5] = 2.0
        if name == "b8.torgb":
            expect[:, 7] = -1.5
        np.testing.assert_allclose(diff, expect, atol=1e-6)
        if name not in ("b8.conv0", "b8.torgb"):
            np.testing.assert_array_equal(out[name], styles[name])
    # S codes at strength 0 render the same image as the W+ codes they came from
    zero = editing.apply_style_edits(latents, g, [StyleEdit("b4.conv1", 0, 0.0)])
    np.testing.assert_allclose(editing.render_segments(g, zero), editing.render_segments(g, latents), atol=1e-5)
    assert editing.latent_space(g, zero["codes"]) == "s"
    assert editing.parse_s_edit(" b16.conv1, 3 , 2.5") == StyleEdit("b16.conv1", 3, 2.5)


# ------------------------------------------------------------------------------------------ bad input
def test_bad_directions_ranges_segments_and_style_layers(g, direction, tmp_path):
    lat = random_wplus(g, 2)
    bad_files = {"short.npy": np.zeros(g.w_dim + 1, np.float32), "rows.npy": np.zeros((3, g.w_dim)),
                 "int.npy": np.zeros((1, g.w_dim), np.int32), "nan.npy": np.full((g.w_dim,), np.nan)}
    for name, arr in bad_files.items():
        np.save(tmp_path / name, arr)
        with pytest.raises(ConfigError):
            editing.load_direction(tmp_path / name, g)
    (tmp_path / "text.npy").write_text("not numpy")
    np.savez(tmp_path / "arch.npz", d=direction)
    for name, msg in (("text.npy", "not a numpy"), ("arch.npz", "npz"), ("missing.npy", "not found")):
        with pytest.raises(ConfigError, match=msg):
            editing.load_direction(tmp_path / name, g)
    with pytest.raises(ConfigError, match=r"\(8, 64\), \(1, 64\) or \(64,\)"):
        editing.apply_direction(lat, g, jnp.zeros((2, g.w_dim)), 1.0)
    for layers in ("0:9", "5:5", "-1:3", "6:2", "a:b", "3", (0, 9), slice(0, 4, 2)):
        with pytest.raises(ConfigError, match="layer"):
            editing.apply_direction(lat, g, direction, 1.0, layers)
    for segments in (2, [0, 5], [1, 1], "0,x", [], "-1"):
        with pytest.raises(ConfigError, match="segment"):
            editing.apply_direction(lat, g, direction, 1.0, None, segments)
    with pytest.raises(ConfigError, match="strength"):
        editing.apply_direction(lat, g, direction, "lots")
    for edit, msg in ((StyleEdit("b64.conv0", 0, 1.0), "unknown S layer"), (StyleEdit(11, 0, 1.0), "index 11"),
                      (StyleEdit("b4.conv1", g.config.style_dims()["b4.conv1"], 1.0), "channel"),
                      (StyleEdit("b4.conv1", -1, 1.0), "channel"), (StyleEdit(0, 0, 1.0, [3]), "segment")):
        with pytest.raises(ConfigError, match=msg):
            editing.apply_style_edits(lat, g, [edit])
    with pytest.raises(ConfigError, match="layer,channel,strength"):
        editing.parse_s_edit("b8.conv0,12")
    with pytest.raises(ConfigError, match="S space"):  # W directions do not apply to S codes
        editing.apply_direction({"codes": g.styles_from_ws(lat["codes"])}, g, direction, 1.0)
    assert issubclass(ConfigError, ChunkyGANError)


# ------------------------------------------------------------------------------------------ region edits
def rect(r, y0, y1, x0, x1, soft=True):
    m = np.zeros((r, r), np.float32)
    m[y0:y1, x0:x1] = 1.0
    if soft:  # a half-strength rim: soft regions blend, zero stays exact
        m[y0 - 1, x0:x1] = m[y1, x0:x1] = 0.5
    return m


@pytest.fixture(scope="module")
def two_local_edits(g, projection, direction):
    """Fig. 9: edit a region, the composite becomes the input, edit another region."""
    r = g.resolution
    first = editing.local_edit(projection.target, g, rect(r, 4, 14, 6, 26), DirectionEdit(direction, 3.0, "0:4"),
                               steps=REGION_STEPS, settings=FAST)
    second = editing.local_edit(first.image, g, rect(r, 16, 28, 4, 20), [StyleEdit("b8.conv1", 2, 4.0)],
                                steps=REGION_STEPS, blend="poisson", settings=FAST)
    return first, second


def test_local_edits_change_only_their_region(g, projection, two_local_edits):
    first, second = two_local_edits
    r1, r2 = first.region, second.region
    np.testing.assert_array_equal(first.image[r1 == 0], projection.target[r1 == 0])  # exact outside
    generated = np.clip(first.generated, -1, 1)  # the composite is clipped to [-1, 1]
    np.testing.assert_array_equal(first.image[r1 == 1], generated[r1 == 1])
    half = first.region == 0.5
    blend = np.clip(0.5 * (first.generated + projection.target), -1, 1)
    np.testing.assert_allclose(first.image[half], blend[half], atol=1e-6)
    unedited = editing.render_segments(g, first.projection.latents)[0]
    assert np.abs(np.asarray(unedited) - first.generated)[r1 == 1].max() > 0.05  # the edit did something
    # the second edit starts from the first one's composite; poisson keeps everything but its domain
    np.testing.assert_array_equal(second.projection.target, first.image)
    domain = np.asarray(poisson_domain(r2))
    np.testing.assert_array_equal(second.image[~domain], first.image[~domain])
    assert np.abs(second.image - first.image)[domain].max() > 1e-3
    # results can be saved and re-rendered: a global re-edit of the local result keeps the outside
    res = second.result
    assert res.settings["edits"][0]["kind"] == "local" and res.static_mask is not None
    again = editing.edit_result(res, g, [], blend="mask")
    np.testing.assert_array_equal(again.composite[r2 == 0], first.image[r2 == 0])


def test_local_edit_checks_its_input_before_projecting(g, projection, direction):
    r = g.resolution
    with pytest.raises(ConfigError, match="layer range"):
        editing.local_edit(projection.target, g, rect(r, 4, 14, 6, 26), DirectionEdit(direction, 1.0, "0:20"))
    with pytest.raises(ConfigError, match="blend"):
        editing.local_edit(projection.target, g, rect(r, 4, 14, 6, 26), None, blend="seamless")
    with pytest.raises(ImageError, match="empty"):
        editing.local_edit(projection.target, g, np.zeros((r, r)), None, steps=REGION_STEPS, settings=FAST)
    with pytest.raises(ImageError, match="region"):
        editing.local_edit(projection.target, g, np.ones((r, r + 1)), None, steps=REGION_STEPS,
                           settings=FAST)


def test_fill_holes_starts_from_the_edited_code(g, two_local_edits):
    first, _ = two_local_edits
    r = g.resolution
    correction = rect(r, 14, 20, 6, 26, soft=False)
    filled = editing.fill_holes(first, g, first.image, correction, steps=REGION_STEPS, settings=FAST)
    np.testing.assert_array_equal(filled.image[correction == 0], first.image[correction == 0])
    np.testing.assert_array_equal(filled.image[correction == 1], np.clip(filled.generated, -1, 1)[correction == 1])
    # X_2 starts at the edited code X_1' (not at w_avg): two Adam steps of lr 0.1 move it by <= ~0.2
    x1 = np.asarray(first.projection.latents["codes"])
    x1_edited, x2 = np.asarray(first.result.latents["codes"]), np.asarray(filled.result.latents["codes"])
    assert np.abs(x1_edited - x1).max() > 2.0 and np.abs(x2 - x1_edited).max() < 0.5


# ------------------------------------------------------------------------------------------ bin/edit
def bin_edit(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(ROOT / "bin" / "edit"), *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_two_sequential_edits(g, projection, direction, tmp_path):
    from chunkygan_jax.checkpoints import save_generator

    save_generator(g, tmp_path / "gen")
    projection.save(tmp_path / "r0")
    np.save(tmp_path / "d.npy", direction[:1].astype(np.float64))  # (1, w_dim) float64
    region = rect(g.resolution, 8, 24, 8, 24, soft=False)
    Image.fromarray((region * 255).astype(np.uint8)).save(tmp_path / "region.png")

    first = bin_edit(f"--latents={tmp_path / 'r0'}", f"--generator={tmp_path / 'gen'}",
                     f"--direction={tmp_path / 'd.npy'}", "--strength=2", "--layers=0:4", "--segments=1",
                     f"--output={tmp_path / 'o1.png'}", f"--output_latents={tmp_path / 'r1'}")
    assert first.returncode == 0, first.stderr
    r1 = load_result(tmp_path / "r1")
    before = np.broadcast_to(projection.latents["codes"], (2, g.num_ws, g.w_dim))
    after = r1.latents["codes"]
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1, 4:], before[1, 4:])
    np.testing.assert_allclose(after[1, :4] - before[1, :4], 2.0 * np.repeat(direction[:1], 4, 0), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o1.png")), io.to_uint8(r1.composite))

    second = bin_edit(f"--latents={tmp_path / 'r1'}", f"--region={tmp_path / 'region.png'}",  # generator recorded
                      "--s_edit=b8.conv0,3,4", f"--steps={REGION_STEPS}", f"--output={tmp_path / 'o2.png'}",
                      f"--output_latents={tmp_path / 'r2'}")
    assert second.returncode == 0, second.stderr
    o1, o2 = (np.asarray(Image.open(tmp_path / f"o{i}.png")) for i in (1, 2))
    np.testing.assert_array_equal(o2[region == 0], o1[region == 0])
    assert np.abs(o2.astype(int) - o1)[region == 1].max() > 0
    assert load_result(tmp_path / "r2").settings["edits"][0]["kind"] == "local"

    # errors: one line, exit status 2, nothing written, inputs untouched
    bad_png = f"--output={tmp_path / 'bad.png'}"
    for args, msg in (([bad_png, f"--layers=0:{g.num_ws + 1}"], "layer range"),
                      ([f"--output={tmp_path / 'd.npy'}"], "overwrite an input")):
        bad = bin_edit(f"--latents={tmp_path / 'r1'}", f"--direction={tmp_path / 'd.npy'}", *args)
        assert bad.returncode == 2 and msg in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad.png").exists() and np.load(tmp_path / "d.npy").shape == (1, g.w_dim)
    nogen = bin_edit(f"--latents={tmp_path / 'r0'}", f"--output={tmp_path / 'bad.png'}")
    assert nogen.returncode == 2 and "pass --generator" in nogen.stderr
