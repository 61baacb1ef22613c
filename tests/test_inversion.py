"""The inversion: the method's own claim (segments fit what one code cannot), the objective's pieces,
determinism, and the API's handling of bad input."""

import dataclasses
import os

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chunkygan_jax.errors import ConfigError, ImageError, ResourceError
from chunkygan_jax.inversion import (InversionSettings, Inverter, MaskSettings, Monitor, default_loop_form, dispersion,
                                     invert, nvidia_lr_schedule, step_memory_bytes)
from chunkygan_jax.masks import sources as masks_lib
from chunkygan_jax.masks.options import make_mask_source

FAST = dict(lpips_net="alex", lpips_resolution="full")


@pytest.fixture(scope="module")
def two_halves(small_generator, golden_p2):
    """A target made of two different W+ codes: left half from one, right half from the other."""
    ws = jnp.asarray(golden_p2["ws_in"][:2])
    imgs = np.asarray(small_generator.synthesis(ws))
    r = small_generator.resolution
    left = np.zeros((r, r), np.float32)
    left[:, : r // 2] = 1.0
    target = np.clip(left[..., None] * imgs[0] + (1 - left[..., None]) * imgs[1], -1, 1)
    return target, left


@pytest.fixture(scope="module")
def claim_results(small_generator, two_halves):
    target, left = two_halves
    common = dict(steps=100, lambda_reg=0.0, **FAST)
    return {
        "global": invert(target, small_generator, segments=1, settings=common),
        "halves": invert(target, small_generator, segments=2, masks=np.stack([left, 1 - left]),
                         settings=common),
        "learned": invert(target, small_generator, segments=2, settings=common),
    }


def test_two_segments_fit_what_one_code_cannot(claim_results):
    g = claim_results["global"].final_losses["lpips"]
    halves = claim_results["halves"].final_losses["lpips"]
    learned = claim_results["learned"].final_losses["lpips"]
    print(f"two-halves LPIPS: global W+ {g:.5f}, n=2 true masks {halves:.5f} ({halves / g:.2f}x), "
          f"n=2 learned masks {learned:.5f} ({learned / g:.2f}x)")
    assert halves <= 0.5 * g
    assert learned < g


def test_loss_decreases_and_history_is_complete(claim_results):
    h = claim_results["learned"].loss_history
    assert h.shape == (100,) and np.all(np.isfinite(h))
    # lr = 0 at step 0 (NVIDIA's schedule): the first step changes no code, so both steps render one image
    # (the annealed masks differ between them, but all segments show the same image: rounding only)
    np.testing.assert_allclose(h[0], h[1], rtol=1e-5)
    assert h[-1] < 0.5 * h[0]


def test_masks_sum_to_one_and_composite_is_the_blend(claim_results):
    r = claim_results["learned"]
    np.testing.assert_allclose(r.masks.sum(axis=0), 1.0, atol=1e-5)
    blend = np.sum(r.segment_images * r.masks[..., None], axis=0)
    np.testing.assert_allclose(r.composite, blend, atol=1e-5)


def test_schedule_is_nvidias_and_never_rises_again():
    sched = nvidia_lr_schedule(0.1, 100)
    lrs = np.array([float(sched(i)) for i in range(0, 200)])
    assert lrs[0] == 0.0
    np.testing.assert_allclose(lrs[5:75], 0.1, rtol=1e-6)  # plateau after the 5 % ramp-up
    assert np.all(np.diff(lrs[75:101]) <= 1e-9) and lrs[100] == pytest.approx(0.0, abs=1e-9)
    assert np.all(lrs[100:] == lrs[100])  # t is clamped: running longer never raises lr again


def test_static_mask_keeps_the_input_exactly(tiny_generator):
    r = tiny_generator.resolution
    rng = np.random.RandomState(3)
    target = rng.uniform(-1, 1, (r, r, 3)).astype(np.float32)
    static = np.zeros((r, r), np.float32)
    static[:10, :] = 1.0
    res = invert(target, tiny_generator, segments=2, steps=6, masks=MaskSettings(static=static),
                 settings=FAST)
    np.testing.assert_array_equal(res.composite[:10], target[:10])
    assert np.abs(res.composite[12:] - target[12:]).max() > 1e-3


def test_same_seed_same_latents_and_seed_changes_layout(tiny_generator, two_halves):
    target = np.asarray(jax.image.resize(two_halves[0], (32, 32, 3), "linear"))
    common = dict(segments=2, steps=6, **FAST)
    a = invert(target, tiny_generator, masks="logits", settings=dict(seed=7, **common))
    b = invert(target, tiny_generator, masks="logits", settings=dict(seed=7, **common))
    c = invert(target, tiny_generator, masks="logits", settings=dict(seed=8, **common))
    for k in a.latents:
        np.testing.assert_array_equal(a.latents[k], b.latents[k])
    assert np.abs(a.latents["mask_logits"] - c.latents["mask_logits"]).max() > 1e-3


def test_lambda_reg_reduces_dispersion(tiny_generator, two_halves):
    target = np.asarray(jax.image.resize(two_halves[0], (32, 32, 3), "linear"))
    common = dict(segments=2, steps=6, **FAST)
    free = invert(target, tiny_generator, settings=dict(lambda_reg=0.0, **common))
    tied = invert(target, tiny_generator, settings=dict(lambda_reg=1.0, **common))
    d_free, d_tied = float(dispersion(free.codes)), float(dispersion(tied.codes))
    assert d_free > 0 and d_tied < 0.5 * d_free, (d_free, d_tied)


@pytest.mark.parametrize("space", ["w", "s"])
def test_other_spaces_run_and_improve(tiny_generator, two_halves, space):
    target = np.asarray(jax.image.resize(two_halves[0], (32, 32, 3), "linear"))
    res = invert(target, tiny_generator, segments=2, steps=6, settings=dict(space=space, lambda_reg=0.0, **FAST))
    if space == "w":
        assert res.codes.shape == (2, 1, tiny_generator.w_dim)
    else:
        assert set(res.codes) == set(tiny_generator.config.layer_names())
        assert res.codes["b8.torgb"].shape[0] == 2
    assert res.loss_history[-1] < res.loss_history[0]


def test_result_round_trip(tmp_path, tiny_generator, tiny_checkpoint):
    import json

    from chunkygan_jax.checkpoints import load_generator
    from chunkygan_jax.results import generator_record, load_result

    r = tiny_generator.resolution
    target = np.zeros((r, r, 3), np.float32)
    res = invert(target, str(tiny_checkpoint), segments=2, steps=6, settings=FAST)
    # the result records the generator that made it: the checkpoint's absolute path
    assert res.settings["generator"] == str(tiny_checkpoint.resolve())
    assert generator_record(tiny_generator) is None  # made in memory: nothing to load it from
    loaded_gen = load_generator(tiny_checkpoint)
    same_weights = loaded_gen.replace(config=loaded_gen.config)  # as bind_label makes one of a class
    assert same_weights is not loaded_gen and generator_record(same_weights) == str(tiny_checkpoint.resolve())
    loaded = load_result(res.save(tmp_path / "res"))
    for k in res.latents:
        np.testing.assert_array_equal(loaded.latents[k], res.latents[k])
    np.testing.assert_array_equal(loaded.masks, res.masks)
    assert loaded.settings == res.settings
    # a result saved before results recorded their generator still loads, without the record
    old = tmp_path / "old"
    res.save(old)
    record = json.loads((old / "result.json").read_text())
    del record["settings"]["generator"]
    (old / "result.json").write_text(json.dumps(record))
    assert "generator" not in load_result(old).settings
    # compilation (the first step call's excess) and the steady steps are measured apart
    assert res.compile_seconds >= 0 and res.step_ms > 0
    assert res.compile_seconds + 5 * res.step_ms / 1000 <= res.seconds
    assert (loaded.compile_seconds, loaded.step_ms) == (res.compile_seconds, res.step_ms)
    # saving again: only with overwrite, and never onto a folder of someone else's files
    with pytest.raises(ConfigError, match="already exists"):
        res.save(tmp_path / "res")
    res.save(tmp_path / "res", overwrite=True)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"a photo")
    with pytest.raises(ConfigError, match="not written by chunkygan_jax"):
        res.save(photos, overwrite=True)
    assert os.listdir(photos) == ["holiday.jpg"] and (photos / "holiday.jpg").read_bytes() == b"a photo"


