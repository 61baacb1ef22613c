"""Building blocks of StyleGAN2's synthesis network, NHWC, without depthwise convolutions.

StyleGAN2 resamples with the 4-tap FIR filter [1, 3, 3, 1]. NVIDIA applies it with upfirdn2d (zero
insertion, padding, a 4x4 filter). Here the same linear maps are written in polyphase form:
- 2x upsampling of an image (ToRGB skip path) becomes two 2-tap blends per axis and an interleave;
- the transposed 3x3 convolution followed by the FIR (the `up=2` conv layer) becomes ONE ordinary 3x3
  convolution on the low-resolution input that produces the four output phases as channels, followed by
  depth-to-space. The 3x3 phase kernels are the even/odd taps of the 6x6 kernel w * f.
Both are exact rewrites (only the order of float additions differs) and avoid the depthwise and
dilated convolutions that dominate a straightforward port's step time on accelerators.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

# The StyleGAN2 resampling filter, normalised to sum 1 along each axis.
FIR_1D = np.array([1.0, 3.0, 3.0, 1.0], dtype=np.float64) / 8.0
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def dense(x, weight, bias, *, weight_gain, bias_gain=1.0, precision=None):
    """NVIDIA's FullyConnectedLayer without activation: x @ (W * gain).T + b * bias_gain.

    `weight` keeps the official [out, in] layout so that stored values equal the official tensors.
    """
    w = (weight * weight_gain).astype(x.dtype)
    y = jnp.matmul(x, w.T, precision=precision)
    return y + (bias * bias_gain).astype(x.dtype)


def bias_lrelu_clamp(x, bias, *, gain, clamp):
    """bias_act(act='lrelu'): (leaky_relu(x + b) * sqrt(2) * gain), clamped to +-clamp."""
    x = x + bias.astype(x.dtype)
    x = jnp.where(x >= 0, x, x * LRELU_SLOPE) * (LRELU_GAIN * gain)
    if clamp is not None:
        x = jnp.clip(x, -clamp, clamp)
    return x


def normalize_2nd_moment(x, eps=1e-8):
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


def conv2d(x, kernel_hwio, *, padding, precision):
    return jax.lax.conv_general_dilated(
        x, kernel_hwio, window_strides=(1, 1), padding=padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision)


def _interleave(even, odd, axis):
    """Interleave two equal arrays along `axis`: out[2m] = even[m], out[2m+1] = odd[m]."""
    stacked = jnp.stack([even, odd], axis=axis + 1)
    shape = list(even.shape)
    shape[axis] *= 2
    return stacked.reshape(shape)


def _upsample_axis(x, axis):
    """2x FIR upsampling along one axis (upfirdn2d up=2, pad (2, 1), gain 2 per axis).

    With f = [1, 3, 3, 1] / 4: y[2m] = (x[m-1] + 3 x[m]) / 4 and y[2m+1] = (3 x[m] + x[m+1]) / 4,
    zero beyond the borders.
    """
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (1, 1)
    xp = jnp.pad(x, pad)
    prev = jax.lax.slice_in_dim(xp, 0, n, axis=axis)
    nxt = jax.lax.slice_in_dim(xp, 2, n + 2, axis=axis)
    even = 0.25 * prev + 0.75 * x
    odd = 0.75 * x + 0.25 * nxt
    return _interleave(even, odd, axis)


def upsample_2x(x):
    """NVIDIA's upfirdn2d.upsample2d(x, [1,3,3,1]) on NHWC, separable and exact."""
    return _upsample_axis(_upsample_axis(x, 1), 2)


def _fir_band_matrix() -> np.ndarray:
    """B[a, u] = f[a - u] for the gain-2 FIR, so that (w * f)(full, 6 taps) = B @ w along an axis."""
    f = FIR_1D * 2.0
    band = np.zeros((6, 3))
    for u in range(3):
        band[u:u + 4, u] = f
    return band


# Phase e (output parity) of the fused kernel uses the taps K[4 + e], K[2 + e], K[e], in this order
# (derivation: y[2m + e] = sum_d x[m + d] K[2 (1 - d) + e], d = -1, 0, 1, written as a correlation).
_PHASE_ROWS = np.array([[4, 2, 0], [5, 3, 1]])


