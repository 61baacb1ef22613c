#!/usr/bin/env python3
"""The group figure of docs/photos.md: a group photo before and after one edit of every face, side by
side, each panel resized to --width (Lanczos).

    bin/invert --image=group.png --align --face=all --segments=8 --steps=100 --output_dir=out/group
    bin/edit --latents=out/group --direction=pca:0 --strength=3 --output=out/group_edit.png
    python3 bench/group_figure.py group.png out/group_edit.png [--output docs/images/group_edit.png]
"""

import argparse

import numpy as np
from PIL import Image


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--output", default="docs/images/group_edit.png")
    ap.add_argument("--width", type=int, default=480, help="width of each panel in pixels")
    args = ap.parse_args()
    panels = []
    for path in (args.before, args.after):
        with Image.open(path) as im:
            im = im.convert("RGB")
            height = round(im.height * args.width / im.width)
            panels.append(np.asarray(im.resize((args.width, height), Image.Resampling.LANCZOS)))
    gap = np.full((panels[0].shape[0], 8, 3), 255, np.uint8)
    Image.fromarray(np.concatenate([panels[0], gap, panels[1]], axis=1)).save(args.output, optimize=True)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