def test_default_is_the_segment_generator_with_progress_and_a_clipped_image(tiny_generator, capsys):
    """invert() with masks=None on a generator that offers features uses G^S (X^S learned) and records
    it; progress=True prints the progress line; the composite is offered clipped for saving."""
    from chunkygan_jax import io
    from chunkygan_jax.generators.protocol import fingerprint

    r = tiny_generator.resolution
    target = np.random.RandomState(4).uniform(-1, 1, (r, r, 3)).astype(np.float32)
    res = invert(target, tiny_generator, segments=2, steps=6, settings=FAST,
                 monitor=Monitor(progress=True))
    assert "6/6 steps" in capsys.readouterr().err
    record = res.settings["masks"]
    assert record["kind"] == "segmenter" and record["head"] == "kmeans" and record["learned"]
    assert record["generator"] == fingerprint(tiny_generator)
    x_s = res.latents["segment_code"]
    assert x_s.shape == (tiny_generator.num_ws, tiny_generator.w_dim)
    assert np.abs(x_s - np.asarray(tiny_generator.w_avg)).max() > 1e-4  # X^S left w_avg: it was optimised
    assert res.clipped.min() >= -1 and res.clipped.max() <= 1
    np.testing.assert_array_equal(res.image_uint8(), io.to_uint8(res.clipped))
    inside = np.abs(res.composite) <= 1
    np.testing.assert_array_equal(res.clipped[inside], res.composite[inside])


