"""Optimised noise (invert(optimize_noise=True)): final LPIPS without it, with one noise per image shared by
its segments (what results store), and with each segment's own noise, on images the generator drew with
noise of its own (random noise, not its constant buffers). The numbers of docs/inversion.md.

  python3 bench/noise_sharing.py --generator=tiny --steps=60 --segments=2 --noise_scale=10 --masks=logits \
      --noise_reg_weight=100

The fixture generators are the tests' (tests/conftest.py, golden random weights); --noise_scale multiplies
their noise strengths, so that noise draws a visible part of the image. Each row runs the Inverter directly
(per-segment noise is a measurement setting of InversionSettings, not an option of invert()).
"""

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import load_golden, scaled_rgb_state  # noqa: E402  (the tests' fixture generators)

from chunkygan_jax.generators import stylegan2_from_nvidia  # noqa: E402
from chunkygan_jax.inversion import Inverter, InversionSettings  # noqa: E402
from chunkygan_jax.masks.options import make_mask_source  # noqa: E402


def fixture(name, noise_scale):
    """A test fixture generator (tests/conftest.py), its noise strengths times `noise_scale`."""
    state = scaled_rgb_state(load_golden("nvidia_P1" if name == "tiny" else "nvidia_P2"))  # 32 or 64 px
    for k in state:
        if k.endswith(".noise_strength"):
            state[k] = state[k] * noise_scale
    return stylegan2_from_nvidia(state, conv_clamp=None if name == "tiny" else 256)


def targets(generator, seeds):
    """Each seed's sample drawn with random noise of that seed: detail the constant buffers do not hold."""
    out = []
    for s in seeds:
        ws = jnp.asarray(generator.sample_codes(1, seed=1000 + s))
        out.append(np.asarray(generator.synthesis(ws, noise_mode="random", key=jax.random.PRNGKey(s)))[0])
    return np.stack(out)


def final_lpips(generator, settings, images, masks):
    source = make_mask_source(masks, settings.segments, generator.resolution, generator=generator)
    inv = Inverter(generator, settings, source)
    batch = inv.make_batch(images)
    state = inv.start(inv.initial_latents(len(images)), len(images))
    state = inv.advance(state, batch, settings.steps)
    return inv.evaluate(state.latents, batch)[3]["lpips"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--generator", default="tiny", choices=["tiny", "small"])
    ap.add_argument("--seeds", default="0,1,2,3")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--segments", type=int, default=2)
    ap.add_argument("--noise_reg_weight", type=float, default=1e5)
    ap.add_argument("--noise_scale", type=float, default=1.0, help="scale the fixture's noise strengths")
    ap.add_argument("--lpips_net", default="vgg", choices=["vgg", "alex"])
    ap.add_argument("--masks", default="logits", help="'logits' or 'segmenter'")
    args = ap.parse_args()
    jax.config.update("jax_default_matmul_precision", "highest")
    generator = fixture(args.generator, args.noise_scale)
    seeds = [int(s) for s in args.seeds.split(",")]
    images = targets(generator, seeds)
    base = InversionSettings(segments=args.segments, steps=args.steps, lpips_net=args.lpips_net, lpips_resolution="full",
                             lambda_reg=0.0, noise_reg_weight=args.noise_reg_weight)
    rows = {"no noise optimisation": base,
            "shared noise (one per image)": InversionSettings(**{**base.to_dict(), "optimize_noise": True}),
            "per-segment noise": InversionSettings(**{**base.to_dict(), "optimize_noise": True,
                                                      "noise_per_segment": True})}
    print(f"{args.generator} generator, {args.segments} segments, {args.steps} steps, LPIPS {args.lpips_net}, "
          f"noise_reg_weight {args.noise_reg_weight:g}, noise strengths x{args.noise_scale:g}, masks {args.masks}, "
          f"seeds {seeds}")
    print("| setting | mean LPIPS | per seed |\n|---|---|---|")
    for name, settings in rows.items():
        t = time.perf_counter()
        lp = np.asarray(final_lpips(generator, settings, images, args.masks))
        print(f"| {name} | {lp.mean():.4f} | {' '.join(f'{v:.4f}' for v in lp)} | ({time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()
