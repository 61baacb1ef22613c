#!/usr/bin/env python3
"""The figure of docs/photos.md: one photo through `bin/invert --align`, as a strip of five panels
(photo | aligned target | projection | masks | pasted), read from that command's output folder.

    bin/invert --image=astronaut.png --align --segments=8 --output_dir=out/astronaut
    python3 bench/photo_figure.py out/astronaut [--output docs/images/photo_align_paste.png] [--size 256]

The aligned panels are shown at the generator's resolution, enlarged without smoothing; the photo and the
pasted result are resized to the panel size (Lanczos).
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", help="output folder of bin/invert --align")
    ap.add_argument("--output", default="docs/images/photo_align_paste.png")
    ap.add_argument("--size", type=int, default=256, help="panel height and width in pixels")
    args = ap.parse_args()

    from chunkygan_jax import io
    from chunkygan_jax.align import load_photo
    from chunkygan_jax.errors import ChunkyGANError
    from chunkygan_jax.masks.colors import color_code
    from chunkygan_jax.results import load_result

    report = Path(args.report)
    try:
        metrics = json.loads((report / "metrics.json").read_text())
        result = load_result(report / "result")
        photo = load_photo(metrics["photo"])
        pasted = load_photo(report / "pasted.png")
    except (OSError, ValueError, KeyError, TypeError, ChunkyGANError) as e:
        print(f"error: {report} is not the output of bin/invert --align ({e})", file=sys.stderr)
        sys.exit(2)
    s = args.size

    def fit(img, resample):
        return np.asarray(Image.fromarray(img).resize((s, round(s * img.shape[0] / img.shape[1])), resample))

    panels = [fit(photo, Image.Resampling.LANCZOS), fit(io.to_uint8(result.target), Image.Resampling.NEAREST),
              fit(io.to_uint8(result.composite), Image.Resampling.NEAREST),
              fit(color_code(result.masks), Image.Resampling.NEAREST), fit(pasted, Image.Resampling.LANCZOS)]
    h = max(p.shape[0] for p in panels)
    gap = np.full((h, 4, 3), 255, np.uint8)
    strip = []
    for p in panels:
        strip += [np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0)), constant_values=255), gap]
    io.save_png(args.output, np.concatenate(strip[:-1], axis=1))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
