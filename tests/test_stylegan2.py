"""StyleGAN2 parity with the official PyTorch generators (golden data, fp32) and shape/error behaviour."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chunkygan_jax.errors import CheckpointError, ConfigError
from chunkygan_jax.generators import (StyleGAN2, StyleGAN2Config, config_from_params, ffhq_config, random_params,
                                      stylegan2_from_nvidia, stylegan2_from_rosinality)
from chunkygan_jax.generators.statedict import expected_shapes
from conftest import golden_state

IMG_TOL = 1e-4
LATENT_TOL = 1e-5

synth = jax.jit(lambda g, ws, mode: g.synthesis(ws, noise_mode=mode), static_argnums=2)
mapping = jax.jit(lambda g, z, psi: g.mapping(z, truncation_psi=psi), static_argnums=2)
styles_of = jax.jit(lambda g, ws: g.styles_from_ws(ws))


def nchw(img):
    return np.transpose(np.asarray(img), (0, 3, 1, 2))


@pytest.mark.parametrize("name", ["p1", "p2"])
def test_nvidia_parity(name, request):
    data = request.getfixturevalue(f"golden_{name}")
    g = request.getfixturevalue(f"generator_{name}")
    z = jnp.asarray(data["z"])
    np.testing.assert_allclose(mapping(g, z, 1.0), data["ws_psi1"], atol=LATENT_TOL, rtol=0)
    np.testing.assert_allclose(mapping(g, z, 0.7), data["ws_psi07"], atol=LATENT_TOL, rtol=0)
    ws = jnp.asarray(data["ws_in"])
    styles = styles_of(g, ws)
    assert len(styles) == len(g.config.layer_names()) == len([k for k in data if k.startswith("s/")])
    for layer, s in styles.items():
        np.testing.assert_allclose(s, data[f"s/synthesis.{layer}"], atol=LATENT_TOL, rtol=0, err_msg=layer)
    for mode in ("const", "none"):
        diff = np.abs(nchw(synth(g, ws, mode)) - data[f"img_{mode}"]).max()
        assert diff <= IMG_TOL, (mode, diff)
    # The S-space entry point with the same styles gives the same image.
    from_styles = jax.jit(lambda g, s: g.synthesis_from_styles(s))(g, styles)
    np.testing.assert_allclose(from_styles, synth(g, ws, "const"), atol=2e-5, rtol=0)


def test_features_match_block_activations(golden_p1, generator_p1):
    ws = jnp.asarray(golden_p1["ws_in"])
    feats = generator_p1.features(ws, resolutions=(8, 16))
    assert sorted(feats) == [8, 16]
    for res, x in feats.items():
        np.testing.assert_allclose(nchw(x), golden_p1[f"act/synthesis.b{res}.x"], atol=IMG_TOL, rtol=0)


def test_rosinality_parity(golden_r1):
    g = stylegan2_from_rosinality(golden_state(golden_r1))
    np.testing.assert_allclose(g.mapping(jnp.asarray(golden_r1["z"]))[:, 0], golden_r1["style_out"],
                               atol=LATENT_TOL, rtol=0)
    latent = jnp.asarray(golden_r1["latent_in"])
    styles = g.styles_from_ws(latent)
    names = {"conv1": "b4.conv1", "to_rgb1": "b4.torgb", "convs.0": "b8.conv0", "convs.1": "b8.conv1",
             "to_rgbs.0": "b8.torgb", "convs.4": "b32.conv0", "to_rgbs.2": "b32.torgb"}
    for theirs, ours in names.items():
        np.testing.assert_allclose(styles[ours], golden_r1[f"s/{theirs}"], atol=LATENT_TOL, rtol=0)
    assert np.abs(nchw(synth(g, latent, "const")) - golden_r1["img"]).max() <= IMG_TOL


def test_batch_independence_and_any_batch_size(golden_p1, generator_p1):
    ws = jnp.asarray(golden_p1["ws_in"])
    full = synth(generator_p1, ws, "const")
    for i in range(ws.shape[0]):
        np.testing.assert_allclose(synth(generator_p1, ws[i:i + 1], "const")[0], full[i], atol=1e-5, rtol=0)
    assert synth(generator_p1, jnp.concatenate([ws, ws[:1]]), "const").shape[0] == 5


def test_random_noise_needs_key_and_is_reproducible(golden_p1, generator_p1):
    ws = jnp.asarray(golden_p1["ws_in"][:2])
    with pytest.raises(ConfigError, match="key"):
        generator_p1.synthesis(ws, noise_mode="random")
    with pytest.raises(ConfigError, match="noise_mode"):
        generator_p1.synthesis(ws, noise_mode="fancy")
    noisy = jax.jit(lambda g, ws, key: g.synthesis(ws, noise_mode="random", key=key))
    a = noisy(generator_p1, ws, jax.random.key(1))
    b = noisy(generator_p1, ws, jax.random.key(1))
    c = noisy(generator_p1, ws, jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3


def test_conv_clamp_bounds_activations(golden_p1):
    g = stylegan2_from_nvidia(golden_state(golden_p1), conv_clamp=0.5)
    feats = g.features(jnp.asarray(golden_p1["ws_in"]), resolutions=(4, 32))
    for x in feats.values():
        assert float(jnp.abs(x).max()) <= 0.5 + 1e-6
    unclamped = stylegan2_from_nvidia(golden_state(golden_p1)).features(jnp.asarray(golden_p1["ws_in"]), (32,))
    assert float(jnp.abs(unclamped[32]).max()) > 0.5  # the clamp is really exercised


def test_shapes_come_from_weights_not_a_formula():
    # Channels that no channel_base/channel_max formula would give, and a 2-layer mapping with w_dim != z_dim.
    cfg = ffhq_config(16, channel_base=64, channel_max=16, w_dim=24, mapping_layers=2)
    params = random_params(0, cfg)
    params["synthesis"]["b8"]["conv1"]["weight"] = params["synthesis"]["b8"]["conv1"]["weight"][:5]
    inferred = config_from_params(params)
    assert inferred.channels_at(8) == 5 and inferred.channels_at(16) == cfg.channels_at(16)


def test_conditional_config_comes_from_weights_and_round_trips():
    cfg = dataclasses.replace(ffhq_config(8, channel_base=64, channel_max=16, w_dim=24, mapping_layers=2),
                              z_dim=20, c_dim=4, embed_features=12)
    params = random_params(0, cfg)
    assert params["mapping"]["fc0"]["weight"].shape == (24, 32)  # z and the embedding, concatenated
    assert config_from_params(params, conv_clamp=256) == cfg
    assert StyleGAN2Config.from_dict(cfg.to_dict()) == cfg
    bound = dataclasses.replace(cfg, label=3)
    assert bound.to_dict()["label"] == 3 and StyleGAN2Config.from_dict(bound.to_dict()) == bound
    assert set(expected_shapes(cfg)) - set(expected_shapes(dataclasses.replace(cfg, c_dim=0, embed_features=0))) \
        == {"mapping.embed.weight", "mapping.embed.bias", "mapping.class_w_avg"}


@pytest.mark.parametrize("resolution", [4, 8, 64])
def test_any_power_of_two_resolution(resolution):
    cfg = ffhq_config(resolution, channel_base=256, channel_max=16, w_dim=16, mapping_layers=1)
    g = StyleGAN2(cfg, random_params(0, cfg))
    ws = mapping(g, jnp.asarray(np.random.RandomState(1).randn(2, cfg.z_dim), jnp.float32), 1.0)
    assert ws.shape == (2, cfg.num_ws, 16)
    img = synth(g, ws, "none")
    assert img.shape == (2, resolution, resolution, 3) and bool(jnp.isfinite(img).all())


def test_bf16_path_close_to_fp32(golden_p2, generator_p2):
    ws = jnp.asarray(golden_p2["ws_in"])
    ref = synth(generator_p2, ws, "const")
    low = jax.jit(lambda g, ws: g.synthesis(ws, dtype=jnp.bfloat16))(generator_p2, ws)
    assert low.dtype == jnp.float32
    rel = float(jnp.abs(low - ref).max() / jnp.abs(ref).max())
    assert rel < 0.05, rel


def test_state_dict_errors_name_the_keys(golden_p1):
    state = golden_state(golden_p1)
    missing = dict(state)
    del missing["synthesis.b8.conv0.affine.bias"]
    with pytest.raises(CheckpointError, match=r"missing: synthesis\.b8\.conv0\.affine\.bias"):
        stylegan2_from_nvidia(missing)
    extra = dict(state, **{"synthesis.b8.conv0.extra": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match=r"unexpected: synthesis\.b8\.conv0\.extra"):
        stylegan2_from_nvidia(extra)
    wrong = dict(state, **{"synthesis.b16.conv0.bias": np.zeros(7, np.float32)})
    with pytest.raises(CheckpointError, match=r"wrong shape: synthesis\.b16\.conv0\.bias \(7,\)"):
        stylegan2_from_nvidia(wrong)
    bad_fir = dict(state, **{"synthesis.b8.resample_filter": np.ones((4, 4), np.float32)})
    with pytest.raises(CheckpointError, match="FIR"):
        stylegan2_from_nvidia(bad_fir)
    resnet = dict(state, **{"synthesis.b8.skip.weight": np.zeros((64, 64, 1, 1), np.float32)})
    with pytest.raises(CheckpointError, match="resnet"):
        stylegan2_from_nvidia(resnet)
    orig = {k: v for k, v in state.items() if not k.startswith("synthesis.b4.torgb")}
    with pytest.raises(CheckpointError, match="orig"):
        stylegan2_from_nvidia(orig)
    with pytest.raises(CheckpointError, match="not a StyleGAN2"):
        stylegan2_from_nvidia({"foo": np.zeros(3)})


def test_expected_shapes_cover_the_official_state_dict(golden_p2, generator_p2):
    official = {k for k in golden_state(golden_p2) if not k.endswith("resample_filter")}
    assert set(expected_shapes(generator_p2.config)) == official


def test_wrong_ws_shape_is_a_clear_error(generator_p1):
    with pytest.raises(ConfigError, match=r"ws must have shape \[N, 8, 64\]"):
        generator_p1.synthesis(jnp.zeros((1, 7, 64)))
    with pytest.raises(ConfigError, match="no synthesis block"):
        generator_p1.features(jnp.zeros((1, 8, 64)), resolutions=(12,))


def test_remat_gives_the_same_gradients(golden_p1, generator_p1):
    ws = jnp.asarray(golden_p1["ws_in"][:2])
    grad = lambda remat: jax.jit(jax.grad(lambda w: jnp.sum(generator_p1.synthesis(w, remat=remat) ** 2)))(ws)
    plain, remat = grad(False), grad(True)
    assert float(jnp.abs(plain).max()) > 0
    np.testing.assert_allclose(remat, plain, rtol=0, atol=1e-5 * float(jnp.abs(plain).max()))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_prepared_weights_give_the_same_images(golden_p2, generator_p2, dtype):
    """prepare() moves weight-only work out of synthesis; the maths is unchanged, so images agree to
    fp32 rounding (bf16: to the rounding of the same bf16 kernels), and NVIDIA parity still holds."""
    ws = jnp.asarray(golden_p2["ws_in"])
    run = jax.jit(lambda g, ws: g.synthesis(ws, dtype=dtype))
    plain, prepared = run(generator_p2, ws), run(generator_p2.prepare(dtype), ws)
    scale = float(jnp.abs(plain).max())
    np.testing.assert_allclose(prepared, plain, rtol=0, atol=(1e-6 if dtype == jnp.float32 else 2e-2) * scale)
    if dtype == jnp.float32:
        assert np.abs(nchw(prepared) - golden_p2["img_const"]).max() <= IMG_TOL
    # kernels prepared for another dtype are not used (they would silently change the precision)
    other = generator_p2.prepare(jnp.bfloat16 if dtype == jnp.float32 else jnp.float32)
    np.testing.assert_allclose(run(other, ws), plain, rtol=0, atol=1e-6 * scale)
