"""The two-halves claim of docs/inversion.md ("Measured"): a 64 px target whose left half comes from one
W+ code and right half from another; global projection (n = 1) against n = 2 with the true halves as
fixed masks and with invert()'s default masks (the segment generator G^S). The settings of
tests/test_inversion.py (100 steps, LPIPS-Alex at full resolution, lambda_reg = 0); the generator is the
tests' small_generator (the golden 64 px weights, ToRGB scaled). Writes a JSON record.

Usage: python3 bench/two_halves.py [--output bench/results/two_halves_cpu.json] [--overwrite]
"""

import argparse
import json
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from chunkygan_jax.generators import stylegan2_from_nvidia  # noqa: E402
from chunkygan_jax.inversion import invert  # noqa: E402
from conftest import load_golden, scaled_rgb_state  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default="bench/results/two_halves_cpu.json")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()
    if Path(args.output).exists() and not args.overwrite:
        ap.error(f"{args.output} exists; pass --overwrite to replace it")
    golden = load_golden("nvidia_P2")
    g = stylegan2_from_nvidia(scaled_rgb_state(golden), conv_clamp=256)
    imgs = np.asarray(g.synthesis(jnp.asarray(golden["ws_in"][:2])))
    r = g.resolution
    left = np.zeros((r, r), np.float32)
    left[:, : r // 2] = 1.0
    target = np.clip(left[..., None] * imgs[0] + (1 - left[..., None]) * imgs[1], -1, 1)
    common = dict(steps=args.steps, lambda_reg=0.0, lpips_net="alex", lpips_resolution="full")
    runs = {"global W+ (n = 1)": dict(segments=1),
            "n = 2, masks = the true halves": dict(segments=2, masks=np.stack([left, 1 - left])),
            "n = 2, default masks (G^S, X^S learned)": dict(segments=2)}
    rows = []
    for name, opts in runs.items():
        res = invert(target, g, settings=common, **opts)
        rows.append({"run": name, "lpips": res.final_losses["lpips"], "masks": res.settings["masks"]})
    for row in rows:
        row["vs_global"] = row["lpips"] / rows[0]["lpips"]
        print(f"{row['run']:42s} lpips {row['lpips']:.4f}  {row['vs_global']:.2f}x")
    record = {"command": "python3 bench/two_halves.py " + " ".join(sys.argv[1:]), "steps": args.steps,
              "lpips": "alex, full resolution", "lambda_reg": 0.0, "rows": rows}
    Path(args.output).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