def test_no_recompilation_between_images_or_inverters(tiny_generator):
    settings = InversionSettings(segments=2, steps=6, lpips_net="alex", lpips_resolution="full", seed=11)
    r = tiny_generator.resolution
    runs, sizes = set(), []
    for seed in range(3):  # a new Inverter per image, as invert() does
        inv = Inverter(tiny_generator, settings)
        target = np.random.RandomState(seed).uniform(-1, 1, (1, r, r, 3)).astype(np.float32)
        batch = inv.make_batch(target)
        inv.advance(inv.start(inv.initial_latents(1), 1), batch, 6)
        runs.add(id(inv._run))
        sizes.append(inv._run._cache_size())  # the program is shared with other tests' equal settings
    assert len(runs) == 1 and sizes[0] == sizes[1] == sizes[2]
    # invert() on a new image with the same settings reuses that program too.
    before = inv._run._cache_size()
    invert(np.zeros((r, r, 3), np.float32), tiny_generator, segments=2, steps=6, settings=dict(seed=11, **FAST))
    assert inv._run._cache_size() == before


@flax.struct.dataclass
class Sharpening:
    """A fixed mask source whose masks sharpen with the inversion's progress (when `anneals`)."""

    logits: jax.Array  # [n, R, R]
    anneals: bool = flax.struct.field(pytree_node=False, default=True)

    def init(self, n):
        return {}

    def masks(self, params, progress=1.0):
        return jax.nn.softmax(self.logits * (1.0 + 4.0 * progress), axis=0)


