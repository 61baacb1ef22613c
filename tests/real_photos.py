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
from pathlib import Path

import numpy as np
import pytest


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
