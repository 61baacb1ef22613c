#!/usr/bin/env python3
"""How `Inverter.advance` runs its steps, measured: the jitted fori_loop ("loop"), one jitted step per
call driven by the host ("steps"), UNROLL steps per call ("unrolled"), and "steps" with the generator's
weight-only preprocessing left inside the step ("steps:raw", what every step did before
`StyleGAN2.prepare`). One process, interleaved rounds, medians; the first call of each form is its
compile time (the persistent compilation cache is off unless a program turns it on).

The generator is the 256 px one of bench/vs_official.py (random weights, z = w = 512, 8 mapping
layers, channel_base 8192, channel_max 256) and LPIPS-VGG has random weights of the real shape.

  python3 bench/loop_forms.py --segments=1 --rounds=5
  python3 bench/loop_forms.py --segments=8 --forms=loop,steps
  python3 bench/loop_forms.py --smoke        # the smallest run, to check that the script works
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=1)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--forms", default="loop,steps,steps:raw,unrolled")
    ap.add_argument("--out", default=None)
    ap.add_argument("--smoke", action="store_true", help="16 px tiny generator, 2 segments, 1 round of steps:raw")
    args = ap.parse_args()
    if args.smoke:
        args.segments, args.resolution, args.rounds, args.forms = 2, 16, 1, "steps:raw"

    import jax
    import numpy as np

    from chunkygan_jax.generators import StyleGAN2, ffhq_config, random_params
    from chunkygan_jax.inversion import UNROLL, InversionSettings, Inverter
    from chunkygan_jax.lpips import random_lpips
    from step import TINY

    cfg = ffhq_config(args.resolution, **(TINY if args.smoke else dict(channel_base=8192, channel_max=256)))
    generator = StyleGAN2(cfg, random_params(0, cfg))
    lpips = random_lpips("vgg")
    settings = InversionSettings(segments=args.segments, steps=100_000, lpips_resolution=256)
    target = np.random.RandomState(0).uniform(-1, 1, (1, args.resolution, args.resolution, 3)).astype(np.float32)
    runs = {}
    for form in args.forms.split(","):
        loop = form.split(":")[0]
        inv = Inverter(generator, settings, lpips=lpips, loop=loop)
        if form.endswith(":raw"):  # the plain generator: its preprocessing runs inside every step
            inv.core = inv.core.replace(generator=generator)
        batch = inv.make_batch(target)
        state = inv.start(inv.initial_latents(1), 1)
        k = UNROLL if loop == "unrolled" else 1
        t = time.perf_counter()
        state = inv.advance(state, batch, k)
        runs[form] = dict(inv=inv, batch=batch, state=state, k=k, first_s=time.perf_counter() - t, ms=[], cpu_ms=[])
        print(f"{form}: first call {runs[form]['first_s']:.1f} s", file=sys.stderr, flush=True)
    for r in range(args.rounds):
        for form, run in (runs.items() if r % 2 == 0 else reversed(list(runs.items()))):
            t, c = time.perf_counter(), time.process_time()
            run["state"] = run["inv"].advance(run["state"], run["batch"], run["k"])
            run["ms"].append(1000 * (time.perf_counter() - t) / run["k"])
            run["cpu_ms"].append(1000 * (time.process_time() - c) / run["k"])
        print(f"round {r + 1}: " + ", ".join(f"{f} {run['ms'][-1]:.0f} ms" for f, run in runs.items()),
              file=sys.stderr, flush=True)
    report = {"segments": args.segments, "resolution": args.resolution, "backend": jax.default_backend(),
              "forms": {f: dict(first_call_s=round(run["first_s"], 1), ms_per_step=round(statistics.median(run["ms"])),
                                cpu_ms_per_step=round(statistics.median(run["cpu_ms"])), ms_all=[round(x) for x in run["ms"]])
                        for f, run in runs.items()}}
    print("| form | ms/step | CPU ms/step | first call s |\n|---|---|---|---|")
    for f, row in report["forms"].items():
        print(f"| {f} | {row['ms_per_step']} | {row['cpu_ms_per_step']} | {row['first_call_s']} |")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
