#!/usr/bin/env python3
"""How the up-front memory estimate (`inversion.step_memory_bytes`, a lower bound) compares with the
memory XLA plans for the same inversion step (`compiled.memory_analysis()`: temporaries plus
arguments), for FFHQ-shaped random-weight generators on this machine's first device.

  python3 bench/memory_estimate.py                        # 32 and 64 px, n = 2 and 8 (CPU: ~minutes)
  python3 bench/memory_estimate.py --configs=1024:8:bfloat16 --estimate_only

A config is RES:N:DTYPE, or demo:N:DTYPE for the demo DCGAN (after bin/fetch_demo_generator), or
tiny:N:DTYPE for a narrow 16 px StyleGAN2 (--smoke: tiny:2:float32, to check that the script works).
--estimate_only skips the compilation (1024 px compiles for minutes on CPU).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="32:2:float32,32:8:float32,64:2:float32,64:8:float32")
    ap.add_argument("--estimate_only", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="only tiny:2:float32")
    args = ap.parse_args()
    if args.smoke:
        args.configs = "tiny:2:float32"

    import jax
    import jax.numpy as jnp
    import numpy as np

    from chunkygan_jax.demo import load_demo_generator
    from chunkygan_jax.generators import StyleGAN2, ffhq_config, random_params
    from chunkygan_jax.inversion import InversionSettings, Inverter, available_memory, step_memory_bytes
    from chunkygan_jax.lpips import random_lpips
    from step import TINY

    have, where = available_memory()
    print(f"device {jax.devices()[0].device_kind}; {where}: "
          f"{'unknown' if have is None else f'{have / 2**30:.1f} GiB'}")
    print("| generator | n | dtype | estimate MiB | XLA plan MiB | plan / estimate |")
    print("|---|---|---|---|---|---|")
    for spec in args.configs.split(","):
        kind, n, dtype = spec.split(":")
        n = int(n)
        if kind == "demo":
            g = load_demo_generator(fetch=False)
        elif kind == "tiny":
            cfg = ffhq_config(16, **TINY)
            g = StyleGAN2(cfg, random_params(0, cfg))
        else:
            cfg = ffhq_config(int(kind))
            g = StyleGAN2(cfg, random_params(0, cfg))
        res = g.resolution
        s = InversionSettings(segments=n, steps=2, space=g.default_space, lambda_reg=0.0, lpips_net="vgg",
                              lpips_resolution=min(res, 256), dtype=dtype).validate(g)
        est = step_memory_bytes(g, s, 1)
        plan = None
        if not args.estimate_only:
            inv = Inverter(g, s, lpips=random_lpips("vgg", compute_dtype=dtype), loop="loop")  # the loop's plan
            batch = inv.make_batch(np.zeros((1, res, res, 3), np.float32))
            st = inv.start(inv.initial_latents(1), 1)
            m = inv._run.lower(inv.core, st.core, jnp.asarray(st.history), batch,
                               jnp.int32(1)).compile().memory_analysis()
            plan = m.temp_size_in_bytes + m.argument_size_in_bytes
        mib = lambda b: f"{b / 2**20:.1f}"
        print(f"| {kind} | {n} | {dtype} | {mib(est)} | {'-' if plan is None else mib(plan)} | "
              f"{'-' if plan is None else f'{plan / est:.1f}'} |", flush=True)


if __name__ == "__main__":
    main()
