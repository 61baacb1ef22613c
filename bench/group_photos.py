#!/usr/bin/env python3
"""Group photos: faces found (ours vs dlib's frontal detector, against the truth) and the time per
photo; then --face=all's one batch against one single-face run per face.

    python3 bench/group_photos.py [--steps 50] [--segments 4] [--generator PATH] [--skip_timing] [--tools]

The group photos are made of the real portraits that ship with scikit-image and matplotlib
(tests/real_photos.py: each face's width a fraction of the photo's longer side, 1/20 and up, with its
true box). For the timing, a 4-face photo is inverted with invert(face="all") (one batch of 4) and with
invert(align=True, face=k) for each face in turn, each followed by the report bin/invert writes, after a
warm-up run that loads LPIPS, MediaPipe and the k-means head once. That is done twice in one process:
"cold" (the batch compiles its programs for 4 faces; the first single run compiles the programs that
the other three reuse) and "warm" (every program compiled, as with a warm compilation cache). Each
run's time is split into the steps, the step program's compilation, the report and the rest (the
alignment, the other programs' compilation, the final evaluation). --tools adds bin/invert itself,
one process per run, first with an empty compilation cache, then with the cache the first pass left.
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
from PIL import Image  # noqa: E402

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


def _timed_runs(photo, generator, options, out):
    """One invert(face="all") with its report, then one invert(face=K) with its report per face (each
    as bin/invert writes it, pasted.png included), in this process; seconds and what they went to."""
    from chunkygan_jax.inversion import invert
    from chunkygan_jax.report import write_group_report, write_report

    def run(face, folder):
        t = time.perf_counter()
        result = invert(str(photo), generator, align=True, face=face, **options)
        inverted = time.perf_counter() - t
        first = result.results[0] if face == "all" else result
        (write_group_report if face == "all" else write_report)(result, folder, overwrite=True)
        total = time.perf_counter() - t
        steps_s = (first.step_ms or 0) / 1000 * options["steps"]
        return result, {"s": round(total, 2), "steps_s": round(steps_s, 2),
                        "compile_s": round(first.compile_seconds, 2), "report_s": round(total - inverted, 2),
                        "other_s": round(inverted - steps_s - first.compile_seconds, 2),
                        "ms_per_step": round(first.step_ms or 0, 1)}

    group, batch = run("all", out / "group")
    singles = [run(k, out / f"face_{k}")[1] for k in group.faces]
    mean = float(np.mean([r["s"] for r in singles]))
    return {"faces": len(group.results), "batch": batch, "single": singles, "single_mean_s": round(mean, 2),
            "ratio": round(batch["s"] / len(group.results) / mean, 3)}


def _tool_runs(photo, args, out, cache, faces):
    """The same with bin/invert itself: one --face=all run, then one --face=K run per face, each a new
    process (imports, model set-up, alignment, compiling or a load from the compilation cache `cache`,
    the steps, the report); wall seconds."""
    import os
    import subprocess

    env = dict(os.environ, JAX_PLATFORMS="cpu", CHUNKYGAN_JAX_COMPILATION_CACHE=str(cache))
    common = [f"--image={photo}", "--align", f"--steps={args.steps}", f"--segments={args.segments}", "--overwrite"]
    if args.generator:
        common.append(f"--generator={args.generator}")

    def run(face):
        t = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "bin" / "invert"), *common, f"--face={face}",
                        f"--output_dir={out / f'tool_{face}'}"], check=True, capture_output=True, env=env)
        return round(time.perf_counter() - t, 2)

    batch = run("all")
    singles = [run(k) for k in range(faces)]
    return {"batch_s": batch, "single_s": singles, "single_mean_s": round(float(np.mean(singles)), 2),
            "ratio": round(batch / faces / float(np.mean(singles)), 3)}


def timing(args):
    """Two passes in this process: "cold" (each path's programs compiled on its first run: the batch's
    for 4 faces, the single runs' by the first of them for all four) and "warm" (every program compiled);
    with --tools also bin/invert itself, with an empty compilation cache and again with a warm one."""
    import tempfile

    from chunkygan_jax.demo import resolve_generator
    from chunkygan_jax.inversion import invert
    from real_photos import group_photo

    generator = resolve_generator(args.generator)
    photo, _ = group_photo(1000, 700, [1 / 20, 1 / 14, 1 / 10, 1 / 16], 7)
    options = dict(steps=args.steps, segments=args.segments)
    invert(photo, generator, align=True, face=0, steps=2, segments=args.segments)  # LPIPS, the k-means head
    out = {"resolution": generator.resolution, **options}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        Image.fromarray(photo).save(tmp / "group.png")
        for name in ("cold", "warm"):
            out[name] = _timed_runs(tmp / "group.png", generator, options, tmp / name)
            print(json.dumps({name: out[name]}), flush=True)
        if args.tools:
            for name in ("tools_cold", "tools_warm"):  # the second pass finds the first one's cache
                out[name] = _tool_runs(tmp / "group.png", args, tmp / name, tmp / "jax_cache", out["cold"]["faces"])
                print(json.dumps({name: out[name]}), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--segments", type=int, default=4)
    ap.add_argument("--generator", default=None, help="default: the demo generator (64 px)")
    ap.add_argument("--skip_timing", action="store_true")
    ap.add_argument("--skip_recall", action="store_true")
    ap.add_argument("--tools", action="store_true", help="also time bin/invert itself (one process per run)")
    ap.add_argument("--output", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    out = {} if args.skip_recall else {"recall": recall()}
    if not args.skip_timing:
        out["timing"] = timing(args)
    if args.output:
        Path(args.output).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
