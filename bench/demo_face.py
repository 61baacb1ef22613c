"""The demo generator's settings on examples/face.png (docs/demo.md, "Settings"): 8 segments, 100 steps,
LPIPS-VGG, with lambda_reg 1, 0.01 and 0 under the default masks (G^S), with lambda_reg 0 and free
logits, and 1 segment; each the same as `bin/invert --image=examples/face.png --segments=S --steps=100
--lambda_reg=L [--masks=logits]` (metrics.json's final lpips). Writes a JSON record.

Usage: python3 bench/demo_face.py [--output bench/results/demo_face.json] [--overwrite] [--smoke]
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chunkygan_jax.demo import resolve_generator  # noqa: E402
from chunkygan_jax.inversion import invert  # noqa: E402

RUNS = [("8 segments, lambda_reg 1", dict(segments=8, lambda_reg=1.0)),
        ("8 segments, lambda_reg 0.01", dict(segments=8, lambda_reg=0.01)),
        ("8 segments, lambda_reg 0", dict(segments=8, lambda_reg=0.0)),
        ("8 segments, lambda_reg 0, logits", dict(segments=8, lambda_reg=0.0, masks="logits")),
        ("1 segment", dict(segments=1, lambda_reg=0.0))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default="bench/results/demo_face.json")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--generator", default=None, help="another generator than the demo one (a checkpoint)")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="the first and the last run only, to check the script works")
    args = ap.parse_args()
    if Path(args.output).exists() and not args.overwrite:
        ap.error(f"{args.output} exists; pass --overwrite to replace it")
    g = resolve_generator(args.generator)
    rows = []
    for name, opts in (RUNS[:1] + RUNS[-1:]) if args.smoke else RUNS:
        r = invert(str(ROOT / "examples" / "face.png"), g, steps=args.steps, masks=opts.get("masks"),
                   settings={k: v for k, v in opts.items() if k != "masks"})
        rows.append({"run": name, **opts, "lpips": r.final_losses["lpips"], "masks": r.settings["masks"]["kind"]})
        print(f"{name:36s} lpips {rows[-1]['lpips']:.4f}", flush=True)
    record = {"generator": args.generator or "demo", "image": "examples/face.png", "steps": args.steps, "lpips_net": "vgg",
              "command": "python3 bench/demo_face.py " + " ".join(sys.argv[1:]), "rows": rows}
    Path(args.output).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
