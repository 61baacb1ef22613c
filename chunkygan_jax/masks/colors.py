"""How masks are shown: one colour per segment (`palette`), soft masks as a colour-coded image
(`color_code`)."""

from __future__ import annotations

import numpy as np

from .sources import GOLDEN


def palette(n: int) -> np.ndarray:
    """The colour of each segment in `color_code`: float [n, 3] in [0, 1] (golden-ratio hue steps)."""
    hues = (np.arange(n) * GOLDEN) % 1.0
    return np.stack([_hsv_to_rgb(h, 0.75, 0.95) for h in hues]).reshape(n, 3)


def color_code(masks: np.ndarray) -> np.ndarray:
    """Soft masks [n, H, W] -> uint8 [H, W, 3] visualisation (mask-weighted palette colours)."""
    rgb = np.einsum("nhw,nc->hwc", np.asarray(masks, np.float64), palette(masks.shape[0]))
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _hsv_to_rgb(h, s, v):
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])
