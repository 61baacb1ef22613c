"""How segment masks combine the segment images (paper eq. 1 and 3), and how the composite is compared
with a grey target (in luminance)."""

from __future__ import annotations

import jax.numpy as jnp


def composite(segment_images, segment_masks, target=None, static_mask=None):
    """Paper eq. 1 and 3: sum_i G(X_i) S_i, with the static region S^X taken from the target."""
    out = jnp.sum(segment_images * segment_masks[..., None], axis=-4)
    if static_mask is not None:
        sx = static_mask[..., None]
        out = sx * target + (1.0 - sx) * out
    return out


LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's mode L and align.as_mode


def luminance_where_grey(images, targets):
    """images [B, H, W, 3] with each image whose target has three equal channels replaced by its
    luminance in all three (the others unchanged), so that a grey target is compared in grey."""
    grey = jnp.all((targets[..., :1] == targets[..., 1:]), axis=(1, 2, 3))[:, None, None, None]
    luma = jnp.sum(images * jnp.asarray(LUMA, images.dtype), axis=-1, keepdims=True)
    return jnp.where(grey, jnp.broadcast_to(luma, images.shape), images)
