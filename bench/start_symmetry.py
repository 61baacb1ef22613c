#!/usr/bin/env python3
"""Does an image's result depend on its batch and the device count? One image inverted alone on one
device against the same image inside a batch of 4 sharded over 4 devices (simulated on the CPU), with
learned masks (the default, G^S), with and without the start's per-segment offsets
(`InversionSettings.start_jitter`; 0: every segment starts from the same code). Reports how far apart
the final LPIPS and the codes end.

  python3 bench/start_symmetry.py --generator=CKPT --steps=100,500 --jitters=0,0.01,0.001 \
      --output=bench/results/start_symmetry_cpu.json
  python3 bench/start_symmetry.py --generator=CKPT --smoke     # the smallest run, to check that it works
  python3 bench/start_symmetry.py --first_step --output=bench/results/start_symmetry_first_step_cpu.json

--first_step compares only the gradient of the first step (step 0, every segment equal) of one image:
alone on one device, inside the batch of 4 under jit's partitioning over 4 devices, and under shard_map,
where each device runs the one-image program on its own row. It separates what the programs compute
from what Adam later makes of it.

The targets are uniform noise in [-0.8, 0.8] (seeded); image 1 of the 4 is the one compared.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

DEVICES = 4
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):  # before jax loads
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={DEVICES}").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

try:  # jax >= 0.7
    from jax import shard_map  # noqa: E402
except ImportError:  # pragma: no cover
    from jax.experimental.shard_map import shard_map  # noqa: E402

from chunkygan_jax import sharding  # noqa: E402
from chunkygan_jax.core import InversionSettings, inversion_core, make_loss_fn  # noqa: E402
from chunkygan_jax.demo import resolve_generator  # noqa: E402
from chunkygan_jax.inversion import Inverter  # noqa: E402
from chunkygan_jax.masks.options import make_mask_source  # noqa: E402


def run(inverter, targets):
    batch = inverter.make_batch(targets)
    state = inverter.start(inverter.initial_latents(len(targets), targets=targets), len(targets))
    state = inverter.advance(state, batch, inverter.settings.steps)
    lpips = inverter.evaluate(state.latents, batch)[3]["lpips"]
    return sharding.local_rows(state.latents)["codes"], lpips


def first_step(g, source, targets, lpips_net) -> dict:
    """Step 0's gradient of image 1: alone (one device), in the batch of 4 under jit over 4 devices, and
    under shard_map (each device its own row); the largest differences from the alone run, per part."""
    settings = InversionSettings(segments=source.segments, lpips_net=lpips_net, lpips_resolution="full")
    core = inversion_core(g, settings, source)
    loss_fn = make_loss_fn(core.settings)[0]
    grads = lambda c, latents, batch: jax.grad(lambda l: loss_fn(c.nets, l, batch, 0.0)[0])(latents)
    rows = lambda tree: jax.tree_util.tree_map(lambda x: P("data") if jnp.ndim(x) else P(), tree)
    mesh = sharding.data_mesh()
    alone_batch, alone_state = core.batch(targets[1:2]), core.init(targets[1:2])
    alone = jax.jit(grads)(core, alone_state.latents, alone_batch)
    state = core.init(targets)
    batch_of = jax.jit(shard_map(lambda c, t: c.batch(t), mesh=mesh, in_specs=(P(), P("data")),
                                 out_specs=rows(core.batch(targets[:1]))))
    batch = batch_of(core, targets)  # each row's LPIPS features by the one-image program
    mapped = jax.jit(shard_map(grads, mesh=mesh, in_specs=(P(), rows(state.latents), rows(batch)),
                               out_specs=rows(state.latents)))(core, state.latents, batch)
    place = lambda tree: jax.tree_util.tree_map(
        lambda x, spec: jax.device_put(x, jax.sharding.NamedSharding(mesh, spec)), tree, rows(tree))
    partitioned = jax.jit(grads)(core, place(state.latents), place(core.batch(targets)))
    out = {}
    for name, got in (("jit over 4 devices", partitioned), ("shard_map, one image per device", mapped)):
        out[name] = {k: float(max(np.abs(np.asarray(a)[0] - np.asarray(b)[1]).max()
                                  for a, b in zip(jax.tree_util.tree_leaves(alone[k]),
                                                  jax.tree_util.tree_leaves(got[k]))))
                     for k in alone}
    features = [np.abs(np.asarray(a)[0] - np.asarray(b)[1]).max() for a, b in
                zip(jax.tree_util.tree_leaves(alone_batch["target_features"]),
                    jax.tree_util.tree_leaves(batch["target_features"]))]
    out["largest gradient alone"] = {k: float(max(np.abs(np.asarray(x)).max() for x in jax.tree_util.tree_leaves(v)))
                                     for k, v in alone.items()}
    out["target features apart (shard_map)"] = float(max(features))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default=None, help="checkpoint (default: the demo face generator)")
    ap.add_argument("--segments", type=int, default=4)
    ap.add_argument("--steps", default="100,500", help="comma-separated step counts")
    ap.add_argument("--jitters", default="0,0.01,0.001", help="comma-separated start_jitter values")
    ap.add_argument("--lpips_net", default="alex")
    ap.add_argument("--output", default=None, help="a JSON file for the records")
    ap.add_argument("--smoke", action="store_true", help="2 segments, 2 steps, one jitter")
    ap.add_argument("--first_step", action="store_true", help="compare step 0's gradients only (see above)")
    args = ap.parse_args()
    if args.smoke:
        args.segments, args.steps, args.jitters = 2, "2", "0.001"
    if jax.device_count() != DEVICES:
        ap.error(f"needs {DEVICES} devices, found {jax.device_count()} (XLA_FLAGS is set by this script)")
    g = resolve_generator(args.generator)
    rng = np.random.RandomState(5)
    targets = rng.uniform(-0.8, 0.8, (DEVICES, g.resolution, g.resolution, 3)).astype(np.float32)
    mesh = sharding.data_mesh()
    source = make_mask_source(None, args.segments, g.resolution, generator=g)
    if args.first_step:
        record = first_step(g, source, targets, args.lpips_net)
        print(json.dumps(record, indent=1))
        if args.output:
            out = {"command": "python3 bench/start_symmetry.py " + " ".join(sys.argv[1:]), "devices": DEVICES,
                   "segments": args.segments, "resolution": g.resolution, "lpips_net": args.lpips_net,
                   "masks": "G^S (default)", "first_step": record}
            Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
        return
    records = []
    for steps in map(int, args.steps.split(",")):
        for jitter in map(float, args.jitters.split(",")):
            t = time.perf_counter()
            s = InversionSettings(segments=args.segments, space=g.default_space, steps=steps,
                                  lambda_reg=g.default_lambda_reg, lpips_net=args.lpips_net,
                                  lpips_resolution="full", start_jitter=jitter)
            batch_codes, batch_lpips = run(Inverter(g, s, source, mesh=mesh), targets)
            alone_codes, alone_lpips = run(Inverter(g, s, source), targets[1:2])
            d = np.abs(np.asarray(batch_codes[1]) - np.asarray(alone_codes[0]))
            rec = {"steps": steps, "start_jitter": jitter, "lpips": float(alone_lpips[0]),
                   "lpips_apart": abs(float(batch_lpips[1]) - float(alone_lpips[0])),
                   "median_code_difference": float(np.median(d)), "largest_code_difference": float(d.max()),
                   "seconds": round(time.perf_counter() - t, 1)}
            records.append(rec)
            print(json.dumps(rec), flush=True)
    if args.output:
        out = {"command": "python3 bench/start_symmetry.py " + " ".join(sys.argv[1:]), "devices": DEVICES,
               "segments": args.segments, "resolution": g.resolution, "lpips_net": args.lpips_net,
               "masks": "G^S (default)", "records": records}
        Path(args.output).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
