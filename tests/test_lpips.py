"""Tests of chunkygan_jax.lpips against the published LPIPS v0.1 values and basic invariants."""

import os
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from chunkygan_jax.errors import CheckpointError, ConfigError, ImageError
from chunkygan_jax.lpips import (LPIPS, _max_pool, _normalize, load_lpips, load_weight_pickle, parse_resolution,
                                 resize_for_lpips)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "lpips"

# Published by the LPIPS authors for their example images (lpips_2imgs.py, v0.1).
PUBLISHED = {
    "alex": {"ex_p0.png": 0.722, "ex_p1.png": 0.138},
    "vgg": {"ex_p0.png": 0.569, "ex_p1.png": 0.422},
}


def _load_png(name: str) -> jnp.ndarray:
    img = np.asarray(Image.open(SHARED / name).convert("RGB"), np.float32)
    return jnp.asarray(img[None] / 127.5 - 1.0)


@pytest.fixture(scope="module")
def nets() -> dict[str, LPIPS]:
    return {"vgg": load_lpips("vgg"), "alex": load_lpips("alex")}


def _rand(key: int, shape) -> jnp.ndarray:
    return jax.random.uniform(jax.random.PRNGKey(key), shape, minval=-1.0, maxval=1.0)


# One jitted entry point reused by all tests: LPIPS is a pytree argument (params traced,
# net/compute_dtype static), so each (net, shape) compiles once. Compiling is far cheaper on
# CPU than running the nets op by op, and it checks that the object works under jit.
_dist = jax.jit(lambda m, a, b: m(a, b))


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared LPIPS example images not available")
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_published_values(nets, net):
    ref = _load_png("ex_ref.png")
    for name, expected in PUBLISHED[net].items():
        d = float(_dist(nets[net], ref, _load_png(name))[0])
        assert abs(d - expected) < 0.0015, (net, name, d, expected)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_identical_is_zero_and_symmetric(nets, net):
    lp = nets[net]
    x, y = _rand(0, (2, 64, 64, 3)), _rand(1, (2, 64, 64, 3))
    np.testing.assert_allclose(np.asarray(_dist(lp, x, x)), 0.0, atol=1e-7)
    dxy = np.asarray(_dist(lp, x, y))
    np.testing.assert_allclose(dxy, np.asarray(_dist(lp, y, x)), rtol=1e-6, atol=1e-7)
    assert dxy.shape == (2,) and (dxy > 0).all()


def test_batch_equals_pairwise_and_broadcast(nets):
    lp = nets["alex"]
    x, y = _rand(2, (2, 64, 64, 3)), _rand(3, (2, 64, 64, 3))
    batch = np.asarray(_dist(lp, x, y))
    pairs = np.array([float(_dist(lp, x[i : i + 1], y[i : i + 1])[0]) for i in range(2)])
    np.testing.assert_allclose(batch, pairs, rtol=1e-5, atol=1e-6)
    # Precomputed target features (batch 1) broadcast against a batch of candidates.
    fy0 = lp.features(y[:1])
    bc = np.asarray(lp.distance_from_features(lp.features(x), fy0))
    np.testing.assert_allclose(bc, np.asarray(_dist(lp, x, jnp.broadcast_to(y[:1], x.shape))), rtol=1e-5)


def test_odd_size(nets):
    lp = nets["vgg"]
    x, y = _rand(4, (1, 67, 45, 3)), _rand(5, (1, 67, 45, 3))
    d = np.asarray(_dist(lp, x, y))
    assert d.shape == (1,) and np.isfinite(d).all() and d[0] > 0
    # Params are the pytree leaves: 13 convs (kernel + bias) and 5 lin vectors.
    assert len(jax.tree_util.tree_leaves(lp)) == 13 * 2 + 5


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_gradients_finite_and_nonzero(nets, net):
    lp = nets[net]
    x, y = _rand(6, (1, 64, 64, 3)), _rand(7, (1, 64, 64, 3))
    fy = lp.features(y)  # target features computed once, as in an inversion
    loss = lambda m, a, f: m.distance_from_features(m.features(a), f).sum()  # noqa: E731
    g = np.asarray(jax.jit(jax.grad(loss, argnums=1))(lp, x, fy))
    assert np.isfinite(g).all()
    assert np.abs(g).max() > 0


def test_normalize_gradient_at_all_zero_pixel():
    # After a ReLU a whole pixel can be exactly 0; a naive sqrt(sum f^2) gives NaN gradients.
    f = jnp.zeros((1, 2, 1, 4)).at[0, 0, 0].set(jnp.array([1.0, 2.0, 0.0, 2.0]))
    out = _normalize(f)
    np.testing.assert_allclose(np.asarray(out[0, 0, 0]), [1 / 3, 2 / 3, 0, 2 / 3], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(out[0, 1, 0]), 0.0)
    g = jax.grad(lambda a: jnp.sum(_normalize(a) * jnp.arange(4.0)))(f)
    assert np.isfinite(np.asarray(g)).all()


