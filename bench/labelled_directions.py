#!/usr/bin/env python3
"""How well a direction fitted from labelled samples (`editing.labelled`) recovers an attribute, fitted in
the full space (components=0) and in the span of the generator's first K principal directions (the
prior; --components=K, default 20).

Attributes, all computed from the generator itself, so that the truth is known:
  projection  whether a sample's code lies above the median along a random unit vector u of the fit space
              (W for a StyleGAN2, z for the demo DCGAN); the truth is u.
  top, left_right, contrast, red_blue
              pixel properties of a sample's image: the mean brightness of the top third, the left half's
              brightness less the right half's, the standard deviation of the centre's brightness, the
              mean of red less blue. The truth: the full-space fit to --reference median-split samples.
Labelling: `median` labels n consecutive samples by whether the attribute is above their median (every
sample labelled, ambiguous ones included); `clear` shows 2n samples and labels the n/2 highest 1 and the
n/2 lowest 0, skipping the middle (what a person does with the panel's "skip").
Reported per fit, as means over --trials sets of samples: held-out accuracy (the fit's own 5-fold
cross-validation), accuracy on 1,000 fresh samples (the median cut along the fitted normal against the
attribute's median cut), cosine to the truth, and for pixel properties the share of 200 fresh samples
whose property rises at strength +2.

  python3 bench/labelled_directions.py --output=bench/results/labelled_directions_demo.json   # the demo generator
  python3 bench/labelled_directions.py --generator=CKPT --labels=20,50,200 --trials=5 --sklearn
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PIXEL = ("top", "left_right", "contrast", "red_blue")


def pixel_properties(images):
    """images [N, H, W, 3] in [-1, 1] -> {attribute: [N]}."""
    r = images.shape[1]
    lum = images.mean(-1)
    c = slice(r // 4, 3 * r // 4)
    return {"top": lum[:, : r // 3].mean((1, 2)),
            "left_right": lum[:, :, : r // 2].mean((1, 2)) - lum[:, :, r // 2:].mean((1, 2)),
            "contrast": lum[:, c, c].std((1, 2)),
            "red_blue": (images[..., 0] - images[..., 2]).mean((1, 2))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default=None, help="checkpoint (default: the demo generator)")
    ap.add_argument("--labels", default="20,50,200", help="numbers of labelled samples")
    ap.add_argument("--trials", type=int, default=5, help="sets of samples (and random u) per row")
    ap.add_argument("--attributes", default="projection," + ",".join(PIXEL))
    ap.add_argument("--labelling", default="median,clear", help="median and/or clear (see above)")
    ap.add_argument("--clear_labels", default="20", help="numbers of labels of the clear rows")
    ap.add_argument("--components", type=int, default=20, help="the prior's K")
    ap.add_argument("--reference", type=int, default=3000, help="samples of the pixel properties' truth")
    ap.add_argument("--sklearn", action="store_true",
                    help="compare with scikit-learn's LogisticRegression (C = 1 / labelled.PENALTY)")
    ap.add_argument("--output", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    if args.sklearn:
        try:
            import sklearn  # noqa: F401  (checked before any work)
        except ImportError:
            sys.exit("--sklearn needs scikit-learn: python3 -m pip install scikit-learn (or leave --sklearn out)")

    import warnings

    import jax
    import numpy as np

    warnings.filterwarnings("ignore", "Mean of empty slice")  # columns an attribute does not report

    from chunkygan_jax.demo import resolve_generator
    from chunkygan_jax.editing import labelled
    from chunkygan_jax.editing.render import render_segments
    from chunkygan_jax.editing.spaces import direction_space

    g = resolve_generator(args.generator)
    space = direction_space(g)
    k_prior = args.components
    fits = {"full": 0, "prior": k_prior}
    fresh = labelled.fit_codes(g, g.sample_codes(1000, 99))
    synth = lambda x: np.concatenate([np.asarray(render_segments(g, c[:, None].repeat(g.num_ws, 1) if space == "w+" else c,
                                                                 space)) for c in np.array_split(x, max(1, len(x) // 200))])
    props = lambda x: pixel_properties(synth(x))
    fresh_props = props(fresh)
    truth = {}
    for a in args.attributes.split(","):
        if a in PIXEL:
            ref = labelled.fit_codes(g, g.sample_codes(args.reference, 7))
            v = props(ref)[a]
            d = labelled.fit_direction(g, ref, (v > np.median(v)).astype(int), components=0).direction
            d = np.asarray(d).reshape(-1, fresh.shape[1])[0]
            truth[a] = d / np.linalg.norm(d)

    def sk_fit(x, y):
        from sklearn.linear_model import LogisticRegression
        xs = (x - x.mean(0)) / np.sqrt(((x - x.mean(0)) ** 2).sum(1).mean() / x.shape[1])
        n = LogisticRegression(C=1.0 / labelled.PENALTY, max_iter=1000).fit(xs, y).coef_[0]
        return n / np.linalg.norm(n)

    print(f"generator {args.generator or 'demo'} ({space} space, {fresh.shape[1]}-d); prior: the first {k_prior} "
          f"principal directions; device {jax.devices()[0].device_kind}")
    print("| attribute | labelling | labels | held-out acc full | held-out acc prior | fresh acc full | fresh acc prior "
          "| cos full | cos prior | +2 raises full | +2 raises prior | fit s prior | sklearn cos |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for labelling in args.labelling.split(","):
        counts = args.labels if labelling == "median" else args.clear_labels
        for attribute in args.attributes.split(","):
            if labelling == "clear" and attribute == "projection":
                continue
            for n in (int(v) for v in counts.split(",")):
                got = {name: [] for name in fits}
                sk = []
                for trial in range(args.trials):
                    shown = n if labelling == "median" else 2 * n
                    seeds = np.arange(10_000 * (trial + 1), 10_000 * (trial + 1) + shown)
                    codes = np.stack([labelled.sample_code(g, s) for s in seeds])
                    if attribute == "projection":
                        u = np.random.RandomState(trial).randn(codes.shape[1])
                        u /= np.linalg.norm(u)
                        value, fresh_value = codes @ u, fresh @ u
                    else:
                        u, value, fresh_value = truth[attribute], props(codes)[attribute], fresh_props[attribute]
                    if labelling == "median":
                        y = (value > np.median(value)).astype(int)
                    else:
                        order = np.argsort(value)
                        codes = codes[np.r_[order[: n // 2], order[-(n - n // 2):]]]
                        y = np.r_[np.zeros(n // 2), np.ones(n - n // 2)].astype(int)
                    if min(y.sum(), n - y.sum()) < labelled.MIN_PER_CLASS:
                        continue
                    for name, k in fits.items():
                        t = time.perf_counter()
                        found = labelled.fit_direction(g, codes, y, components=k)
                        took = time.perf_counter() - t
                        d = np.asarray(found.direction).reshape(-1, fresh.shape[1])[0]
                        unit = d / np.linalg.norm(d)
                        s = fresh @ unit
                        fresh_acc = np.mean((s > np.median(s)) == (fresh_value > np.median(fresh_value)))
                        raises = float("nan")
                        if attribute in PIXEL:
                            held = fresh[:200]
                            raises = float(np.mean(props(held + 2 * d)[attribute] > fresh_props[attribute][:200]))
                        got[name].append([found.record["accuracy"], fresh_acc, float(unit @ u), raises, took])
                    if args.sklearn and attribute == "projection":
                        sk.append(float(sk_fit(codes, y) @ u))
                if not got["full"]:
                    continue
                mean = {name: np.mean(np.asarray(v, float), axis=0) for name, v in got.items()}
                record = {"attribute": attribute, "labelling": labelling, "labels": n, "trials": len(got["full"]),
                          "components": k_prior}
                for name, m in mean.items():
                    record[name] = {"held_out_accuracy": round(float(m[0]), 3), "fresh_accuracy": round(float(m[1]), 3),
                                    "cos_truth": round(float(m[2]), 3), "fit_s": round(float(m[4]), 3)}
                    if attribute in PIXEL:
                        record[name]["plus2_raises"] = round(float(m[3]), 3)
                        record[name]["held_out_min"] = round(float(np.min([v[0] for v in got[name]])), 3)
                if sk:
                    record["sklearn_cos_truth"] = round(float(np.mean(sk)), 3)
                rows.append(record)
                f = lambda v: "-" if v is None or np.isnan(v) else f"{v:.3f}"
                print(f"| {attribute} | {labelling} | {n} | {f(mean['full'][0])} | {f(mean['prior'][0])} | "
                      f"{f(mean['full'][1])} | {f(mean['prior'][1])} | {f(mean['full'][2])} | {f(mean['prior'][2])} | "
                      f"{f(mean['full'][3])} | {f(mean['prior'][3])} | {mean['prior'][4]:.2f} | "
                      f"{f(record.get('sklearn_cos_truth', float('nan')))} |", flush=True)
    if args.output:
        out = {"generator": args.generator or "demo", "space": space, "dim": int(fresh.shape[1]),
               "components": k_prior, "reference": args.reference, "device": jax.devices()[0].device_kind,
               "rows": rows}
        Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