def fused_upsample_kernel(weight_oikk):
    """Turn an official [out, in, 3, 3] conv weight into the [3, 3, in, 4*out] polyphase kernel that
    computes transposed-conv(stride 2) followed by the FIR (gain 4) as one 'SAME' convolution.

    Output channel layout: (phase_y, phase_x, out), consumed by `depth_to_space`.
    """
    band = jnp.asarray(_fir_band_matrix(), weight_oikk.dtype)
    # HIGHEST: on GPUs the default fp32 einsum runs in TF32 and would round the weights (1e-3 errors)
    full = jnp.einsum("au,oiuv,bv->oiab", band, weight_oikk, band,
                      precision=jax.lax.Precision.HIGHEST)  # [out, in, 6, 6] = w * f (full)
    rows = jnp.asarray(_PHASE_ROWS)
    # phases[ey, ex, o, i, j, k] = full[o, i, rows[ey, j], rows[ex, k]]
    phases = full[:, :, rows[:, None, :, None], rows[None, :, None, :]]  # [o, i, 2, 2, 3, 3]
    return jnp.transpose(phases, (4, 5, 1, 2, 3, 0)).reshape(
        3, 3, weight_oikk.shape[1], 4 * weight_oikk.shape[0])


def depth_to_space(x, out_channels):
    """[N, H, W, (2, 2, C)] -> [N, 2H, 2W, C] with channel block (ey, ex) going to pixel (2h+ey, 2w+ex)."""
    n, h, w, _ = x.shape
    x = x.reshape(n, h, w, 2, 2, out_channels)
    x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))
    return x.reshape(n, 2 * h, 2 * w, out_channels)


def prepare_conv(weight_oikk, *, up, demodulate, dtype):
    """What `modulated_conv` derives from the weight alone: the kernel in the compute dtype (for up=2
    the fused polyphase kernel) and, with demodulation, the squared weights summed over taps [out, in].
    The weights never change during an inversion, so the caller may compute this once and pass it in."""
    out = {}
    if demodulate:
        out["wsq"] = jnp.sum(jnp.square(weight_oikk.astype(jnp.float32)), axis=(2, 3))
    if up == 1:
        out["kernel"] = jnp.transpose(weight_oikk, (2, 3, 1, 0)).astype(dtype)
    else:
        if weight_oikk.shape[2:] != (3, 3) or up != 2:
            raise ValueError("only 3x3 kernels with 2x upsampling are supported")
        out["kernel"] = fused_upsample_kernel(weight_oikk.astype(jnp.float32)).astype(dtype)
    return out


def modulated_conv(x, weight_oikk, styles, *, demodulate, up, precision, prepared=None):
    """StyleGAN2's modulated convolution as a plain batched convolution.

    Instead of building per-sample kernels (a grouped convolution), the styles scale the input
    activations and the demodulation coefficients scale the output: the same maths, and one shared kernel
    for the whole batch, so all segments and all images run as one convolution.
    prepared: `prepare_conv(weight_oikk, ...)` for x's dtype, or None to derive it here.
    Returns (y, dcoefs); dcoefs is None without demodulation.
    """
    out_channels, _, kh, kw = weight_oikk.shape
    cdtype = x.dtype
    if prepared is None or prepared["kernel"].dtype != cdtype:
        prepared = prepare_conv(weight_oikk, up=up, demodulate=demodulate, dtype=cdtype)
    dcoefs = None
    if demodulate:
        # sum_{i,k} (w[o,i,k] s[n,i])^2 = (s^2) @ (sum_k w^2)^T
        ssq = jnp.square(styles.astype(jnp.float32))
        dcoefs = jax.lax.rsqrt(jnp.matmul(ssq, prepared["wsq"].T, precision=jax.lax.Precision.HIGHEST) + 1e-8)
    x = x * styles.astype(cdtype)[:, None, None, :]
    if up == 1:
        pad = ((kh // 2, kh // 2), (kw // 2, kw // 2))
        y = conv2d(x, prepared["kernel"], padding=pad, precision=precision)
    else:
        y = depth_to_space(conv2d(x, prepared["kernel"], padding=((1, 1), (1, 1)), precision=precision),
                           out_channels)
    return y, dcoefs