def test_loop_forms_agree_give_an_annealing_source_its_progress_and_keep_the_callers_arrays(tiny_generator,
                                                                                          two_halves):
    """The jitted loop, host-driven steps and the unrolled form run the same step; only XLA's summation
    order differs. Step k sees progress k / steps in every form, also when advance() is called in several
    chunks; a source that does not anneal sees its final masks. With these fixed masks the latents agree
    to rounding (median) and Adam's normalised steps can amplify rounding on near-zero gradients (max;
    see test_distributed). The loop state is donated, but never the arrays the caller passed in."""
    assert default_loop_form("cpu") == "steps" and default_loop_form("gpu") == default_loop_form("tpu") == "loop"
    r = tiny_generator.resolution
    target = np.asarray(jax.image.resize(two_halves[0], (r, r, 3), "linear"))[None]
    settings = InversionSettings(segments=2, steps=7, lpips_net="alex", lpips_resolution="full", lambda_reg=0.0)
    layout = masks_lib.default_layout(2, r)
    logits = jnp.asarray(np.log(np.clip(layout, 1e-3, None)) * 0.3)
    w = np.array(tiny_generator.initial_codes("w+", 2))
    w[1] += 0.5 * np.random.RandomState(0).standard_normal(w[1].shape).astype(np.float32)  # two images
    out = {}
    for name, source in (("loop", Sharpening(logits)), ("steps", Sharpening(logits)),
                         ("unrolled", Sharpening(logits)), ("fixed", Sharpening(logits, anneals=False))):
        form = "steps" if name == "fixed" else name
        inv = Inverter(tiny_generator, settings, source, loop=form)
        assert inv.loop == form
        batch = inv.make_batch(target)
        mine = {"codes": jnp.asarray(w)[None]}
        state = inv.start(mine, 1)
        for count in (2, 5):  # 5 = one unrolled chunk of 4 and a single step
            state = inv.advance(state, batch, count)
        assert state.step == 7 and np.all(np.isfinite(state.history))
        np.testing.assert_array_equal(mine["codes"], w[None])
        out[name] = (np.asarray(state.latents["codes"]), state.history[0])
        if name == "steps":  # what a result keeps: the masks at progress 1
            np.testing.assert_allclose(inv.evaluate(state.latents, batch)[1][0], source.masks({}), atol=1e-6)
            np.testing.assert_allclose(inv.snapshot(state.latents, batch, 0)[1][0], source.masks({}, 0.0), atol=1e-6)
    ref_codes, ref_hist = out["loop"]
    moved = float(np.abs(ref_codes - w[None]).max())
    for form in ("steps", "unrolled"):
        codes, hist = out[form]
        np.testing.assert_allclose(hist[0], ref_hist[0], rtol=1e-5)  # the same objective before any update
        np.testing.assert_allclose(hist, ref_hist, rtol=1e-3)
        diff = np.abs(codes - ref_codes)
        assert float(np.median(diff)) <= 1e-5 and float(diff.max()) <= 0.05 * moved, (form, diff.max(), moved)
    # the first step's masks are the softest (progress 0): a loss that differs from the final masks'
    fixed = out["fixed"][1]
    assert abs(ref_hist[0] - fixed[0]) > 0.01 * fixed[0], (ref_hist[0], fixed[0])
    with pytest.raises(ConfigError, match="loop"):
        Inverter(tiny_generator, settings, Sharpening(logits), loop="while")


def test_a_grey_target_is_compared_in_luminance(tiny_generator, golden_p1, two_halves):
    """On a grey target the objective sees the composite's luminance only: a generator whose colours are
    mixed by a luminance-keeping matrix (its ToRGB outputs mixed, so every image is M x per pixel) gets
    the same loss; on a colour target, or with grey_loss=False, the mix changes the loss."""
    from chunkygan_jax.generators import stylegan2_from_nvidia
    from chunkygan_jax.masks.composite import LUMA

    from conftest import scaled_rgb_state

    r = tiny_generator.resolution
    colour = np.asarray(jax.image.resize(two_halves[0], (r, r, 3), "linear"))
    grey = np.repeat(np.clip(colour @ np.asarray(LUMA, np.float32), -1, 1)[..., None], 3, axis=-1)
    mix = np.eye(3) + np.outer([LUMA[1], -LUMA[0], 0.0], [0.6, 0.3, -0.5])  # LUMA @ mix == LUMA
    np.testing.assert_allclose(np.asarray(LUMA) @ mix, LUMA, atol=1e-12)
    state = scaled_rgb_state(golden_p1)
    for k in [k for k in state if k.endswith((".torgb.weight", ".torgb.bias"))]:
        state[k] = np.tensordot(mix, state[k], axes=(1, 0)).astype(state[k].dtype)
    mixed = stylegan2_from_nvidia(state)
    codes = {"codes": jnp.asarray(tiny_generator.initial_codes("w+", 2))[None]}
    source = make_mask_source("layout", 2, r)
    base = InversionSettings(segments=2, steps=7, lpips_net="alex", lpips_resolution="full", lambda_reg=0.0)
    loss = {}
    for flag in (True, False):
        settings = dataclasses.replace(base, grey_loss=flag)
        for name, g in (("plain", tiny_generator), ("mixed", mixed)):
            inv = Inverter(g, settings, source)
            for kind, target in (("grey", grey), ("colour", colour)):
                _, _, out, parts = inv.evaluate(codes, inv.make_batch(target[None]))
                loss[flag, name, kind] = float(parts["lpips"][0])
                if (flag, kind) == (True, "grey"):
                    assert np.abs(out[0, ..., 0] - out[0, ..., 1]).mean() > 0.01  # the composite is in colour
    assert abs(loss[True, "plain", "grey"] - loss[True, "mixed", "grey"]) < 1e-5 * loss[True, "plain", "grey"] + 1e-7
    for flag, kind in ((True, "colour"), (False, "grey")):
        assert abs(loss[flag, "plain", kind] - loss[flag, "mixed", kind]) > 0.005 * loss[flag, "plain", kind], loss
    assert loss[False, "plain", "colour"] == loss[True, "plain", "colour"]  # colour targets: as before
    with pytest.raises(ConfigError, match="grey_loss must be True or False"):
        InversionSettings(grey_loss="yes").validate(tiny_generator)


