"""Should a global edit move the segment code X^S? Measured on real photos.

The three portraits of bench/segmenter_real.py (aligned to the demo generator), inverted with invert()'s
defaults (G^S, X^S learned), then edited globally along the generator's first principal directions
(pca:K at strengths -3 and 3), once with the masks kept and once with X^S moved along the same direction
(the masks recomputed by the segmenter). For each edit:
  - relabelled: the share of pixels whose strongest segment changes when X^S moves;
  - disagreement: the mean over pixels of sum_i S_i |G(X_i) - C|^2 (C the composite): how much the
    segments blended at a pixel disagree there, i.e. ghosting and seams; lower is cleaner;
  - lpips to the projection: how far the edit took the image (the same edit should move it as far).
Writes a JSON record.

Usage: python3 bench/global_edit_masks.py [--steps 500] [--directions 0,1,2,3] [--strengths -3,3]
           [--output bench/results/global_edit_masks.json] [--overwrite]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from chunkygan_jax import editing  # noqa: E402
from chunkygan_jax.align import align  # noqa: E402
from chunkygan_jax.demo import resolve_generator  # noqa: E402
from chunkygan_jax.editing import DirectionEdit  # noqa: E402
from chunkygan_jax.inversion import invert_batch  # noqa: E402
from chunkygan_jax.lpips import load_lpips  # noqa: E402
from chunkygan_jax.masks.options import segmenter_for_result  # noqa: E402
import real_photos  # noqa: E402

PHOTOS = ("astronaut", "grace_hopper", "camera")


def disagreement(segment_images, masks, composite) -> float:
    diff = np.sum(np.square(np.asarray(segment_images) - np.asarray(composite)[None]), axis=-1)  # [n, H, W]
    return float(np.mean(np.sum(np.asarray(masks) * diff, axis=0)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--segments", type=int, default=8)
    ap.add_argument("--directions", default="0,1,2,3")
    ap.add_argument("--strengths", default="-3,3")
    ap.add_argument("--output", default="bench/results/global_edit_masks.json")
    ap.add_argument("--generator", default=None, help="another generator than the demo one (a checkpoint)")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()
    if Path(args.output).exists() and not args.overwrite:
        ap.error(f"{args.output} exists; pass --overwrite to replace it")
    g = resolve_generator(args.generator)
    lp = load_lpips("vgg")
    photos = {name: align(getattr(real_photos, name)(), g.resolution)[0] for name in PHOTOS}
    t0 = time.perf_counter()
    results = invert_batch(list(photos.values()), g, segments=args.segments, steps=args.steps)
    print(f"inverted {len(photos)} photos in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    rows = []
    for name, r in zip(photos, results):
        seg = segmenter_for_result(r.settings["masks"], g, args.segments)
        for k in [int(v) for v in args.directions.split(",")]:
            d = editing.resolve_direction(f"pca:{k}", g)
            for s in [float(v) for v in args.strengths.split(",")]:
                row = {"photo": name, "direction": f"pca:{k}", "strength": s}
                labels = {}
                for moved in (False, True):
                    e = editing.edit_result(r, g, [DirectionEdit(d, s, segment_code=moved)],
                                            mask_source=seg if moved else None)
                    imgs = editing.render_segments(g, e.latents)
                    key = "moved" if moved else "kept"
                    row[f"disagreement_{key}"] = disagreement(imgs, e.masks, e.composite)
                    row[f"lpips_to_projection_{key}"] = float(lp.distance(jnp.asarray(e.composite)[None],
                                                                          jnp.asarray(r.composite)[None])[0])
                    labels[key] = np.argmax(np.asarray(e.masks), axis=0)
                row["relabelled"] = float(np.mean(labels["kept"] != labels["moved"]))
                rows.append(row)
                print(f"{name:12s} pca:{k} {s:+.0f}: relabelled {row['relabelled']:.3f}  disagreement kept "
                      f"{row['disagreement_kept']:.4f} moved {row['disagreement_moved']:.4f}", file=sys.stderr)
    summary = {key: float(np.mean([r[key] for r in rows])) for key in
               ("relabelled", "disagreement_kept", "disagreement_moved", "lpips_to_projection_kept",
                "lpips_to_projection_moved")}
    summary["moved_lower"] = int(sum(r["disagreement_moved"] < r["disagreement_kept"] for r in rows))
    summary["edits"] = len(rows)
    record = {"generator": "demo", "steps": args.steps, "segments": args.segments,
              "command": "python3 bench/global_edit_masks.py " + " ".join(sys.argv[1:]), "rows": rows,
              "summary": summary}
    Path(args.output).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
