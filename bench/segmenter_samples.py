"""Picture of the k-means segment generator's masks on random samples, and its coherence numbers.

Writes a sheet (top row: generated images; bottom row: colour-coded soft masks, each pixel the
mask-weighted mix of the segment colours). The first column is the starting segment code X^S = w_avg,
the others are random samples z -> mapping. Also prints the neighbour agreement of the argmax labels at
the head's own resolution against the same labels shuffled within each image (see docs/segmenter.md).

Without --generator it uses the P2-shaped 64 px random-weight generator of bench/segmenter_cost.py.

Usage: python3 bench/segmenter_samples.py [--generator CKPT] [--segments 4] [--samples 5]
                                          [--output docs/images/segmenter_kmeans.png] [--scale 1] [--overwrite]
"""

import argparse
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from chunkygan_jax import io
from chunkygan_jax.masks.colors import color_code
from chunkygan_jax.masks.metrics import neighbour_agreement
from chunkygan_jax.masks.segmenter import kmeans_segmenter, sample_ws
from segmenter_cost import small_generator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default=None, help="checkpoint (default: random 64 px generator)")
    ap.add_argument("--segments", type=int, default=4)
    ap.add_argument("--samples", type=int, default=5, help="random samples in the picture")
    ap.add_argument("--metric_samples", type=int, default=32, help="random samples for the coherence numbers")
    ap.add_argument("--seed", type=int, default=7, help="seed of the pictured/measured samples")
    ap.add_argument("--output", default="docs/images/segmenter_kmeans.png")
    ap.add_argument("--scale", type=int, default=1, help="nearest-neighbour enlargement of the sheet")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    args = ap.parse_args()

    if args.generator:
        from chunkygan_jax.checkpoints import load_generator
        g = load_generator(args.generator)
    else:
        g = small_generator(64)
    with tempfile.TemporaryDirectory() as cache:
        seg = kmeans_segmenter(g, args.segments, cache_dir=cache)
    print(f"k-means head: n={args.segments}, layers {list(seg.layers)}, feature resolution "
          f"{seg.feature_resolution}, temperature {float(seg.head.temperature):.4f}")

    ws = sample_ws(g, max(args.samples, args.metric_samples), seed=args.seed)
    codes = np.concatenate([np.asarray(seg.code)[None], ws[: args.samples]])
    images = np.asarray(jax.jit(lambda g, w: g.synthesis(w))(g, jnp.asarray(codes)))
    masks = np.asarray(seg.masks_for_code(codes))
    top = np.concatenate([io.to_uint8(np.clip(x, -1, 1)) for x in images], axis=1)
    bottom = np.concatenate([color_code(m) for m in masks], axis=1)
    sheet = np.concatenate([top, bottom], axis=0)
    sheet = np.repeat(np.repeat(sheet, args.scale, axis=0), args.scale, axis=1)
    io.save_png(args.output, sheet, overwrite=args.overwrite)
    print(f"wrote {args.output} ({sheet.shape[1]}x{sheet.shape[0]})")

    feats = np.asarray(seg.masks_for_code(ws[: args.metric_samples], resolution=seg.feature_resolution))
    labels = feats.argmax(axis=1)
    rng = np.random.RandomState(0)
    shuffled = np.stack([rng.permutation(l.reshape(-1)).reshape(l.shape) for l in labels])
    agree, base = neighbour_agreement(labels), neighbour_agreement(shuffled)
    share = np.bincount(labels.reshape(-1), minlength=args.segments) / labels.size
    print(f"{args.metric_samples} samples at {seg.feature_resolution}x{seg.feature_resolution}: neighbour "
          f"agreement {agree:.3f}, shuffled labels {base:.3f}, boundary ratio {(1 - agree) / (1 - base):.2f}; "
          f"segment shares {np.round(share, 3).tolist()}; mean max mask {masks.max(axis=1).mean():.2f}")


if __name__ == "__main__":
    main()
