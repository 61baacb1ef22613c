"""G^S against free logits against one code, on real face photographs: LPIPS, connected pieces of the
masks' argmax, neighbour agreement, and an image sheet.

The photos are the public-domain / CC0 portraits that ship inside installed packages (astronaut.png of
scikit-image, grace_hopper.jpg of matplotlib, camera.png of scikit-image; see tests/real_photos.py),
aligned the FFHQ way (chunkygan_jax.align) to the generator's resolution. Every method inverts all photos
as one batch (invert_batch) with the same steps and settings, which are invert()'s defaults unless given.

Methods: "1 code" (n = 1), "logits" (free 16x16 mask logits, masks='logits'), "G^S" (the default: the
segment generator with the k-means head, X^S learned); on request "G^S not annealed" (the same with the
head's logits never hardened: with_hardening(1.0)) and "G^S unsmoothed" (without the masks' Gaussian
blur, smoothing=0). Writes a JSON record and a sheet with one row per
photo: photo | composite and masks for each method (enlarged with nearest-neighbour).

Usage: python3 bench/segmenter_real.py [--generator CKPT] [--segments 8] [--steps 500]
           [--output bench/results/segmenter_real.json] [--sheet docs/images/segmenter_real.png] [--overwrite]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from chunkygan_jax import io  # noqa: E402
from chunkygan_jax.align import align, as_mode  # noqa: E402
from chunkygan_jax.demo import resolve_generator  # noqa: E402
from chunkygan_jax.inversion import invert_batch  # noqa: E402
from chunkygan_jax.masks.colors import color_code  # noqa: E402
from chunkygan_jax.masks.metrics import mask_coherence  # noqa: E402
from chunkygan_jax.report import enlarge, sheet_scale  # noqa: E402
from chunkygan_jax.masks.segmenter import kmeans_segmenter  # noqa: E402
import real_photos  # noqa: E402

PHOTOS = ("astronaut", "grace_hopper", "camera")
METHODS = {"1 code": dict(segments=1), "logits": dict(masks="logits"), "G^S": dict(masks=None),
           "G^S not annealed": dict(masks="not annealed"), "G^S unsmoothed": dict(masks="unsmoothed")}
DEFAULT_METHODS = "1 code,logits,G^S"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default=None, help="checkpoint (default: the demo face generator)")
    ap.add_argument("--segments", type=int, default=8)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--lpips_net", default="vgg")
    ap.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated subset of " + ", ".join(METHODS))
    ap.add_argument("--output", default="bench/results/segmenter_real.json")
    ap.add_argument("--sheet", default="docs/images/segmenter_real.png")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --sheet / --output")
    args = ap.parse_args()
    for path in (args.output, args.sheet):  # before the long work, not after it
        if path and Path(path).exists() and not args.overwrite:
            ap.error(f"{path} exists; pass --overwrite to replace it")

    g = resolve_generator(args.generator)
    photos = {name: align(getattr(real_photos, name)(), g.resolution)[0] for name in PHOTOS}
    rows, results = {}, {}
    for method in args.methods.split(","):
        opts = {"segments": args.segments, **METHODS[method]}
        if opts.get("masks") == "unsmoothed":
            opts["masks"] = kmeans_segmenter(g, args.segments, smoothing=0.0)
        elif opts.get("masks") == "not annealed":
            opts["masks"] = kmeans_segmenter(g, args.segments).with_hardening(1.0)
        t0 = time.perf_counter()
        out = invert_batch(list(photos.values()), g, steps=args.steps, settings=dict(lpips_net=args.lpips_net),
                           **opts)
        seconds = time.perf_counter() - t0
        for name, r in zip(photos, out):
            c = mask_coherence(r.masks)
            rows[(name, method)] = {"photo": name, "method": method, "segments": opts["segments"],
                                    "lpips": r.final_losses["lpips"], **c, "masks": r.settings["masks"]}
            results[(name, method)] = r
            print(f"{name:12s} {method:7s} lpips {r.final_losses['lpips']:.4f}  pieces {c['pieces']:3d} "
                  f"({c['pieces_per_segment']:.2f}/segment {c['pieces_by_segment']})  agreement "
                  f"{c['neighbour_agreement']:.3f}  top weight {c['top_weight']:.3f}", flush=True)
        print(f"{method}: {seconds:.0f} s for {len(photos)} photos x {args.steps} steps", flush=True)
        record = {"generator": args.generator or "demo", "steps": args.steps, "segments": args.segments,
                  "lpips_net": args.lpips_net, "command": "python3 " + " ".join(sys.argv),
                  "rows": list(rows.values())}
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(record, indent=2) + "\n")  # after every method
    print(table(rows))
    if args.sheet:
        io.save_png(args.sheet, sheet(photos, results, args.methods.split(","), g.resolution), overwrite=args.overwrite)
        print(f"wrote {args.sheet} and {args.output}")


def table(rows) -> str:
    lines = ["| photo | method | LPIPS | x 1 code | pieces (per segment) | neighbour agreement | top weight |",
             "|---|---|---|---|---|---|---|"]
    for (name, method), r in rows.items():
        one = rows.get((name, "1 code"))
        ratio = f"{r['lpips'] / one['lpips']:.2f}" if one else "-"
        lines.append(f"| {name} | {method} | {r['lpips']:.4f} | {ratio} | {r['pieces']} ({r['pieces_per_segment']:.2f}) "
                     f"| {r['neighbour_agreement']:.3f} | {r['top_weight']:.3f} |")
    return "\n".join(lines)


def sheet(photos, results, methods, resolution) -> np.ndarray:
    """Rows: photos. Columns: the photo, then composite and masks of each method. A header names them."""
    k = sheet_scale(resolution)
    tile = resolution * k
    with_masks = [m for m in methods if METHODS[m].get("segments", 2) > 1]  # one code has no masks to show
    names = ["photo"] + [f"{m} {what}" for m in methods for what in ("composite", "masks")
                         if what == "composite" or m in with_masks]
    grid = []
    for name, photo in photos.items():
        cells = [io.to_uint8(io.as_target_image(photo, resolution))]
        for m in methods:
            r = results[(name, m)]
            shown = as_mode(r.image_uint8(), r.settings.get("photo_mode", "rgb"))  # a grey photo: in grey
            cells += [shown] + ([color_code(r.masks)] if m in with_masks else [])
        grid.append(np.concatenate([enlarge(c, k) for c in cells], axis=1))
    header = Image.new("RGB", (tile * len(names), 18), (255, 255, 255))
    draw = ImageDraw.Draw(header)
    for i, text in enumerate(names):
        draw.text((i * tile + 3, 3), text, fill=(0, 0, 0))
    return np.concatenate([np.asarray(header)] + grid, axis=0)


if __name__ == "__main__":
    main()
