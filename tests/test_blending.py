"""Poisson blending: the JAX CG solve equals a direct sparse solve of the same equations (scipy), the
outside and the image border keep the destination, and it removes a colour shift of the source."""

import jax
import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg

from chunkygan_jax.blending import poisson_blend, poisson_domain
from chunkygan_jax.errors import ImageError

OFFSETS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def direct_solve(src, dst, mask, mixed=False):
    """Perez et al.'s discrete equations, assembled independently and solved with spsolve (float64):
    for p in Omega: 4 u_p - sum_{q in Omega} u_q = sum_{q not in Omega} dst_q + sum_q v_pq."""
    h, w, c = dst.shape
    inside = mask > 0.5
    inside[0, :] = inside[-1, :] = inside[:, 0] = inside[:, -1] = False  # the border is boundary
    pts = np.argwhere(inside)
    index = -np.ones((h, w), int)
    index[inside] = np.arange(len(pts))
    rows, cols, vals = [], [], []
    for k, (y, x) in enumerate(pts):
        rows.append(k), cols.append(k), vals.append(4.0)
        for dy, dx in OFFSETS:
            if inside[y + dy, x + dx]:
                rows.append(k), cols.append(index[y + dy, x + dx]), vals.append(-1.0)
    a = scipy.sparse.csc_matrix((vals, (rows, cols)), shape=(len(pts), len(pts)))
    out = dst.astype(np.float64).copy()
    for ch in range(c):
        g, f = src[..., ch].astype(np.float64), dst[..., ch].astype(np.float64)
        b = np.zeros(len(pts))
        for k, (y, x) in enumerate(pts):
            for dy, dx in OFFSETS:
                qy, qx = y + dy, x + dx
                v = g[y, x] - g[qy, qx]
                if mixed and abs(f[y, x] - f[qy, qx]) > abs(v):
                    v = f[y, x] - f[qy, qx]
                b[k] += v + (0.0 if inside[qy, qx] else f[qy, qx])
        out[..., ch][inside] = scipy.sparse.linalg.spsolve(a, b)
    return out, inside


@pytest.mark.parametrize("mixed", [False, True])
def test_equals_direct_sparse_solve(mixed):
    rng = np.random.RandomState(7)
    src = rng.uniform(-1, 1, (12, 12, 3)).astype(np.float32)
    dst = rng.uniform(-1, 1, (12, 12, 3)).astype(np.float32)
    mask = (rng.uniform(size=(12, 12)) > 0.35).astype(np.float32)
    ref, inside = direct_solve(src, dst, mask, mixed)
    out = np.asarray(poisson_blend(src, dst, mask, mixed=mixed))
    diff = np.abs(out - ref).max()
    print(f"poisson 12x12 mixed={mixed}: max |CG - spsolve| = {diff:.2e} over {inside.sum()} unknowns")
    assert diff <= 1e-4
    assert inside.sum() > 30 and np.abs(out - dst)[inside].max() > 0.1  # the solve did something
    np.testing.assert_array_equal(out[~inside], dst[~inside])  # outside and border: the destination
    np.testing.assert_array_equal(np.asarray(poisson_domain(mask)), inside)


def test_greyscale_soft_mask_under_jit():
    rng = np.random.RandomState(1)
    src = rng.uniform(-1, 1, (40, 33)).astype(np.float32)
    dst = rng.uniform(-1, 1, (40, 33)).astype(np.float32)
    yy, xx = np.mgrid[:40, :33]
    mask = np.clip(1.5 - np.hypot(yy - 20, xx - 15) / 10, 0, 1).astype(np.float32)  # soft disc
    ref, inside = direct_solve(src[..., None], dst[..., None], mask)
    out = np.asarray(jax.jit(poisson_blend)(src, dst, mask))
    assert out.shape == dst.shape
    assert np.abs(out - ref[..., 0]).max() <= 1e-4
    np.testing.assert_array_equal(out[~inside], dst[~inside])


def test_removes_a_colour_shift_even_over_the_whole_image():
    """A source that is the destination plus a constant has the destination's gradients: cloning it
    anywhere (even over the whole image, against the border) gives back the destination."""
    rng = np.random.RandomState(2)
    dst = rng.uniform(-1, 1, (12, 12, 3)).astype(np.float32)
    out = np.asarray(poisson_blend(dst + 0.3, dst, np.ones((12, 12), np.float32)))
    np.testing.assert_allclose(out, dst, atol=1e-5)


def test_empty_mask_returns_the_destination():
    rng = np.random.RandomState(3)
    src, dst = rng.uniform(-1, 1, (2, 12, 12, 3)).astype(np.float32)
    out = np.asarray(poisson_blend(src, dst, np.zeros((12, 12))))
    np.testing.assert_array_equal(out, dst)


def test_bad_shapes_are_refused():
    a = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(ImageError, match="same shape"):
        poisson_blend(a, np.zeros((8, 9, 3), np.float32), np.ones((8, 8)))
    with pytest.raises(ImageError, match="mask"):
        poisson_blend(a, a, np.ones((8, 9)))
    with pytest.raises(ImageError, match="images must be"):
        poisson_blend(np.zeros(8), np.zeros(8), np.ones((8,)))