def test_bad_options_are_clear_errors(tiny_generator):
    r = tiny_generator.resolution
    img = np.zeros((r, r, 3), np.float32)
    with pytest.raises(ConfigError, match="segments"):
        invert(img, tiny_generator, segments=0, steps=1, settings=FAST)
    with pytest.raises(ConfigError, match="steps"):
        invert(img, tiny_generator, steps=0, settings=FAST)
    with pytest.raises(ConfigError, match="latent space"):
        invert(img, tiny_generator, steps=1, settings=dict(space="q", **FAST))
    with pytest.raises(ImageError, match="32x32"):
        invert(np.zeros((16, 16, 3), np.float32), tiny_generator, steps=1, settings=FAST)
    with pytest.raises(ImageError, match=r"\[-1, 1\]"):
        invert(img + 3, tiny_generator, steps=1, settings=FAST)
    with pytest.raises(ImageError, match="NaN"):
        invert(img * np.nan, tiny_generator, steps=1, settings=FAST)
    with pytest.raises(ConfigError, match="3 masks given for 2 segments"):
        invert(img, tiny_generator, segments=2, masks=np.ones((3, r, r)), steps=1, settings=FAST)
    with pytest.raises(ImageError, match="masks must be"):
        invert(img, tiny_generator, segments=2, masks=np.ones((2, 8, 8)), steps=1, settings=FAST)
    with pytest.raises(ConfigError, match="noise_mode must be one of const, none"):
        invert(img, tiny_generator, steps=1, settings=dict(noise_mode="random", **FAST))


def test_impossible_requests_are_refused_with_the_estimate(tiny_generator):
    settings = InversionSettings(segments=2, steps=1).validate(tiny_generator)
    per_image = step_memory_bytes(tiny_generator, settings, 1)
    # linear in images and segments, and at least the segments' own RGB images
    assert step_memory_bytes(tiny_generator, settings, 3) == 3 * per_image
    assert per_image >= 2 * 32 * 32 * 3 * 4
    huge = 10 ** 7
    with pytest.raises(ResourceError, match=rf"1 image\(s\) x {huge} segments at 32 px need at least"):
        invert(np.zeros((32, 32, 3), np.float32), tiny_generator, segments=huge, steps=1, settings=FAST)


def test_user_masks_normalised_and_label_maps():
    soft = np.stack([np.full((4, 4), 0.2), np.full((4, 4), 0.6)])
    soft[:, 0, 0] = 0.0
    norm = masks_lib.normalize_masks(soft)
    np.testing.assert_allclose(norm.sum(0), 1.0, atol=1e-6)
    np.testing.assert_allclose(norm[:, 1, 1], [0.25, 0.75], atol=1e-6)
    np.testing.assert_allclose(norm[:, 0, 0], [0.5, 0.5])  # uncovered pixels are shared
    labels = np.array([[0, 1], [2, 1]])
    onehot = masks_lib.masks_from_labels(labels, 3)
    assert onehot.shape == (3, 2, 2) and onehot[2, 1, 0] == 1 and onehot.sum() == 4
    with pytest.raises(ImageError, match="expected indices 0..1"):
        masks_lib.masks_from_labels(labels, 2)
    layout = masks_lib.default_layout(5, 16)
    np.testing.assert_allclose(layout.sum(0), 1.0, atol=1e-6)
    assert len(np.unique(layout.argmax(0))) == 5  # every segment owns some pixels


def _linear_precisions(jaxpr) -> set:
    """(primitive, precision, operand dtype) of every convolution and matrix product, nested ones too."""
    found = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
            found.add((eqn.primitive.name, str(eqn.params["precision"]), str(eqn.invars[0].aval.dtype)))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    found |= _linear_precisions(sub)
    return found


