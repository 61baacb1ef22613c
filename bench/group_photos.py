#!/usr/bin/env python3
"""Group photos: faces found (ours vs dlib's frontal detector, against the truth) and the time per
photo; then --face=all's one batch against one single-face run per face.

    python3 bench/group_photos.py [--steps 50] [--segments 4] [--generator PATH] [--skip_timing]

The group photos are made of the real portraits that ship with scikit-image and matplotlib
(tests/real_photos.py: each face's width a fraction of the photo's longer side, 1/20 and up, with its
true box). For the timing, a 4-face photo is inverted with invert(face="all") (one batch of 4) and with
invert(align=True, face=k) for each face in turn, after a warm-up run that loads LPIPS and fits the
k-means head once. Each invert call builds its own programs; in one process JAX's caches serve the
same shapes again, so the single runs after the first compile less than 4 runs of bin/invert would.
Per-face time = the batch's seconds / 4 against a single run's mean (ratio).
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402

GROUPS = [(1280, 886, [1 / 20, 1 / 16, 1 / 12, 1 / 20, 1 / 14, 1 / 18], 0),
          (1920, 1080, [1 / 20, 1 / 20, 1 / 10, 1 / 15], 1),
          (800, 800, [1 / 20, 1 / 8, 1 / 20, 1 / 12], 2),
          (1000, 1500, [1 / 20, 1 / 20, 1 / 20, 1 / 20, 1 / 16], 3),
          (1200, 800, [1 / 20] * 8, 4),
          (1600, 1200, [1 / 20, 1 / 19, 1 / 18, 1 / 17, 1 / 20, 1 / 20, 1 / 12], 5)]


def inside(box, truth):
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return next((i for i, (x0, y0, x1, y1) in enumerate(truth) if x0 <= cx <= x1 and y0 <= cy <= y1), None)


def recall():
    import dlib

    from chunkygan_jax import align as A
    from real_photos import group_photo

    detector = dlib.get_frontal_face_detector()
    A.detect_faces(group_photo(*GROUPS[0])[0])  # model set-up
    rows = []
    for width, height, faces, seed in GROUPS:
        photo, truth = group_photo(width, height, faces, seed)
        t = time.perf_counter()
        ours = A.detect_faces(photo)
        ours_s = time.perf_counter() - t
        row = {"photo": f"{width}x{height}", "faces": len(truth), "ours": len(ours),
               "ours_true": len({inside(f.box, truth) for f in ours} - {None}), "ours_s": round(ours_s, 3)}
        for up in (0, 1):
            t = time.perf_counter()
            dets = detector(photo, up)
            row[f"dlib{up}_s"] = round(time.perf_counter() - t, 3)
            row[f"dlib{up}"] = len(dets)
            row[f"dlib{up}_true"] = len({inside((r.left(), r.top(), r.right() + 1, r.bottom() + 1), truth)
                                         for r in dets} - {None})
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def timing(args):
    from chunkygan_jax.demo import resolve_generator
    from chunkygan_jax.inversion import invert
    from real_photos import group_photo

    generator = resolve_generator(args.generator)
    photo, _ = group_photo(1000, 700, [1 / 20, 1 / 14, 1 / 10, 1 / 16], 7)
    options = dict(steps=args.steps, segments=args.segments)
    invert(photo, generator, align=True, face=0, steps=2, segments=args.segments)  # LPIPS, the k-means head
    t = time.perf_counter()
    group = invert(photo, generator, align=True, face="all", **options)
    batch_s = time.perf_counter() - t
    singles = []
    for k in group.faces:
        t = time.perf_counter()
        last = invert(photo, generator, align=True, face=k, **options)
        singles.append(time.perf_counter() - t)
    row = {"faces": len(group.results), "resolution": generator.resolution, **options,
           "batch_s": round(batch_s, 2), "batch_per_face_s": round(batch_s / len(group.results), 2),
           "batch_compile_s": round(group.results[0].compile_seconds, 2),
           "batch_ms_per_step": round(group.results[0].step_ms or 0, 1),
           "single_s": [round(s, 2) for s in singles], "single_ms_per_step": round(last.step_ms or 0, 1),
           "single_mean_s": round(float(np.mean(singles)), 2),
           "ratio": round(batch_s / len(group.results) / float(np.mean(singles)), 3)}
    print(json.dumps(row), flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--segments", type=int, default=4)
    ap.add_argument("--generator", default=None, help="default: the demo generator (64 px)")
    ap.add_argument("--skip_timing", action="store_true")
    ap.add_argument("--skip_recall", action="store_true")
    ap.add_argument("--output", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    out = {} if args.skip_recall else {"recall": recall()}
    if not args.skip_timing:
        out["timing"] = timing(args)
    if args.output:
        Path(args.output).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
