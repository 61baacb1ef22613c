"""Sheets to look at: images laid out in rows and columns with text labels, small images enlarged by
nearest neighbour (a 64 px tile becomes 128 px), and a map of the pixels an edit changed."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_TILE = 128  # smaller images are enlarged by an integer factor to at least this size
GAP = 2  # pixels between tiles
LABEL_HEIGHT = 16
BACKGROUND = 255


def enlarge(image: np.ndarray, min_size: int = MIN_TILE) -> np.ndarray:
    """uint8 [H, W, 3] -> repeated by the smallest integer factor that makes it at least `min_size`."""
    f = max(1, -(-min_size // max(image.shape[:2])))
    return np.repeat(np.repeat(image, f, axis=0), f, axis=1)


def changed_pixels(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] images -> uint8 grey map of |after - before| (mean over channels): black where
    nothing changed, white at the largest change (a change of at least 16 levels counts as full)."""
    diff = np.abs(after.astype(np.float32) - before.astype(np.float32)).mean(axis=2)
    scale = max(float(diff.max()), 16.0)
    grey = np.round(255.0 * diff / scale).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _text_size(draw, text, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _centred(draw, text, x, y, font) -> None:
    """Draw `text` centred on (x, y) (no anchors: they need a FreeType font)."""
    tw, th = _text_size(draw, text, font)
    draw.text((x - tw // 2, y - th // 2 - 1), text, fill=(0, 0, 0), font=font)


def tile_sheet(rows, col_labels=None, row_labels=None, min_tile: int = MIN_TILE) -> np.ndarray:
    """rows: a list of rows, each a list of uint8 [H, W, 3] images of one size -> one uint8 sheet, with
    `col_labels` above the columns and `row_labels` left of the rows (either may be None)."""
    tiles = [[enlarge(np.asarray(im, np.uint8), min_tile) for im in row] for row in rows]
    h, w = tiles[0][0].shape[:2]
    ncols = max(len(r) for r in tiles)
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = 0 if not row_labels else 8 + max(_text_size(probe, str(t), font)[0] for t in row_labels)
    top = LABEL_HEIGHT if col_labels else 0
    sheet = Image.new("RGB", (left + ncols * (w + GAP) - GAP, top + len(tiles) * (h + GAP) - GAP),
                      (BACKGROUND,) * 3)
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(tiles):
        y = top + i * (h + GAP)
        for j, tile in enumerate(row):
            sheet.paste(Image.fromarray(tile), (left + j * (w + GAP), y))
        if row_labels:
            _centred(draw, str(row_labels[i]), left // 2, y + h // 2, font)
    for j, text in enumerate(col_labels or ()):
        x = left + j * (w + GAP) + w // 2
        _centred(draw, str(text), x, LABEL_HEIGHT // 2, font)
    return np.asarray(sheet)
