#!/usr/bin/env python3
"""What makes a direction fitted to 20 labels (`editing.labelled`) generalise: the samples shown, the span
the fit is restricted to, the L2 penalty, and the cross-validation that reports its held-out accuracy.

A set: 40 samples shown; the 10 with the highest value of a pixel property labelled 1 and the 10 lowest 0,
the middle skipped (what a person does with the panel's "skip"). --sets sets per configuration, each from
its own block of 400 seeds (block 10 + s):
  selection  iid: the block's first 40 seeds; spread: the panel's 40 picks of the block
             (`labelled.panel_seeds`: farthest-point order in the first 10 principal coordinates).
  components the fit's span: the first K principal directions (0: the full space).
  penalty    the L2 weight on the scaled codes: 1/N (the library's default), 10/N, or chosen per fit by an inner
             stratified 5-fold cross-validation over (0.1, 1, 10, 100)/N (nested inside the reported folds,
             so the report never sees the folds it tuned on).
  report     the held-out accuracy reported: stratified 5-fold (the library's) or leave-one-out.
Per configuration and property: the reported held-out accuracy's mean, min and share of sets >= 0.8, and
the accuracy on fresh clear cases (the highest and lowest quarter of 1,000 fresh samples, cut at the
median along the fitted normal), which no labelled sample enters. The 5-fold rows of a fixed penalty are
the library's own `fit_direction` (1/N is its default, `labelled.PENALTY`).

  python3 bench/labelled_twenty.py --output=bench/results/labelled_twenty_demo.json   # the demo generator
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROPERTIES = ("top", "left_right", "red_blue")
GRID = (0.1, 1.0, 10.0, 100.0)  # the inner cross-validation's penalties, times 1/N
SHOWN, LABELS, POOL_BLOCK0 = 40, 20, 10


def pixel_properties(images):
    """images [N, H, W, 3] in [-1, 1] -> {property: [N]}: the top third's brightness, the left half's less
    the right half's, red less blue."""
    r = images.shape[1]
    lum = images.mean(-1)
    return {"top": lum[:, : r // 3].mean((1, 2)),
            "left_right": lum[:, :, : r // 2].mean((1, 2)) - lum[:, :, r // 2:].mean((1, 2)),
            "red_blue": (images[..., 0] - images[..., 2]).mean((1, 2))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default=None, help="checkpoint (default: the demo generator)")
    ap.add_argument("--sets", type=int, default=24, help="label sets per configuration")
    ap.add_argument("--properties", default=",".join(PROPERTIES))
    ap.add_argument("--components", default="0,5,8,10,20", help="the fit's spans (0: the full space)")
    ap.add_argument("--penalties", default="1/N,10/N,inner", help="of 1/N, 10/N, inner")
    ap.add_argument("--reports", default="5-fold,leave-one-out", help="of 5-fold, leave-one-out")
    ap.add_argument("--fresh", type=int, default=1000, help="fresh samples of the generalisation measure")
    ap.add_argument("--output", default=None, help="write the rows as JSON here")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from chunkygan_jax.demo import resolve_generator
    from chunkygan_jax.editing import labelled
    from chunkygan_jax.editing.render import render_segments
    from chunkygan_jax.editing.spaces import direction_space

    g = resolve_generator(args.generator)
    space = direction_space(g)
    properties = args.properties.split(",")
    spans = [int(k) for k in args.components.split(",")]

    def images(x):  # codes in the fit space -> images
        x = x[:, None].repeat(g.num_ws, 1) if space == "w+" else x
        return np.concatenate([np.asarray(render_segments(g, c, space)) for c in np.array_split(x, max(1, len(x) // 200))])

    fresh = labelled.fit_codes(g, g.sample_codes(args.fresh, 99))
    fresh_values = pixel_properties(images(fresh))
    per_row = jax.vmap(labelled._newton, in_axes=(None, None, 0, None))  # sample-weight rows
    fit_many = jax.jit(jax.vmap(per_row, in_axes=(None, None, None, 0)))  # x penalties

    def scaled(x):
        m = x.mean(0)
        return (x - m) / np.sqrt(((x - m) ** 2).sum(1).mean() / x.shape[1])

    def fits(xs, y, rows, penalties):
        """normals [P, F, D], biases [P, F] for sample-weight rows [F, N] and penalties [P]."""
        out = fit_many(jnp.asarray(xs), jnp.asarray(y, jnp.float32), jnp.asarray(rows, jnp.float32),
                       jnp.asarray(penalties, jnp.float32))
        return (np.asarray(a, np.float64) for a in out)

    def inner_choice(xs, y, rows):
        """Per row of `rows` [F, N] (training samples), the index into GRID of the penalty with the best
        inner stratified 5-fold accuracy on that row's samples (ties: the larger penalty); one program."""
        inner, tests = [], []
        for train in rows:
            idx = np.flatnonzero(train)
            fold = labelled._folds(y[idx], 5, xs[idx], seed=1)
            for f in range(5):
                w = np.zeros(len(y))
                w[idx[fold != f]] = 1
                inner.append(w)
                tests.append(idx[fold == f])
        normals, biases = fits(xs, y, np.stack(inner), np.asarray(GRID) / len(y))  # [P, F*5, D]
        counts = np.stack([(((xs[t] @ normals[:, i].T + biases[:, i]) > 0) == (y[t, None] == 1)).sum(0)
                           for i, t in enumerate(tests)]).reshape(len(rows), 5, len(GRID)).sum(1)  # correct per P
        return [int(np.flatnonzero(c == c.max())[-1]) for c in counts]

    def evaluate(x, y, penalty, report):
        """(reported held-out accuracy, the final fit's normal) of one configuration; x in the span's coordinates."""
        xs = scaled(x)
        n = len(y)
        fold = labelled._folds(y, 5, xs) if report == "5-fold" else np.arange(n)
        k = fold.max() + 1
        rows = np.concatenate([np.stack([fold != f for f in range(k)]), np.ones((1, n), bool)])
        normals, biases = fits(xs, y, rows, np.asarray(GRID) / n)  # every penalty of the grid, every fold
        choice = inner_choice(xs, y, rows) if penalty == "inner" else [GRID.index(float(penalty[:-2]))] * (k + 1)
        correct = np.zeros(n, bool)
        for f in range(k):
            test = fold == f
            correct[test] = (xs[test] @ normals[choice[f], f] + biases[choice[f], f] > 0) == (y[test] == 1)
        return float(correct.mean()), normals[choice[k], k]

    penalties, reports = args.penalties.split(","), args.reports.split(",")
    if not set(penalties) <= {"1/N", "10/N", "inner"} or not set(reports) <= {"5-fold", "leave-one-out"}:
        sys.exit("--penalties: of 1/N, 10/N, inner; --reports: of 5-fold, leave-one-out")
    configs = [(sel, k, pen, rep) for sel in ("iid", "spread") for k in spans for pen in penalties for rep in reports]
    got = {c: {p: [] for p in properties} for c in configs}
    started = time.perf_counter()
    bases = {k: labelled.prior_basis(g, k) for k in spans}
    for s in range(args.sets):
        block = POOL_BLOCK0 + s
        for sel in ("iid", "spread"):
            seeds = (list(range(block * labelled.SPREAD_POOL, block * labelled.SPREAD_POOL + SHOWN)) if sel == "iid"
                     else labelled.panel_seeds(g, block * labelled.SPREAD_PICKS, SHOWN))
            codes = np.stack([labelled.sample_code(g, q) for q in seeds])
            values = pixel_properties(images(codes))
            for p in properties:
                order = np.argsort(values[p])
                x = codes[np.r_[order[: LABELS // 2], order[-LABELS // 2:]]]
                y = np.repeat([0, 1], LABELS // 2)
                for k in spans:
                    for pen in penalties:
                        for rep in reports:
                            if pen != "inner" and rep == "5-fold":  # the library's own fit
                                penalty = {"1/N": 1.0, "10/N": 10.0}[pen] / len(y)
                                found = labelled.fit_direction(g, x, y, components=k, penalty=penalty)
                                acc = found.record["accuracy"]
                                unit = np.asarray(found.direction).reshape(-1, x.shape[1])[0]
                            else:
                                basis = bases[k]
                                acc, normal = evaluate(x @ basis if basis is not None else x, y, pen, rep)
                                unit = basis @ normal if basis is not None else normal
                            score = fresh @ (unit / np.linalg.norm(unit))
                            fv = fresh_values[p]
                            q = len(fv) // 4
                            ranked = np.argsort(fv)
                            clear = np.r_[ranked[:q], ranked[-q:]]
                            fresh_acc = np.mean((score[clear] > np.median(score)) == (np.arange(2 * q) >= q))
                            got[(sel, k, pen, rep)][p].append((acc, fresh_acc))
        print(f"set {s + 1}/{args.sets} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    print(f"generator {args.generator or 'demo'} ({space}, {fresh.shape[1]}-d); {args.sets} sets of {LABELS} "
          f"labels from {SHOWN} shown; device {jax.devices()[0].device_kind}")
    head = " | ".join(f"{p} mean | {p} min | {p} >=0.8 | {p} fresh" for p in properties)
    print(f"| selection | components | penalty | report | {head} |")
    print("|---|---|---|---|" + "---|" * (4 * len(properties)))
    rows = []
    for (sel, k, pen, rep), per in got.items():
        record = {"selection": sel, "components": k, "penalty": pen, "report": rep}
        cells = []
        for p, v in per.items():
            a = np.asarray(v)
            record[p] = {"held_out_mean": round(float(a[:, 0].mean()), 3),
                         "held_out_min": round(float(a[:, 0].min()), 3),
                         "share_at_least_0_8": round(float((a[:, 0] >= 0.8 - 1e-9).mean()), 3),
                         "fresh_accuracy": round(float(a[:, 1].mean()), 3)}
            cells += [f"{x:.3f}" for x in record[p].values()]
        rows.append(record)
        print(f"| {sel} | {k or 'full'} | {pen} | {rep} | " + " | ".join(cells) + " |")
    if args.output:
        out = {"generator": args.generator or "demo", "space": space, "dim": int(fresh.shape[1]), "sets": args.sets,
               "labels": LABELS, "shown": SHOWN, "fresh": args.fresh, "device": jax.devices()[0].device_kind,
               "seconds": round(time.perf_counter() - started, 1), "rows": rows}
        Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
