"""Real face photographs that ship inside packages of the dev extra (never downloaded at run time).

- astronaut.png (scikit-image, 512x512): Eileen Collins, NASA portrait; public domain (a work of
  the US federal government; scikit-image: "No known copyright restrictions, released into the
  public domain").
- grace_hopper.jpg (matplotlib sample data, 512x600): Commodore Grace M. Hopper, official US Navy
  portrait; public domain (a work of the US federal government).
- camera.png (scikit-image, 512x512, greyscale): a man filming, his face in profile; CC0 by the
  photographer, Lav Varshney.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


ROOT = Path(__file__).resolve().parents[1]


def run_tool(tool, *args):
    """bin/<tool> with these arguments in a subprocess on the CPU (output captured as text)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(ROOT / "bin" / tool), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=600)


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"the test photos come from the '{package}' package: pip install -e '.[dev]'")
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    if not path.is_file():
        pytest.fail(f"{path} is missing from the installed '{package}' package")
    return path


def astronaut() -> Path:
    return _package_file("skimage", "data", "astronaut.png")


def grace_hopper() -> Path:
    return _package_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg")


def camera() -> Path:
    return _package_file("skimage", "data", "camera.png")


def outside_quad(quad, h, w, margin):
    """Pixels farther than `margin` px outside an alignment quad (a convex polygon): where a paste-back
    must leave the photo untouched."""
    ys, xs = np.mgrid[0:h, 0:w].astype(float)
    dist = np.full((h, w), -np.inf)
    centre = quad.mean(0)
    for a, b in zip(quad, np.roll(quad, -1, axis=0)):
        n = np.array([b[1] - a[1], a[0] - b[0]]) / np.hypot(*(b - a))
        if (centre - a) @ n > 0:
            n = -n  # the outward normal
        dist = np.maximum(dist, (xs - a[0]) * n[0] + (ys - a[1]) * n[1])
    return dist > margin


# Each portrait's face box [x0, y0, x1, y1] in the photo: dlib's frontal detector's box (no upsampling).
_FACE_BOXES = {"astronaut": (179, 83, 267, 171), "grace_hopper": (161, 137, 377, 353)}


def group_photo(width, height, faces, seed=0):
    """A group photo made of the real portraits: `faces` lists each face's width as a fraction of the
    photo's longer side (astronaut and Grace Hopper in turn); each portrait is cut around its face (a
    square 3.2x the face's box), scaled, and placed at a random free spot on a plain background.
    Returns (uint8 [height, width, 3], the true face boxes [x0, y0, x1, y1] in photo pixels)."""
    from PIL import Image

    from chunkygan_jax.align import load_photo

    sources = []
    for name, path in (("astronaut", astronaut()), ("grace_hopper", grace_hopper())):
        x0, y0, x1, y1 = _FACE_BOXES[name]
        half, cx, cy = 1.6 * (x1 - x0), (x0 + x1) / 2, (y0 + y1) / 2
        photo = load_photo(path)
        cut = (max(int(cx - half), 0), max(int(cy - half), 0))
        crop = photo[cut[1]:int(cy + half), cut[0]:int(cx + half)]
        sources.append((crop, (x0 - cut[0], y0 - cut[1], x1 - cut[0], y1 - cut[1])))
    rng = np.random.default_rng(seed)
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = rng.integers(90, 210, 3)
    taken = np.zeros((height, width), bool)
    boxes, longer = [], max(width, height)
    for i, fraction in enumerate(faces):
        crop, box = sources[i % 2]
        scale = fraction * longer / (box[2] - box[0])
        im = np.asarray(Image.fromarray(crop).resize((round(crop.shape[1] * scale), round(crop.shape[0] * scale)),
                                                     Image.LANCZOS))
        h, w = im.shape[:2]
        for _ in range(500):
            x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            if not taken[y:y + h, x:x + w].any():
                break
        else:
            raise ValueError("no free spot for a portrait: a larger photo or fewer faces")
        taken[y:y + h, x:x + w] = True
        canvas[y:y + h, x:x + w] = im
        boxes.append(tuple(v * scale + o for v, o in zip(box, (x, y, x, y))))
    return canvas, boxes
