"""Poisson (gradient-domain) blending of a source image into a destination (Perez et al. 2003), in JAX.

Inside the domain Omega the result u solves the discrete Poisson equation with the source's gradients as
guidance and the destination as Dirichlet boundary (4-neighbourhood, one equation per pixel p in Omega):

    4 u_p - sum_{q in N(p), q in Omega} u_q = sum_{q in N(p), q not in Omega} dst_q + sum_{q in N(p)} v_pq

with v_pq = src_p - src_q (plain cloning) or, with mixed=True, whichever of src_p - src_q and
dst_p - dst_q is larger in magnitude (mixed gradients). Outside Omega, u = dst exactly.

Omega = (mask > 0.5) minus the outermost ring of image pixels: the image border always belongs to the
boundary, so every connected piece of Omega touches a Dirichlet pixel and the system is symmetric positive
definite for any mask (a mask that covers the whole image blends against the destination's border).

The system is solved per channel in float32 by conjugate gradients (`jax.scipy.sparse.linalg.cg`) on the
matrix-free masked Laplacian, then refined on the true residual (one pass of iterative refinement) so
that float32 rounding in CG's recursive residual does not limit the accuracy. Everything is traceable:
`jax.jit(poisson_blend)` runs on the accelerator; channels are solved as one vmapped batch.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.sparse.linalg import cg

from .errors import ImageError

__all__ = ["poisson_blend", "poisson_domain"]


def _neighbours(x):
    """The 4 neighbours of every pixel of [H, W] (zero beyond the image): up, down, left, right."""
    p = jnp.pad(x, 1)
    return (p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:])


def poisson_domain(mask) -> jax.Array:
    """The unknown pixels: mask > 0.5, without the image's outermost ring. bool [H, W]."""
    mask = jnp.asarray(mask)
    h, w = mask.shape
    interior = np.zeros((h, w), bool)
    interior[1:-1, 1:-1] = True
    return (mask > 0.5) & interior


def _solve_channel(src, dst, inside, mixed, tol, maxiter, refinements):
    insidef = inside.astype(jnp.float32)

    def laplacian(x):  # SPD: the masked Laplacian on Omega, identity elsewhere
        nb = sum(_neighbours(x * insidef))
        return jnp.where(inside, 4.0 * x - nb, x)

    guidance = jnp.zeros_like(src)
    for gq, fq, in_q in zip(_neighbours(src), _neighbours(dst), _neighbours(insidef)):
        v = src - gq
        if mixed:
            df = dst - fq
            v = jnp.where(jnp.abs(df) > jnp.abs(v), df, v)
        guidance = guidance + v + (1.0 - in_q) * fq  # the boundary term is zero for neighbours in Omega
    b = jnp.where(inside, guidance, 0.0)

    x = jnp.where(inside, src, 0.0)  # the source itself is a good first guess
    for _ in range(1 + refinements):
        r = b - laplacian(x)
        d, _ = cg(laplacian, r, tol=tol, atol=0.0, maxiter=maxiter)
        x = x + jnp.where(inside, d, 0.0)
    return jnp.where(inside, x, dst)


def poisson_blend(source, destination, mask, *, mixed: bool = False, tol: float = 1e-6,
                  maxiter: int | None = None, refinements: int = 1) -> jax.Array:
    """Blend `source` into `destination` where `mask` > 0.5, keeping the source's gradients.

    source, destination: [H, W, C] or [H, W] float (any range; images are [-1, 1] here).
    mask: [H, W]; pixels > 0.5 are solved for, all others (and the image border) stay `destination`.
    mixed: use mixed gradients (keep the destination's gradient where it is stronger).
    tol: CG stopping rule, residual norm <= tol * norm of the right-hand side.
    maxiter: CG iterations per solve (default 4 * (H + W) + 100, ample for the 5-point Laplacian).
    refinements: extra CG solves on the recomputed true residual.
    Returns float32 of the destination's shape.
    """
    src = jnp.asarray(source, jnp.float32)
    dst = jnp.asarray(destination, jnp.float32)
    if src.shape != dst.shape:
        raise ImageError(f"source {src.shape} and destination {dst.shape} must have the same shape")
    if dst.ndim not in (2, 3):
        raise ImageError(f"images must be [H, W] or [H, W, C], got shape {dst.shape}")
    if jnp.shape(mask) != dst.shape[:2]:
        raise ImageError(f"mask must be {dst.shape[:2]}, got {jnp.shape(mask)}")
    if not (isinstance(refinements, (int, np.integer)) and refinements >= 0):
        raise ImageError(f"refinements must be an integer >= 0, got {refinements!r}")
    h, w = dst.shape[:2]
    maxiter = int(maxiter) if maxiter is not None else 4 * (h + w) + 100
    squeeze = dst.ndim == 2
    if squeeze:
        src, dst = src[..., None], dst[..., None]
    out = _blend(src, dst, jnp.asarray(mask), bool(mixed), float(tol), maxiter, int(refinements))
    return out[..., 0] if squeeze else out


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6))
def _blend(src, dst, mask, mixed, tol, maxiter, refinements):
    inside = poisson_domain(mask)
    solve = jax.vmap(lambda g, f: _solve_channel(g, f, inside, mixed, tol, maxiter, refinements),
                     in_axes=(2, 2), out_axes=2)
    return solve(src, dst)