def test_bfloat16_close_to_float32(nets):
    lp16 = load_lpips("alex", compute_dtype=jnp.bfloat16)
    x, y = _load_png("ex_ref.png"), _load_png("ex_p1.png")
    d16 = _dist(lp16, x, y)
    assert d16.dtype == jnp.float32
    assert abs(float(d16[0]) - float(_dist(nets["alex"], x, y)[0])) < 0.01


def test_input_errors(nets):
    lp = nets["alex"]
    x = _rand(8, (1, 40, 40, 3))
    with pytest.raises(ImageError):
        lp(x[..., :1], x[..., :1])  # one channel
    with pytest.raises(ImageError):
        lp(jnp.zeros((1, 40, 40, 4)), jnp.zeros((1, 40, 40, 4)))  # RGBA
    with pytest.raises(ImageError):
        lp(x[0], x[0])  # rank 3
    with pytest.raises(ImageError):
        lp.features(jnp.zeros((1, 3, 40, 40)))  # NCHW by mistake
    with pytest.raises(ImageError):
        lp(x, _rand(9, (1, 48, 40, 3)))  # mismatched sizes
    with pytest.raises(ImageError):
        lp(jnp.zeros((1, 20, 20, 3)), jnp.zeros((1, 20, 20, 3)))  # too small for AlexNet
    with pytest.raises(ImageError):
        lp(jnp.zeros((1, 40, 40, 3), jnp.uint8), jnp.zeros((1, 40, 40, 3), jnp.uint8))
    with pytest.raises(ConfigError):
        load_lpips("squeeze")
    with pytest.raises(ConfigError):
        load_lpips("vgg", compute_dtype=jnp.int32)


class _Exploit:
    """Pickles as a call to os.system (only serialised here, never unpickled unsafely)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit(marker), protocol=3)
    assert b"system" in payload
    with pytest.raises(CheckpointError, match="forbidden global"):
        load_weight_pickle(payload)
    path = tmp_path / "evil.ckpt"
    path.write_bytes(payload)
    with pytest.raises(CheckpointError):
        load_weight_pickle(path)
    assert not marker.exists()
    # Plain numpy arrays in dicts still load.
    ok = load_weight_pickle(pickle.dumps({"a": {"k": np.arange(6, dtype=np.float32)}}))
    np.testing.assert_array_equal(ok["a"]["k"], np.arange(6))
    with pytest.raises(CheckpointError):
        load_weight_pickle(tmp_path / "missing.ckpt")


def test_resize_for_lpips():
    x = _rand(10, (2, 512, 512, 3))
    y = resize_for_lpips(x, 256)
    assert y.shape == (2, 256, 256, 3)
    np.testing.assert_allclose(
        np.asarray(y), np.asarray(x).reshape(2, 256, 2, 256, 2, 3).mean(axis=(2, 4)), atol=1e-6
    )
    assert resize_for_lpips(x, 512) is x  # never upsample / no-op at the target size
    assert resize_for_lpips(x, "full") is x and resize_for_lpips(x, None) is x
    # Non-square, integer factor keeps the aspect ratio.
    assert resize_for_lpips(jnp.zeros((1, 1024, 512, 3)), 256).shape == (1, 256, 128, 3)
    # Non-integer factor: torch-style area average; a constant image stays constant.
    z = resize_for_lpips(jnp.full((1, 300, 300, 3), 0.25), 256)
    assert z.shape == (1, 256, 256, 3)
    np.testing.assert_allclose(np.asarray(z), 0.25, atol=1e-6)
    with pytest.raises(ConfigError):
        resize_for_lpips(x, 0)
    with pytest.raises(ConfigError, match=">= 16"):  # below what any backbone accepts, like bin/invert
        parse_resolution("15")
    assert parse_resolution("16") == 16 and parse_resolution(None) == "full"
    with pytest.raises(ConfigError):
        resize_for_lpips(x, "half")
    with pytest.raises(ImageError):
        resize_for_lpips(x[0], 256)


@pytest.mark.parametrize("k,s", [(2, 2), (3, 2)])
def test_max_pool_matches_reduce_window_values_and_gradients(k, s):
    """VGG's 2x2/2 pool is a reshape and a max (faster backward on CPUs); odd sizes floor like torch.
    Values are identical; gradients agree wherever the window maximum is unique (random input)."""
    x = jnp.asarray(np.random.RandomState(0).randn(2, 11, 14, 5), jnp.float32)
    ref = lambda h: jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, s, s, 1), "VALID")
    np.testing.assert_array_equal(_max_pool(x, k, s), ref(x))
    weights = jnp.asarray(np.random.RandomState(1).randn(*ref(x).shape), jnp.float32)
    grad = lambda f: jax.grad(lambda h: jnp.sum(f(h) * weights))(x)
    np.testing.assert_allclose(grad(lambda h: _max_pool(h, k, s)), grad(ref), rtol=0, atol=1e-6)
