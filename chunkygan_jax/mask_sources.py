"""The `masks=` option of invert(), bin/invert and bin/invert_dataset, resolved into a mask source:
a name ('logits', 'layout', 'kmeans'), mask files, an array or label map, or a ready mask source."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from . import io
from .errors import ConfigError, ImageError
from .masks import FixedMasks, default_layout, logit_masks_from, masks_from_labels, normalize_masks
from .segmenter import kmeans_segmenter

MASK_MODES = ("logits", "layout")


def make_mask_source(masks, n: int, resolution: int, *, seed: int = 0, learn: bool | None = None,
                     generator=None):
    """Resolve the `masks=` option of invert():
    - None or "logits": learnable logits starting at the default layout;
    - "layout": the default layout, fixed;
    - "kmeans": the segment generator G^S with the unsupervised k-means head of `generator` (fitted once
      per generator, n and seed, then cached; see segmenter.py), its code X^S learned unless learn=False;
    - an array [n, H, W] (soft or hard) or a label map [H, W]: fixed user masks (normalised),
      learnable if learn=True;
    - any object with init()/masks() (e.g. a segment generator): used as is.
    """
    if hasattr(masks, "init") and hasattr(masks, "masks"):
        return masks
    if n == 1 and (masks is None or isinstance(masks, str)):
        return FixedMasks(jnp.ones((1, resolution, resolution), jnp.float32))
    if isinstance(masks, str) and masks == "kmeans":
        if generator is None:
            raise ConfigError("masks='kmeans' needs the generator (pass generator= to make_mask_source)")
        return kmeans_segmenter(generator, n, seed=seed, frozen=learn is False)
    if masks is None or isinstance(masks, str):
        mode = masks or "logits"
        if mode not in MASK_MODES:
            raise ConfigError(f"masks must be one of {MASK_MODES + ('kmeans',)}, an array or a mask source; "
                              f"got {mode!r}")
        layout = default_layout(n, resolution, seed=seed)
        if mode == "layout" and not learn:
            return FixedMasks(jnp.asarray(layout))
        return logit_masks_from(layout, resolution)
    arr = np.asarray(masks)
    if arr.ndim == 2:
        arr = masks_from_labels(arr, n)
    if arr.ndim != 3 or arr.shape[1:] != (resolution, resolution):
        raise ImageError(f"masks must be [n, {resolution}, {resolution}] or a label map "
                         f"[{resolution}, {resolution}], got {arr.shape}")
    if arr.shape[0] != n:
        raise ConfigError(f"{arr.shape[0]} masks given for {n} segments")
    arr = normalize_masks(arr)
    return logit_masks_from(arr, resolution) if learn else FixedMasks(jnp.asarray(arr))


def parse_mask_spec(spec, segments: int, resolution: int):
    """A command line's --masks value: a mode name stays a name; one PNG is a label map; several
    comma-separated PNGs are one mask per segment."""
    if spec is None or spec in MASK_MODES + ("kmeans",):
        return spec
    paths = [p for p in str(spec).split(",") if p]
    if len(paths) == 1:
        return io.load_label_map(paths[0], resolution)
    if len(paths) != segments:
        raise ConfigError(f"--masks lists {len(paths)} files for --segments={segments}")
    return np.stack([io.load_mask(p, resolution) for p in paths])
