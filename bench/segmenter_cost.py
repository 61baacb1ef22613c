"""Extra cost of the segment generator G^S in the inversion step, against fixed masks.

Times the jitted ChunkyGAN step (n codes -> masks -> composite -> LPIPS -> gradients -> Adam) of
`Inverter` with FixedMasks and with the k-means segmenter (X^S learned, and frozen), on the same
random-weight generator. Each configuration is compiled first; then `--repeats` calls of `--steps` steps
each are timed, interleaved between configurations so that a change in machine load hits all of them, and
the median ms/step is reported.

The generator has the shape of the golden `nvidia_P2` network (64 px, w_dim 128, 4 mapping layers) with
random weights; `--resolution` picks another size with the same channel rule.

Usage: python3 bench/segmenter_cost.py [--segments 2,8] [--steps 5] [--repeats 7] [--lpips vgg]
                                       [--lpips_resolution 256] [--resolution 64]
"""

import argparse
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from chunkygan_jax.generators import StyleGAN2, StyleGAN2Config, random_params
from chunkygan_jax.inversion import InversionSettings, Inverter
from chunkygan_jax.masks.segmenter import kmeans_segmenter
from chunkygan_jax.masks.sources import FixedMasks, default_layout


def small_generator(resolution: int) -> StyleGAN2:
    """P2-shaped (channel_base 1024, channel_max 128) random generator with ToRGB scaled by 1/4."""
    res = [2 ** i for i in range(2, int(np.log2(resolution)) + 1)]
    config = StyleGAN2Config(resolution=resolution, z_dim=128, w_dim=128, mapping_layers=4,
                             channels=tuple((r, min(1024 // r, 128)) for r in res), conv_clamp=256)
    params = random_params(0, config)
    for block in params["synthesis"].values():
        block["torgb"]["weight"] = block["torgb"]["weight"] * 0.25
        block["torgb"]["bias"] = block["torgb"]["bias"] * 0.25
    return StyleGAN2(config=config, params=params)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", default="2,8")
    ap.add_argument("--steps", type=int, default=5, help="steps per timed call")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--lpips", default="vgg")
    ap.add_argument("--lpips_resolution", default="256")
    ap.add_argument("--resolution", type=int, default=64)
    args = ap.parse_args()

    g = small_generator(args.resolution)
    rng = np.random.RandomState(0)
    target = np.clip(rng.uniform(-1, 1, (1, g.resolution, g.resolution, 3)), -1, 1).astype(np.float32)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {g.resolution} px generator "
          f"(w_dim {g.w_dim}), LPIPS-{args.lpips} at {args.lpips_resolution}, {args.steps} steps per call, "
          f"median of {args.repeats} calls after compilation")
    print(f"{'n':>3} {'fixed ms':>10} {'G^S learned':>12} {'extra':>8} {'G^S frozen':>11} {'extra':>8}")
    with tempfile.TemporaryDirectory() as cache:
        for n in (int(v) for v in args.segments.split(",")):
            seg = kmeans_segmenter(g, n, cache_dir=cache)
            settings = InversionSettings(segments=n, steps=10 ** 6, lambda_reg=0.0, lpips_net=args.lpips,
                                         lpips_resolution=args.lpips_resolution)
            sources = {"fixed": FixedMasks(jnp.asarray(default_layout(n, g.resolution))),
                       "learned": seg, "frozen": seg.freeze()}
            runs = {}
            for name, source in sources.items():
                inv = Inverter(g, settings, source)
                batch = inv.make_batch(target)
                state = inv.advance(inv.start(inv.initial_latents(1), 1), batch, args.steps)  # compile
                jax.block_until_ready(state.latents)
                runs[name] = [inv, batch, state, []]
            for _ in range(args.repeats):
                for run in runs.values():
                    inv, batch, state, times = run
                    t0 = time.perf_counter()
                    state = inv.advance(state, batch, args.steps)
                    jax.block_until_ready(state.latents)
                    times.append((time.perf_counter() - t0) * 1e3 / args.steps)
                    run[2] = state
            ms = {k: statistics.median(v[3]) for k, v in runs.items()}
            print(f"{n:>3} {ms['fixed']:>10.1f} {ms['learned']:>12.1f} {ms['learned'] - ms['fixed']:>+8.1f} "
                  f"{ms['frozen']:>11.1f} {ms['frozen'] - ms['fixed']:>+8.1f}")


if __name__ == "__main__":
    main()
