"""Cost of one LPIPS forward+backward (gradient w.r.t. the first image), as in an inversion step.

Reports the median wall time of a jitted ``grad(lambda x: lpips(x, y).sum())`` over several runs
after a warm-up (compile) call, for each backbone. The "cached target" column is the inversion
case: the target's features are computed once, so each step runs the backbone on x only.

Usage: python3 bench/lpips_cost.py [--size 256] [--batch 1] [--runs 7] [--nets vgg,alex] [--bf16]
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from chunkygan_jax.lpips import load_lpips


def _median_ms(fn, *args, runs: int) -> float:
    jax.block_until_ready(fn(*args))  # warm-up: compile + first run
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--nets", default="vgg,alex")
    ap.add_argument("--bf16", action="store_true", help="also time compute_dtype=bfloat16")
    args = ap.parse_args()

    shape = (args.batch, args.size, args.size, 3)
    kx, ky = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.uniform(kx, shape, minval=-1.0, maxval=1.0)
    y = jax.random.uniform(ky, shape, minval=-1.0, maxval=1.0)

    both = jax.jit(jax.grad(lambda m, a, b: m(a, b).sum(), argnums=1))
    cached = jax.jit(jax.grad(lambda m, a, fb: m.distance_from_features(m.features(a), fb).sum(), argnums=1))
    feats = jax.jit(lambda m, b: m.features(b))

    dtypes = [jnp.float32] + ([jnp.bfloat16] if args.bf16 else [])
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), input {shape}, "
          f"median of {args.runs} runs after warm-up")
    print(f"{'net':<6}{'dtype':<10}{'fwd+bwd ms':>12}{'cached target ms':>18}")
    for net in args.nets.split(","):
        for dt in dtypes:
            lp = load_lpips(net, compute_dtype=dt)
            ms_both = _median_ms(both, lp, x, y, runs=args.runs)
            fy = feats(lp, y)
            ms_cached = _median_ms(cached, lp, x, fy, runs=args.runs)
            print(f"{net:<6}{jnp.dtype(dt).name:<10}{ms_both:>12.1f}{ms_cached:>18.1f}")


if __name__ == "__main__":
    main()
