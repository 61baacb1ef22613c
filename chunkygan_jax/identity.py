"""An identity distance between a face and its reconstruction, as a stand-in for the paper's ArcFace.

The paper measures identity as the cosine distance between ArcFace descriptors. No package on the
registries ships ArcFace weights for offline use, so this module uses dlib's face recognition network
instead: a 29-layer ResNet that maps a 150x150 face chip to a 128-D descriptor (99.38% on LFW), with the
cosine distance between descriptors, as in the paper. Numbers from this proxy are comparable with one
another, not with the paper's ArcFace numbers.

How a pair is measured. Both images are FFHQ-aligned faces of the same size (the evaluation's target
and a projection of it). dlib's 5-point shape predictor places the eye corners and the base of the nose
on the target, starting from a fixed box where FFHQ's alignment puts the face (the box dlib's own face
detector returns on FFHQ-aligned faces). The target and every projection are cut to the same face chip
from those points, so the distance measures how the faces look, not where a landmark model put them.
Images smaller than 256 px are first enlarged to 256 px (bicubic).

Models: `dlib_face_recognition_resnet_model_v1.dat` and `shape_predictor_5_face_landmarks.dat` from the
`face-recognition-models` package (0.3.0), run by `dlib-bin` (the `evaluate` extra). Their author
released these model files into the public domain, and the package's licence file is CC0. The same
package also holds a 68-point landmark model whose training data excludes commercial use; it is not
used here. `dlib-bin` and `dlib` install the same module; have only one of them.
Measured on a 2-core machine: loading the models takes 0.7 s, one descriptor about 0.12 s. For scale, on
the test photos aligned to 64 px (256 px): the astronaut and Grace Hopper, two different people, are
0.11 (0.10) apart; the astronaut and a Gaussian blur of it (radius 1/64 of the image) 0.03 (0.05).
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import ConfigError, ImageError

__all__ = ["NAME", "IdentityModel", "cosine_distance"]

NAME = ("identity proxy: cosine distance of dlib's 128-D ResNet face descriptors (face-recognition-models "
        "0.3.0; the paper uses ArcFace)")
CHIP_SIZE = 150       # what the network was trained on
CHIP_PADDING = 0.25   # dlib's default chip padding
MIN_SIZE = 256        # smaller images are enlarged to this before landmarks and chips
FACE_BOX = (0.23, 0.35, 0.77, 0.89)  # left, top, right, bottom as fractions of an FFHQ-aligned image

_lock = threading.Lock()
_models = {}


def _load():
    with _lock:
        if not _models:
            try:
                import dlib
            except ImportError as e:
                raise ConfigError("the identity distance needs the 'evaluate' extra: pip install "
                                  f"'chunkygan_jax[evaluate]' (dlib-bin, face-recognition-models), or "
                                  f"--noidentity; {e}") from None
            # find the model files without importing the package (its __init__ needs pkg_resources)
            spec = importlib.util.find_spec("face_recognition_models")
            folder = Path(list(spec.submodule_search_locations)[0]) / "models" if spec else None
            files = {k: folder / f"{k}.dat" if folder else None for k in
                     ("dlib_face_recognition_resnet_model_v1", "shape_predictor_5_face_landmarks")}
            if any(f is None or not f.is_file() for f in files.values()):
                raise ConfigError("the identity distance needs the model files of 'face-recognition-models': "
                                  "pip install 'chunkygan_jax[evaluate]', or --noidentity")
            _models["dlib"] = dlib
            _models["net"] = dlib.face_recognition_model_v1(str(files["dlib_face_recognition_resnet_model_v1"]))
            _models["points"] = dlib.shape_predictor(str(files["shape_predictor_5_face_landmarks"]))
        return _models


def _uint8(image) -> np.ndarray:
    """uint8 [H, W, 3], or float [H, W, 3] in [-1, 1] -> uint8 [S, S, 3] with S >= MIN_SIZE."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.shape[0] != arr.shape[1]:
        raise ImageError(f"identity: expected a square [H, W, 3] image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.round((arr.astype(np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    if arr.shape[0] < MIN_SIZE:
        arr = np.asarray(Image.fromarray(arr).resize((MIN_SIZE, MIN_SIZE), Image.Resampling.BICUBIC))
    return np.ascontiguousarray(arr)


def cosine_distance(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(1.0 - a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


class IdentityModel:
    """`distances(target, images)`: the identity distance of each image to the target (lower = closer)."""

    name = NAME

    def __init__(self):
        self._m = _load()

    def _points(self, target: np.ndarray):
        s = target.shape[0]
        box = self._m["dlib"].rectangle(*(int(round(f * s)) for f in FACE_BOX))
        with _lock:
            return self._m["points"](target, box)

    def _descriptor(self, image: np.ndarray, points) -> np.ndarray:
        with _lock:
            chip = self._m["dlib"].get_face_chip(image, points, size=CHIP_SIZE, padding=CHIP_PADDING)
            return np.asarray(self._m["net"].compute_face_descriptor(chip), np.float64)

    def descriptors(self, target, images) -> tuple[np.ndarray, list[np.ndarray]]:
        """The target's descriptor and each image's, all cut with the target's landmarks."""
        target = _uint8(target)
        points = self._points(target)
        out = []
        for img in images:
            img = _uint8(img)
            if img.shape != target.shape:
                raise ImageError(f"identity: image is {img.shape[1]} px, the target {target.shape[1]} px")
            out.append(self._descriptor(img, points))
        return self._descriptor(target, points), out

    def distances(self, target, images) -> list[float]:
        t, ds = self.descriptors(target, images)
        return [cosine_distance(t, d) for d in ds]