def test_tf32_is_fp32_storage_at_tf32_precision_and_equals_float32_on_cpu(tiny_generator, two_halves):
    """dtype='tf32': the same fp32 arrays as float32, with the generator's and LPIPS's convolutions at
    Precision.HIGH (JAX's "tensorfloat32"), checked exactly in the traced programs; on a CPU both
    precisions compute fp32, so the inversion agrees with float32's. Other dtypes are refused."""
    from chunkygan_jax.editing.render import render_segments
    from chunkygan_jax.lpips import load_lpips, random_lpips

    codes = jnp.asarray(tiny_generator.initial_codes("w+", 2))
    for dtype, want in (("tf32", "HIGH"), ("float32", "HIGHEST")):
        convs = {p for p in _linear_precisions(jax.make_jaxpr(
            lambda g, c: g.synthesize(c, "w+", dtype=dtype))(tiny_generator, codes).jaxpr)
            if p[0] == "conv_general_dilated"}
        assert convs == {("conv_general_dilated", f"(Precision.{want}, Precision.{want})", "float32")}, convs
        lp = random_lpips("alex", compute_dtype=dtype)
        convs = _linear_precisions(jax.make_jaxpr(lp.features)(jnp.zeros((1, 32, 32, 3))).jaxpr)
        assert convs == {("conv_general_dilated", f"(Precision.{want}, Precision.{want})", "float32")}, convs

    target = np.asarray(jax.image.resize(two_halves[0], (32, 32, 3), "linear"))
    common = dict(segments=2, steps=6, lambda_reg=0.0, **FAST)
    ref = invert(target, tiny_generator, masks="logits", settings=dict(dtype="float32", **common))
    res = invert(target, tiny_generator, masks="logits", settings=dict(dtype="tf32", **common))
    assert res.settings["dtype"] == "tf32" and res.composite.dtype == np.float32
    # Same arithmetic, separately compiled programs: agreement to float32 rounding (images about |1|).
    np.testing.assert_allclose(res.loss_history, ref.loss_history, rtol=1e-4)
    np.testing.assert_allclose(res.composite, ref.composite, atol=1e-3)
    # A saved tf32 result renders again (the editing path reads settings["dtype"]).
    again = np.asarray(render_segments(tiny_generator, res.latents, dtype=res.settings["dtype"]))
    np.testing.assert_allclose(again, res.segment_images, atol=1e-4)

    for bad in ("float16", "tf16", "int8"):
        with pytest.raises(ConfigError, match="dtype must be one of 'float32', 'tf32', 'bfloat16'"):
            invert(target, tiny_generator, steps=1, settings=dict(dtype=bad, **FAST))
    with pytest.raises(ConfigError, match="compute_dtype must be one of"):
        load_lpips("alex", compute_dtype="tf16")


def test_snapshots_copy_composite_and_masks_only_and_match_a_separate_run(tiny_generator, two_halves,
                                                                         monkeypatch):
    """A snapshot runs the small program (composite and masks, no segment images, no losses) and shows
    what a separate run stopped at that step shows."""
    target = np.asarray(jax.image.resize(two_halves[0], (32, 32, 3), "linear"))
    settings = InversionSettings(segments=2, steps=6, lambda_reg=0.0, lpips_net="alex", lpips_resolution="full")
    calls = {"evaluate": 0}
    original = Inverter.evaluate

    def counted(self, *args, **kwargs):
        calls["evaluate"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Inverter, "evaluate", counted)
    res = invert(target, tiny_generator, segments=2, steps=6,
                 settings=dict(lambda_reg=0.0, lpips_net="alex", lpips_resolution="full"),
                 monitor=Monitor(snapshot_steps=(2, 4), every=0))
    assert calls["evaluate"] == 1  # the final result only; snapshots never copy segment images
    assert [s.step for s in res.snapshots] == [2, 4]

    inv = Inverter(tiny_generator, settings)
    batch = inv.make_batch(target[None])
    state = inv.start(inv.initial_latents(1, targets=target[None]), 1)  # seeded as invert() seeds it
    shown = inv.snapshot(state.latents, batch)
    assert len(shown) == 2 and shown[0].shape == (1, 32, 32, 3) and shown[1].shape == (1, 2, 32, 32)
    for snap in res.snapshots:
        state = inv.advance(state, batch, snap.step - state.step)
        _, masks, composite, _ = original(inv, state.latents, batch, state.step)
        # the same latents (same step program); two programs render them: rounding only
        np.testing.assert_allclose(snap.composite, composite[0], atol=1e-4)
        np.testing.assert_allclose(snap.masks, masks[0], atol=1e-5)
        assert not np.allclose(snap.composite, res.composite, atol=1e-3)  # a real intermediate image
