"""The segment generator G^S: masks from the generator's own features for a learnable code X^S in the
generator's own space (W+ for StyleGAN2, z for the DCGAN), through the unsupervised k-means head or a
trained per-pixel MLP ensemble; the mask source the `masks=` option makes, and its record."""

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from chunkygan_jax.errors import CheckpointError, ConfigError, ImageError
from chunkygan_jax.inversion import InversionSettings, Inverter
from chunkygan_jax.masks import segmenter as seg_lib
from chunkygan_jax.masks.metrics import neighbour_agreement
from chunkygan_jax.masks.options import make_mask_source

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("segmenter_cache")


@pytest.fixture(scope="module")
def kmeans3(tiny_generator, cache):
    return seg_lib.kmeans_segmenter(tiny_generator, 3, cache_dir=cache)


@pytest.fixture(scope="module")
def samples(tiny_generator):
    """W+ codes of random samples the heads were not fitted on."""
    return seg_lib.sample_ws(tiny_generator, 8, seed=1234)


@pytest.fixture(scope="module")
def sample_labels(kmeans3, samples):
    """The k-means head's label maps of `samples` [8, 32, 32]: training labels for the MLP head."""
    return seg_lib.label_maps(kmeans3, samples)


# ------------------------------------------------------------------------------------ the mask source
def test_masks_sum_to_one_and_gradient_reaches_the_segment_code(kmeans3, tiny_generator):
    params = kmeans3.init(3)
    assert set(params) == {"segment_code"}
    assert params["segment_code"].shape == (tiny_generator.num_ws, tiny_generator.w_dim)
    np.testing.assert_array_equal(params["segment_code"][3], tiny_generator.w_avg)  # starts at w_avg
    m = np.asarray(kmeans3.masks(params))
    assert m.shape == (3, tiny_generator.resolution, tiny_generator.resolution)
    assert np.all(np.isfinite(m)) and m.min() >= 0
    np.testing.assert_allclose(m.sum(axis=0), 1.0, atol=1e-5)

    # the masks must move when X^S moves: d/dX^S of how much segment 0 covers the left half
    grad = jax.jit(jax.grad(lambda s, p: jnp.sum(s.masks(p)[0, :, : s.resolution // 2]), argnums=1))(kmeans3,
                                                                                         params)
    g = np.asarray(grad["segment_code"])
    assert np.all(np.isfinite(g))
    assert np.abs(g).max() > 1e-4, np.abs(g).max()


def test_frozen_segmenter_has_no_parameters_and_uses_its_code(kmeans3, samples):
    frozen = kmeans3.freeze().with_code(samples[0])
    assert frozen.init(3) == {}
    np.testing.assert_allclose(frozen.masks({}), kmeans3.masks_for_code(samples[0]), atol=1e-6)
    # masks_for_code takes batches (an edit may move X^S) and single W codes
    batch = np.asarray(kmeans3.masks_for_code(samples))
    assert batch.shape == (8, 3, 32, 32)
    np.testing.assert_allclose(batch[0], kmeans3.masks_for_code(samples[0]), atol=1e-5)
    w = kmeans3.masks_for_code(samples[0][0])
    np.testing.assert_allclose(w, kmeans3.masks_for_code(np.broadcast_to(samples[0][0], samples[0].shape)),
                               atol=1e-6)
    with pytest.raises(ConfigError, match="3 segments"):
        kmeans3.init(4)
    with pytest.raises(ConfigError, match="segment code"):
        kmeans3.masks_for_code(np.zeros((5, 7), np.float32))


def test_annealing_sharpens_the_masks_from_the_heads_own_to_the_final_ones(kmeans3, samples):
    """hardness: 1 at the start, `hardening` from `harden_until` of the steps on; the masks at progress 0
    are the head's unannealed ones, softer than the final masks a result keeps (and a frozen one uses)."""
    seg = kmeans3
    assert (seg.hardening, seg.harden_until) == (seg_lib.HARDENING, seg_lib.HARDEN_UNTIL) == (10 / 3, 0.5)
    np.testing.assert_allclose([float(seg.hardness(p)) for p in (0.0, 0.25, 0.5, 0.9, 1.0)],
                               [1.0, (10 / 3) ** 0.5, 10 / 3, 10 / 3, 10 / 3], rtol=1e-6)
    params = {"segment_code": jnp.asarray(samples[0])}
    start, final = np.asarray(seg.masks(params, 0.0)), np.asarray(seg.masks(params))
    np.testing.assert_allclose(start, seg.with_hardening(1.0).masks(params), atol=1e-6)
    np.testing.assert_allclose(final, seg.masks(params, 1.0), atol=1e-6)
    np.testing.assert_allclose(seg.freeze().with_code(samples[0]).masks({}), final, atol=1e-6)
    np.testing.assert_allclose(final.sum(axis=0), 1.0, atol=1e-5)
    entropy = lambda m: float(np.mean(-np.sum(m * np.log(np.clip(m, 1e-12, None)), axis=0)))
    assert entropy(final) < 0.8 * entropy(start), (entropy(final), entropy(start))
    for bad in (0.5, float("nan"), "3"):
        with pytest.raises(ConfigError, match="hardening"):
            seg.with_hardening(bad)
    with pytest.raises(ConfigError, match="harden_until"):
        seg.with_hardening(2.0, 0.0)


def test_jointly_optimised_segment_code_beats_the_frozen_one(tiny_generator, golden_p1, cache):
    """Two-halves targets (left half from one W+ code, right half from another; four pairs of the golden
    codes, inverted as one batch): with the same segmenter and the same 100 steps, letting the inversion
    move X^S must end at a lower loss than keeping it at its initial value."""
    imgs = np.asarray(jax.jit(lambda g, w: g.synthesis(w))(tiny_generator, jnp.asarray(golden_p1["ws_in"])))
    r = tiny_generator.resolution
    left = np.zeros((r, r, 1), np.float32)
    left[:, : r // 2] = 1.0
    targets = np.stack([np.clip(left * imgs[a] + (1 - left) * imgs[(a + 1) % 4], -1, 1) for a in range(4)])
    # Unsmoothed masks: the sharp seam of this target is what a learned X^S can place and a frozen one
    # cannot (with the default blur the seam is soft either way: docs/segmenter.md gives both).
    seg = seg_lib.kmeans_segmenter(tiny_generator, 2, cache_dir=cache, smoothing=0.0)
    settings = InversionSettings(segments=2, steps=100, lambda_reg=0.0, lpips_net="alex", lpips_resolution="full")
    final = {}
    for name, source in (("learned", seg), ("frozen", seg.freeze())):
        inverter = Inverter(tiny_generator, settings, source)
        latents = inverter.initial_latents(len(targets))
        assert ("segment_code" in latents) == (name == "learned")
        state = inverter.advance(inverter.start(latents, len(targets)), inverter.make_batch(targets), 100)
        assert state.step == 100 and np.all(np.isfinite(state.history))
        final[name] = state.history[:, -1]  # total = LPIPS here (lambda_reg = 0)
        if name == "learned":
            moved = np.asarray(state.latents["segment_code"]) - np.asarray(seg.code)
            assert np.all(np.abs(moved).max(axis=(1, 2)) > 1e-3)
    lo, lf = final["learned"], final["frozen"]
    print(f"two-halves LPIPS after 100 steps: X^S learned {np.round(lo, 5)}, frozen {np.round(lf, 5)}, "
          f"ratios {np.round(lo / lf, 2)}")
    assert np.all(lo < lf)
    assert np.median(lo / lf) < 0.8


def test_make_mask_source_kmeans(tiny_generator, kmeans3, cache, monkeypatch):
    monkeypatch.setenv("CHUNKYGAN_CACHE", str(cache / "env"))
    assert seg_lib.segmenter_cache_dir() == cache / "env" / "segmenters"
    monkeypatch.setattr(seg_lib, "segmenter_cache_dir", lambda cache_dir=None: cache)
    learned = make_mask_source("kmeans", 3, 32, generator=tiny_generator)
    frozen = make_mask_source("kmeans", 3, 32, generator=tiny_generator, learn=False)
    assert isinstance(learned, seg_lib.Segmenter) and not learned.frozen and frozen.frozen
    np.testing.assert_array_equal(learned.head.centroids, kmeans3.head.centroids)
    with pytest.raises(ConfigError, match="needs the generator"):
        make_mask_source("kmeans", 3, 32)
    with pytest.raises(ConfigError, match="offers its features"):
        make_mask_source("kmeans", 3, 32, generator=object())


# ------------------------------------------------------------------------------------ k-means head
def test_kmeans_masks_are_spatially_coherent(kmeans3, samples):
    """Coherence = fraction of 4-neighbour pixel pairs whose argmax segment agrees, i.e. 1 - normalised
    boundary length. It is the property that matters for blending: every boundary pixel is a seam where
    two different generated images meet, so a mask source with scattered labels makes a composite full of
    seams. Raw agreement alone rewards a map that is mostly one segment, so it is compared with the same
    labels shuffled within each image (identical histogram, no spatial structure): the ratio of boundary
    lengths measures structure only. It is read at the head's own resolution, before the final bilinear
    upsampling, which would make any map look smoother than the head's decisions are."""
    masks = kmeans3.masks_for_code(samples, resolution=kmeans3.feature_resolution)  # [8, 3, 16, 16]
    labels = np.argmax(np.asarray(masks), axis=1)
    rng = np.random.RandomState(0)
    shuffled = np.stack([rng.permutation(l.reshape(-1)).reshape(l.shape) for l in labels])
    agree, base = neighbour_agreement(labels), neighbour_agreement(shuffled)
    ratio = (1 - agree) / (1 - base)
    share = np.bincount(labels.reshape(-1), minlength=3) / labels.size
    print(f"k-means n=3 neighbour agreement {agree:.3f} vs shuffled {base:.3f}: boundary {ratio:.2f}x "
          f"the shuffled one; segment shares {np.round(share, 3)}")
    assert ratio < 0.35
    assert share.min() > 0.05  # every segment is used: no degenerate clustering


def test_kmeans_is_deterministic_for_a_seed_and_cached(tiny_generator, kmeans3, cache, monkeypatch):
    again = seg_lib.fit_kmeans(tiny_generator, 3, seed=0)
    np.testing.assert_array_equal(again.head.centroids, kmeans3.head.centroids)
    assert float(again.head.temperature) == float(kmeans3.head.temperature)
    other = seg_lib.fit_kmeans(tiny_generator, 3, seed=1)
    assert not np.allclose(other.head.centroids, kmeans3.head.centroids)

    def no_fit(*args, **kwargs):
        raise AssertionError("the cached head should have been loaded")

    monkeypatch.setattr(seg_lib, "fit_kmeans", no_fit)
    hit = seg_lib.kmeans_segmenter(tiny_generator, 3, cache_dir=cache)
    np.testing.assert_array_equal(hit.head.centroids, kmeans3.head.centroids)
    entries = [p for p in cache.iterdir() if "-n3-" in p.name]
    assert len(entries) == 1 and (entries[0] / "head.npz").is_file()
    record = seg_lib.read_segmenter_record(entries[0])
    assert record["head"] == "kmeans" and record["segments"] == 3 and record["layers"] == [8, 16]
    assert record["generator"]["sha256"] == seg_lib.generator_fingerprint(tiny_generator)


def test_head_refuses_another_generator(kmeans3, small_generator, tmp_path):
    seg_lib.save_segmenter(kmeans3, tmp_path / "h")
    with pytest.raises(CheckpointError, match="another generator"):
        seg_lib.load_segmenter(tmp_path / "h", small_generator)
    with pytest.raises(CheckpointError, match="already exists"):
        seg_lib.save_segmenter(kmeans3, tmp_path / "h")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not written by chunkygan_jax"):
        seg_lib.save_segmenter(kmeans3, tmp_path / "other", overwrite=True)
    assert (tmp_path / "other" / "keep.txt").is_file()


# ------------------------------------------------------------------------------------ MLP head
def test_mlp_head_reproduces_its_training_labels(tiny_generator, samples, sample_labels, tmp_path):
    seg = seg_lib.train_mlp(tiny_generator, samples, sample_labels, 3,
                            settings=seg_lib.MLPSettings(members=2, steps=100))
    m = np.asarray(seg.masks_for_code(samples))  # [8, 3, 32, 32]
    accuracy = float(np.mean(m.argmax(axis=1) == sample_labels))
    print(f"MLP head pixel accuracy on its training labels: {accuracy:.3f}")
    assert accuracy >= 0.9
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-5)
    seg_lib.save_segmenter(seg, tmp_path / "mlp")
    loaded = seg_lib.load_segmenter(tmp_path / "mlp", tiny_generator)
    assert loaded.head.kind == "mlp" and loaded.head.members == 2 and loaded.layers == seg.layers
    np.testing.assert_allclose(loaded.masks_for_code(samples), m, atol=1e-6)


def test_annotation_errors(tiny_generator, tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(tiny_generator.w_dim, np.float32))  # z_dim == w_dim here
    with pytest.raises(ConfigError, match="may be z or w"):
        seg_lib.read_latent(tmp_path / "a.npy", tiny_generator)
    assert seg_lib.read_latent(tmp_path / "a.npy", tiny_generator, "w").shape == (8, 64)
    np.save(tmp_path / "b.npy", np.zeros((3, 64), np.float32))
    with pytest.raises(ImageError, match="expected z"):
        seg_lib.read_latent(tmp_path / "b.npy", tiny_generator)
    with pytest.raises(ImageError, match="unpaired: a, b"):
        seg_lib.load_annotations(tmp_path, tiny_generator)
    with pytest.raises(ImageError, match="expected 0..1"):
        seg_lib.train_mlp(tiny_generator, np.zeros((1, 8, 64), np.float32), np.full((1, 32, 32), 2), 2)


def test_bin_train_segmenter(tiny_generator, samples, sample_labels, tmp_path):
    from chunkygan_jax.checkpoints import save_generator

    save_generator(tiny_generator, tmp_path / "gen")
    ann = tmp_path / "ann"
    ann.mkdir()
    for i in range(4):
        np.save(ann / f"s{i}.npy", samples[i])
        Image.fromarray(sample_labels[i].astype(np.uint8), mode="L").save(ann / f"s{i}.png")
    tool = [sys.executable, str(ROOT / "bin" / "train_segmenter"), f"--generator={tmp_path / 'gen'}",
            "--segments=3", "--steps=20", "--members=1"]
    res = subprocess.run(tool + [f"--annotations={ann}", f"--output={tmp_path / 'out'}"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "pixel accuracy" in res.stdout
    seg = seg_lib.load_segmenter(tmp_path / "out", tiny_generator)
    assert seg.head.kind == "mlp" and seg.segments == 3 and seg.head.members == 1
    training = seg_lib.read_segmenter_record(tmp_path / "out")["training"]
    assert training["samples"] == 4 and training["labels"] == "annotations" and training["steps"] == 20
    assert 0 <= training["pixel_accuracy"] <= 1

    bad = subprocess.run(tool + [f"--output={tmp_path / 'out2'}"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "--annotations" in bad.stderr and not (tmp_path / "out2").exists()


# ------------------------------------------------------------------------------------ any generator
@pytest.fixture(scope="module")
def dcgan():
    """A 32 px DCGAN with random weights: a z-space generator (no mapping, no W). The conv weights get He
    scaling (DCGAN's N(0, 0.02) start leaves every pixel's features almost the same vector)."""
    import math

    from chunkygan_jax.generators.dcgan import DCGAN, DCGANConfig, random_params

    config = DCGANConfig(z_dim=16, channels=(32, 16, 8))
    params = random_params(3, config)
    for layer in params["main"].values():
        if layer["weight"].ndim == 4:
            layer["weight"] = layer["weight"] / 0.02 * math.sqrt(2.0 / (4 * layer["weight"].shape[0]))
    return DCGAN(config=config, params=params)


def test_dcgan_features_are_its_own_forward_pass(dcgan):
    from chunkygan_jax.generators.dcgan import conv_transpose2d

    z = dcgan.sample_codes(2, 0)
    assert dcgan.feature_layers == (4, 8, 16) and dcgan.segment_space == "z"
    feats = dcgan.features(z, dcgan.feature_layers)
    assert {r: f.shape for r, f in feats.items()} == {4: (2, 4, 4, 32), 8: (2, 8, 8, 16), 16: (2, 16, 16, 8)}
    assert [dcgan.feature_channels(r) for r in dcgan.feature_layers] == [32, 16, 8]
    # the last block's activations through the output layer are the image: they are the forward pass's
    img = jnp.tanh(conv_transpose2d(feats[16], dcgan.params["main"]["9"]["weight"], 2, 1))
    np.testing.assert_allclose(img, dcgan.synthesize(z, "z"), atol=1e-5)
    np.testing.assert_allclose(dcgan.features(z, [8])[8], feats[8], atol=1e-6)  # stops early, same values
    assert np.all(np.asarray(feats[8]) >= 0)  # after batch norm and ReLU
    with pytest.raises(ConfigError, match="no DCGAN block at"):
        dcgan.features(z, [32])


def test_segment_generator_on_a_z_space_generator(dcgan, cache):
    """G^S works on any generator that offers features: X^S is a z code, both heads fit."""
    seg = seg_lib.kmeans_segmenter(dcgan, 3, cache_dir=cache)
    assert seg.layers == (8, 16) and seg.code_shape == (16,)
    params = seg.init(3)
    np.testing.assert_array_equal(params["segment_code"], dcgan.initial_codes("z", 1)[0])
    m = np.asarray(seg.masks(params))
    assert m.shape == (3, 32, 32)
    np.testing.assert_allclose(m.sum(axis=0), 1.0, atol=1e-5)
    grad = jax.jit(jax.grad(lambda p: jnp.sum(seg.masks(p)[0, :, :16])))(params)["segment_code"]
    assert np.abs(np.asarray(grad)).max() > 1e-5
    codes = dcgan.sample_codes(8, 5)
    assert seg.masks_for_code(codes).shape == (8, 3, 32, 32)
    with pytest.raises(ConfigError, match=r"segment code must be \[16\]"):
        seg.masks_for_code(np.zeros((2, 3, 16), np.float32))
    labels = seg_lib.label_maps(seg, codes)
    mlp = seg_lib.train_mlp(dcgan, codes, labels, 3, settings=seg_lib.MLPSettings(members=1, steps=60))
    accuracy = float(np.mean(seg_lib.label_maps(mlp, codes) == labels))
    print(f"MLP head on the DCGAN's features, pixel accuracy on its training labels: {accuracy:.3f}")
    assert accuracy >= 0.8


def test_smoothing_removes_the_period_two_pattern_of_transposed_convolutions():
    """A transposed convolution of stride 2 leaves a pattern of period 2 in its activations; phi filters
    each block with [1, 2, 1] / 4, which is zero at that frequency and keeps linear ramps."""
    from chunkygan_jax.masks.segmenter.features import smooth_2x

    y, x = np.mgrid[0:12, 0:12].astype(np.float32)
    ramp = 0.3 * x - 0.2 * y
    pattern = np.stack([(-1.0) ** (x + y), (-1.0) ** x, (-1.0) ** y], axis=-1)
    f = jnp.asarray((ramp[..., None] + pattern)[None])
    out = np.asarray(smooth_2x(f))[0]
    np.testing.assert_allclose(out[1:-1, 1:-1], np.repeat(ramp[1:-1, 1:-1, None], 3, axis=-1), atol=1e-5)


def test_connected_pieces_counts_4_connected_pieces_per_label():
    from scipy import ndimage

    from chunkygan_jax.masks.metrics import connected_pieces, mask_coherence

    checker = (np.indices((4, 4)).sum(axis=0) % 2)  # diagonal neighbours do not connect
    np.testing.assert_array_equal(connected_pieces(checker), [8, 8])
    comb = np.zeros((7, 7), int)
    comb[[1, 1, 1, 1, 1, 2, 3, 4, 5, 5, 5, 5, 3, 3, 3], [1, 2, 3, 4, 5, 5, 5, 5, 5, 4, 3, 2, 2, 3, 4]] = 2
    np.testing.assert_array_equal(connected_pieces(comb), [1, 0, 1])  # one comb-shaped piece; label 1 absent
    rng = np.random.RandomState(0)
    for _ in range(20):  # against scipy's labelling
        labels = np.kron(rng.randint(0, 4, (6, 5)), np.ones((3, 2), int))
        labels[rng.rand(*labels.shape) < 0.1] = rng.randint(0, 4)
        want = [ndimage.label(labels == k)[1] for k in range(labels.max() + 1)]
        np.testing.assert_array_equal(connected_pieces(labels), want)
    c = mask_coherence(np.stack([checker, 1 - checker]).astype(np.float32))
    assert c["pieces"] == 16 and c["pieces_per_segment"] == 8.0 and c["neighbour_agreement"] == 0.0
    assert c["top_weight"] == 1.0  # hard masks
    blend = np.stack([np.full((4, 4), 0.7), np.full((4, 4), 0.3)]).astype(np.float32)
    np.testing.assert_allclose(mask_coherence(blend)["top_weight"], 0.7, rtol=1e-6)


# ------------------------------------------------------------------------------------ the masks= option
def test_default_mask_source_is_the_segment_generator_and_is_recorded(tiny_generator, small_generator, tmp_path):
    from chunkygan_jax.generators.protocol import fingerprint
    from chunkygan_jax.masks.sources import LogitMasks
    from chunkygan_jax.masks.options import mask_source_record, segmenter_for_result

    default = make_mask_source(None, 3, 32, generator=tiny_generator)
    assert isinstance(default, seg_lib.Segmenter) and not default.frozen and default.head.kind == "kmeans"
    alias = make_mask_source("kmeans", 3, 32, generator=tiny_generator)
    np.testing.assert_array_equal(alias.head.centroids, default.head.centroids)
    assert isinstance(make_mask_source(None, 3, 32), LogitMasks)  # no generator: free logits
    assert isinstance(make_mask_source(None, 3, 32, generator=object()), LogitMasks)

    record = mask_source_record(None, default, tiny_generator, 3)
    assert record == {"kind": "segmenter", "head": "kmeans", "segmenter": seg_lib.segmenter_identity(default),
                      "from": "kmeans cache", "segments": 3, "layers": [8, 16], "smoothing": 1 / 16,
                      "hardening": 10 / 3, "harden_until": 0.5, "learned": True,
                      "generator": fingerprint(tiny_generator), "seed": 0}
    assert mask_source_record("logits", make_mask_source("logits", 3, 32), tiny_generator, 3) == \
        {"kind": "logits", "learned": True}
    again = segmenter_for_result(record, tiny_generator, 3)
    np.testing.assert_array_equal(again.head.centroids, default.head.centroids)
    assert (again.hardening, again.harden_until) == (10 / 3, 0.5)
    older = {k: v for k, v in record.items() if k not in ("hardening", "harden_until")}  # made before annealing
    assert segmenter_for_result(older, tiny_generator, 3).hardening == 1.0
    with pytest.raises(ConfigError, match="hardening"):
        segmenter_for_result({**record, "hardening": "lots"}, tiny_generator, 3)

    # a trained head by directory: loaded, recorded by path, and only for the masks it makes
    other = seg_lib.fit_kmeans(tiny_generator, 3, seed=1)
    seg_lib.save_segmenter(other, tmp_path / "other")
    given = make_mask_source("segmenter", 3, 32, generator=tiny_generator, segmenter=tmp_path / "other")
    np.testing.assert_array_equal(given.head.centroids, other.head.centroids)
    assert mask_source_record("segmenter", given, tiny_generator, 3,
                              segmenter=tmp_path / "other")["from"] == str(tmp_path / "other")
    with pytest.raises(ConfigError, match="makes 3 segments, not 4"):
        make_mask_source("segmenter", 4, 32, generator=tiny_generator, segmenter=tmp_path / "other")
    with pytest.raises(ConfigError, match="applies to masks='segmenter'"):
        make_mask_source("logits", 3, 32, generator=tiny_generator, segmenter=tmp_path / "other")

    # recomputing a result's masks: the recorded segmenter only, on the recorded generator only
    with pytest.raises(ConfigError, match="is not the segmenter that made this result"):
        segmenter_for_result(record, tiny_generator, 3, segmenter=tmp_path / "other")
    with pytest.raises(ConfigError, match="another generator"):
        segmenter_for_result(record, small_generator, 3)
    with pytest.raises(ConfigError, match="came from logits"):
        segmenter_for_result({"kind": "logits", "learned": True}, tiny_generator, 3)
