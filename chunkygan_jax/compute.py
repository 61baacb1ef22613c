"""What a compute dtype means: the one home of the `dtype=` choice of the generators, LPIPS, the
inversion settings and the tools.

  float32   fp32 arrays; convolutions and matrix products at precision HIGHEST (true fp32, no TF32 on
            GPUs: the path that matches NVIDIA's numbers)
  tf32      fp32 arrays; convolutions and matrix products at precision HIGH, JAX's "tensorfloat32":
            TF32 on GPUs that have it (inputs rounded to a 10-bit mantissa, fp32 accumulation), three
            bf16 passes on TPUs. On CPUs it computes exactly what float32 computes.
  bfloat16  bf16 activations and convolution weights at the default precision; images, normalisation
            and losses stay fp32
"""

from __future__ import annotations

import jax
import numpy as np

COMPUTE_DTYPES = ("float32", "tf32", "bfloat16")
TF32 = "tf32"


def resolve(dtype) -> tuple[np.dtype, jax.lax.Precision]:
    """(the dtype arrays are computed in, the precision of convolutions and matrix products) for a
    compute dtype: one of COMPUTE_DTYPES or a floating dtype object (jnp.float32, jnp.bfloat16, ...)."""
    if isinstance(dtype, str) and dtype == TF32:
        return np.dtype(np.float32), jax.lax.Precision.HIGH
    dt = np.dtype(dtype)
    return dt, (jax.lax.Precision.HIGHEST if dt == np.float32 else jax.lax.Precision.DEFAULT)


def storage_dtype(dtype) -> np.dtype:
    return resolve(dtype)[0]
