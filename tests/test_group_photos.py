"""Group photos: every face found (at least dlib's frontal detector's count, faces down to 1/20 of the
photo's longer side), on group photos made of the real portraits with the true face boxes known."""

import time

import numpy as np
import pytest

from chunkygan_jax import align as A

from real_photos import astronaut, group_photo

# (width, height, face widths as fractions of the longer side, seed)
GROUPS = [(1280, 886, [1 / 20, 1 / 16, 1 / 12, 1 / 20, 1 / 14, 1 / 18], 0),
          (1000, 1500, [1 / 20, 1 / 20, 1 / 20, 1 / 20, 1 / 16], 3),
          (1200, 800, [1 / 20] * 8, 4)]


def matches(box, truth):
    """Index of the true face whose box holds the centre of `box` (None: no face there)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    for i, (x0, y0, x1, y1) in enumerate(truth):
        if x0 <= cx <= x1 and y0 <= cy <= y1:
            return i
    return None


@pytest.mark.parametrize("width,height,faces,seed", GROUPS)
def test_every_face_found_at_least_dlibs(width, height, faces, seed):
    dlib = pytest.importorskip("dlib")
    photo, truth = group_photo(width, height, faces, seed)
    found = A.detect_faces(photo)
    hits = [matches(f.box, truth) for f in found]
    assert None not in hits, "a detection where there is no face"
    assert sorted(hits) == list(range(len(truth))), f"found faces {sorted(hits)} of {len(truth)}"
    theirs = {matches((r.left(), r.top(), r.right() + 1, r.bottom() + 1), truth)
              for r in dlib.get_frontal_face_detector()(photo, 1)} - {None}
    assert len(found) >= len(theirs)
    # ordered left to right, each box about the true face's size
    centres = [(f.box[0] + f.box[2]) / 2 for f in found]
    assert centres == sorted(centres)
    for f, i in zip(found, hits):
        assert 0.6 < (f.box[2] - f.box[0]) / (truth[i][2] - truth[i][0]) < 1.6


def test_whole_photo_pass_alone_misses_small_faces():
    # what the tiles are for: the single pass over the whole photo finds fewer of these faces
    photo, truth = group_photo(*GROUPS[0])
    assert len(A.detect_faces(photo, min_face=0.2)) < len(truth) == len(A.detect_faces(photo))
    assert A._tiles(1280, 886, 0.2) == [] and len(A._tiles(1280, 886, 1 / 20)) == 6


def test_single_face_detection_time():
    photo = A.load_photo(astronaut())
    A.find_alignment(photo)
    t = time.perf_counter()
    al = A.find_alignment(photo)
    seconds = time.perf_counter() - t
    assert al.faces_found == 1
    assert seconds < 1.0  # about 0.05 s on a busy 2-core machine; a bound that holds on any CPU
