"""Pivotal tuning on real face photographs: LPIPS and the identity proxy before and after, editability,
the delta's size, and the time per image tuned alone and in one batch.

The photos are the public-domain / CC0 portraits that ship inside installed packages (astronaut.png of
scikit-image, grace_hopper.jpg of matplotlib, camera.png of scikit-image; see tests/real_photos.py),
aligned the FFHQ way to the generator's resolution and inverted together with invert()'s defaults (8
segments, 500 steps, G^S masks). Then:
  - tuning, all photos in one batched program, with the given settings (default: TuningSettings());
  - LPIPS (the inversion's) and the identity proxy (dlib's face descriptor, chunkygan_jax.identity)
    against the aligned photo, before and after, on the images as shown (a grey photo's in grey);
  - editability: the mean absolute pixel change of the `pca:0` edit at strength 3 on the tuned and on
    the untuned projection;
  - timing: a batch of 4 (the photos, the first repeated) in one program against each photo tuned alone,
    in interleaved rounds (same settings, side by side in this process): the steady ms/step per image of
    each (compile time is reported apart, for the main run);
  - arithmetic: XLA's count of one step's floating-point operations, alone and for the batch of 4, and
    the share of LPIPS in it (what a batch cannot share: every image has its own LPIPS terms);
  - a sheet: photo | segments | segments + tuning | the edit on both; and the same pasted back into
    each photo (--pasted_sheet).

Usage: python3 bench/tuning_real.py [--steps 500] [--tune_steps 100] [--rank 4] [--lr 0.01]
           [--output bench/results/tuning_real.json] [--sheet docs/images/tuning_real.png]
           [--pasted_sheet docs/images/tuning_real_pasted.png] [--overwrite]
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from chunkygan_jax import io  # noqa: E402
from chunkygan_jax.align import align, as_mode, load_photo, paste_back  # noqa: E402
from chunkygan_jax.demo import resolve_generator  # noqa: E402
from chunkygan_jax.editing import DirectionEdit, edit_result, resolve_direction  # noqa: E402
from chunkygan_jax.editing.sheets import tile_sheet  # noqa: E402
from chunkygan_jax.identity import IdentityModel  # noqa: E402
from chunkygan_jax.inversion import invert_batch  # noqa: E402
from chunkygan_jax.lpips import resize_for_lpips  # noqa: E402
from chunkygan_jax.report import enlarge, sheet_scale  # noqa: E402
from chunkygan_jax.tuning import TuningSettings, prepare, tune_results  # noqa: E402
import real_photos  # noqa: E402

PHOTOS = ("astronaut", "grace_hopper", "camera")


def _flops(fn, *args) -> float:
    cost = fn.lower(*args).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def arithmetic(inverted, g, settings) -> dict:
    """GFLOP of one tuning step (XLA's cost analysis) alone and for a batch of 4, and of the LPIPS passes
    one image's step makes: the composite's forward and backward, and with the locality term the tuned
    nearby image's forward and backward plus the original's forward."""
    import jax
    import jax.numpy as jnp

    step = lambda run: _flops(run.progs["step"], run.deltas, run.opt_state, run.nets, run.batch, np.int32(0), run.hyper)
    one = prepare(inverted[:1], g, settings)
    four = prepare((list(inverted) * 4)[:4], g, settings)
    lp, x = one.nets[1], one.batch["target"]
    res = inverted[0].settings.get("lpips_resolution", 256)
    feats = lambda im: lp.features(resize_for_lpips(im, res))
    fwd = _flops(jax.jit(feats), x)
    fwd_bwd = _flops(jax.jit(jax.grad(lambda im: jnp.sum(lp.distance_from_features(feats(im), one.batch["target_features"])))), x)
    passes = fwd_bwd + (fwd_bwd + fwd if settings.locality_weight > 0 else 0.0)
    alone, batched = step(one), step(four)
    return {"step_gflop_alone": alone / 1e9, "step_gflop_batch4": batched / 1e9,
            "batch4_per_image_over_alone": batched / 4 / alone,
            "lpips_gflop_per_image": passes / 1e9, "lpips_share": passes / alone}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default=None, help="checkpoint (default: the demo face generator)")
    ap.add_argument("--segments", type=int, default=8)
    ap.add_argument("--steps", type=int, default=500)
    d = TuningSettings()
    ap.add_argument("--tune_steps", type=int, default=d.steps)
    ap.add_argument("--rank", type=int, default=d.rank)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--locality_weight", type=float, default=d.locality_weight)
    ap.add_argument("--store", default=d.store)
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds of batched against alone (0: none)")
    ap.add_argument("--no_arithmetic", action="store_true", help="skip the operation counts")
    ap.add_argument("--timing_steps", type=int, default=10, help="tuning steps of each timed run")
    ap.add_argument("--output", default="bench/results/tuning_real.json")
    ap.add_argument("--sheet", default="docs/images/tuning_real.png")
    ap.add_argument("--pasted_sheet", default="docs/images/tuning_real_pasted.png",
                    help="the same columns pasted back into each photo (at half the photo's size)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --sheet / --output")
    args = ap.parse_args()
    for path in (args.output, args.sheet, args.pasted_sheet):  # before the long work, not after it
        if path and Path(path).exists() and not args.overwrite:
            ap.error(f"{path} exists; pass --overwrite to replace it")
    settings = TuningSettings(steps=args.tune_steps, rank=args.rank, lr=args.lr,
                              locality_weight=args.locality_weight, store=args.store).validate()

    g = resolve_generator(args.generator)
    found = {name: align(getattr(real_photos, name)(), g.resolution) for name in PHOTOS}
    photos = {name: crop for name, (crop, _) in found.items()}
    t0 = time.perf_counter()
    inverted = invert_batch(list(photos.values()), g, segments=args.segments, steps=args.steps)
    print(f"inverted {len(photos)} photos in {time.perf_counter() - t0:.1f} s", flush=True)

    t0 = time.perf_counter()
    tuned = tune_results(inverted, g, settings)
    batch_seconds = time.perf_counter() - t0
    rec0 = tuned[0].tuning["record"]
    batch = {"seconds": batch_seconds, "compile_seconds": rec0["compile_seconds"], "step_ms": rec0["step_ms"]}
    print(f"tuned the batch in {batch_seconds:.1f} s ({rec0['compile_seconds']:.1f} s compiling, "
          f"{rec0['step_ms']:.0f} ms/step)", flush=True)
    # Timing, batched against alone: `rounds` rounds, each the batch once and then each photo alone, with
    # `timing_steps` steps (compiled once before); the steady ms/step per image, so that a change of the
    # machine's load between the two sides is spread over both.
    timing = dataclasses.replace(settings, steps=args.timing_steps)
    rounds = []
    four = (list(inverted) * 4)[:4]
    if args.rounds:
        tune_results(four, g, timing)  # compile both programs first
        tune_results(inverted[:1], g, timing)
    for k in range(args.rounds):
        b = tune_results(four, g, timing)[0].tuning["record"]["step_ms"] / len(four)
        a = [tune_results([r], g, timing)[0].tuning["record"]["step_ms"] for r in inverted]
        rounds.append({"batched_ms_per_image_step": b, "alone_ms_per_step": a, "ratio": b / float(np.mean(a))})
        print(f"  round {k}: {rounds[-1]}", flush=True)

    cost = None if args.no_arithmetic else arithmetic(inverted, g, settings)
    if cost is not None:
        print(f"arithmetic: {json.dumps(cost)}", flush=True)

    ident = IdentityModel()
    direction = resolve_direction("pca:0", g)
    rows, sheet, pasted = [], [], []
    for name, before, after in zip(photos, inverted, tuned):
        target = photos[name]
        # everything is measured on the images as shown: a grey photo's faces in grey
        mode = before.settings.get("photo_mode", "rgb")
        seen = lambda x: as_mode(io.to_uint8(x), mode)
        id_before, id_after = ident.distances(target, [seen(x.clipped) for x in (before, after)])
        edit = [DirectionEdit(direction, 3.0, name="pca:0")]
        e_before, e_after = edit_result(before, g, edit), edit_result(after, g, edit)
        move = lambda e, r: float(np.mean(np.abs(seen(e.clipped).astype(np.float32) - seen(r.clipped)))) / 127.5
        rec = after.tuning["record"]
        row = {"photo": name, "lpips_before": rec["lpips_before"], "lpips_after": rec["lpips_after"],
               "lpips_ratio": rec["lpips_after"] / rec["lpips_before"], "identity_before": id_before,
               "identity_after": id_after, "identity_ratio": id_after / id_before,
               "edit_move_untuned": move(e_before, before), "edit_move_tuned": move(e_after, after),
               "steps_run": rec["steps_run"], "delta_bytes": rec["delta_bytes"], "params_bytes": rec["params_bytes"]}
        row["edit_ratio"] = row["edit_move_tuned"] / row["edit_move_untuned"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        k = sheet_scale(g.resolution)
        shown = (before.target, before.clipped, after.clipped, e_before.clipped, e_after.clipped)
        sheet.append([enlarge(io.to_uint8(shown[0]), k)] + [enlarge(seen(x), k) for x in shown[1:]])
        photo = getattr(real_photos, name)()
        full = [np.asarray(load_photo(photo))] + [paste_back(photo, seen(x), found[name][1])
                                                  for x in shown[1:]]
        pasted.append([np.asarray(Image.fromarray(x).resize((x.shape[1] // 2, x.shape[0] // 2), Image.Resampling.LANCZOS))
                       for x in full])
    record = {"settings": settings.to_dict(), "inversion": {"segments": args.segments, "steps": args.steps},
              "generator": args.generator or "demo", "rows": rows, "batch": batch, "timing_rounds": rounds,
              "arithmetic": cost, "batched_over_alone": float(np.median([r["ratio"] for r in rounds])) if rounds else None}
    for path in (args.output, args.sheet, args.pasted_sheet):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(record, indent=2))
    io.save_png(args.sheet, tile_sheet(sheet, col_labels=["photo", "segments", "segments + tuning",
                                                          "pca:0 x3", "pca:0 x3, tuned"]), overwrite=True)
    io.save_png(args.pasted_sheet, tile_sheet(pasted, col_labels=["photo", "segments", "segments + tuning",
                                                                  "pca:0 x3", "pca:0 x3, tuned"]), overwrite=True)
    print(json.dumps({k: v for k, v in record.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
