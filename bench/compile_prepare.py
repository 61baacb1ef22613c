#!/usr/bin/env python3
"""Compile seconds of the inversion program with the generator's weight-only preprocessing done once
outside it (`StyleGAN2.prepare`, what `Inverter` does) or inside it (the plain generator), on this
backend. One sample of each per run: a second compile of the same program in one process is served from
memory, so alternate the order between runs (--reverse).

  python3 bench/compile_prepare.py --resolution=1024 --program=loop
  python3 bench/compile_prepare.py --resolution=1024 --program=loop --reverse
  python3 bench/compile_prepare.py --smoke      # the smallest run, to check that the script works

256 px is the generator of bench/vs_official.py; 1024 px is NVIDIA's config-f shape (random weights).
The persistent compilation cache is off here (nothing turns it on), so every compile is measured.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--segments", type=int, default=8)
    ap.add_argument("--program", choices=["loop", "steps"], default="loop")
    ap.add_argument("--reverse", action="store_true", help="compile the plain-generator variant first")
    ap.add_argument("--smoke", action="store_true", help="16 px tiny generator, 2 segments")
    args = ap.parse_args()
    if args.smoke:
        args.resolution, args.segments = 16, 2

    import jax
    import jax.numpy as jnp
    import numpy as np

    from chunkygan_jax.generators import StyleGAN2, ffhq_config, random_params
    from chunkygan_jax.inversion import InversionSettings, Inverter
    from chunkygan_jax.lpips import random_lpips
    from step import TINY

    r = args.resolution
    cfg = ffhq_config(r, **TINY) if args.smoke else ffhq_config(r) if r == 1024 else \
        ffhq_config(r, channel_base=8192, channel_max=256)
    generator = StyleGAN2(cfg, random_params(0, cfg))
    inv = Inverter(generator, InversionSettings(segments=args.segments, steps=100, lpips_resolution=256),
                   lpips=random_lpips("vgg"), loop=args.program)
    batch = inv.make_batch(np.zeros((1, r, r, 3), np.float32))
    state = inv.start(inv.initial_latents(1), 1)
    fn = inv._programs["run" if args.program == "loop" else "steps"]
    if args.program == "loop":
        call_args = lambda core: (core, state.core, jnp.zeros((1, 100)), batch, jnp.int32(1))
    else:
        call_args = lambda core: (core, state.core, batch, 1)
    variants = [("prepared", inv.core), ("inside", inv.core.replace(generator=generator))]
    out = {"resolution": r, "segments": args.segments, "program": args.program, "backend": jax.default_backend()}
    for name, core in (variants[::-1] if args.reverse else variants):
        t = time.perf_counter()
        fn.lower(*call_args(core)).compile()
        out[f"compile_s_{name}"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    jax.jit(lambda g: g.prepare()).lower(generator).compile()
    out["compile_s_prepare_program"] = round(time.perf_counter() - t, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
