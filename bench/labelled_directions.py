#!/usr/bin/env python3
"""How well a direction fitted from labelled samples (`editing.labelled`) recovers a known attribute.

Two toy attributes, both computed from the generator itself, so that the truth is known:
  projection  label = whether a sample's code lies above the median along a random unit vector u of the
              fit space (W for a StyleGAN2, z for the demo DCGAN); reported: held-out accuracy (the
              fit's own cross-validation), accuracy on 1,000 fresh samples, and the cosine between the
              fitted direction and u.
  brightness  label = whether the top third of a sample's image is brighter than the median; reported:
              held-out accuracy, and on 200 fresh samples the share whose top third gets brighter when
              moved by strength +2 along the direction.
With --sklearn, the same labels also go to scikit-learn's LogisticRegression (C=1, on the same scaled
codes), if it is installed, for comparison.

  python3 bench/labelled_directions.py                                # the demo generator
  python3 bench/labelled_directions.py --generator=CKPT --labels=20,50,200 --trials=5 --sklearn
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default=None, help="checkpoint (default: the demo generator)")
    ap.add_argument("--labels", default="20,50,200", help="numbers of labelled samples")
    ap.add_argument("--trials", type=int, default=5, help="random attributes (u) per number of labels")
    ap.add_argument("--attributes", default="projection,brightness")
    ap.add_argument("--sklearn", action="store_true", help="compare with scikit-learn's LogisticRegression")
    args = ap.parse_args()

    import warnings

    import jax
    import numpy as np

    warnings.filterwarnings("ignore", "Mean of empty slice")  # columns an attribute does not report

    from chunkygan_jax.demo import resolve_generator
    from chunkygan_jax.editing import labelled
    from chunkygan_jax.editing.principal import _synthesize
    from chunkygan_jax.editing.spaces import direction_space

    g = resolve_generator(args.generator)
    space = direction_space(g)
    fresh = labelled.fit_codes(g, g.sample_codes(1000, 99))
    synth = lambda x: _synthesize(g, x[:, None].repeat(g.num_ws, 1) if space == "w+" else x, space)
    top = lambda imgs: imgs[:, : g.resolution // 3].mean(axis=(1, 2, 3))

    def sk_fit(x, y):
        from sklearn.linear_model import LogisticRegression
        xs = (x - x.mean(0)) / np.sqrt(((x - x.mean(0)) ** 2).sum(1).mean() / x.shape[1])
        n = LogisticRegression(C=1.0, max_iter=1000).fit(xs, y).coef_[0]
        return n / np.linalg.norm(n)

    print(f"generator {args.generator or 'demo'} ({space} space, {fresh.shape[1]}-d); device {jax.devices()[0].device_kind}")
    print("| attribute | labels | held-out acc | fresh acc | cos(u) | +2 raises | fit s | sklearn cos(u) |")
    print("|---|---|---|---|---|---|---|---|")
    for attribute in args.attributes.split(","):
        for n in (int(v) for v in args.labels.split(",")):
            rows = []
            for trial in range(args.trials):
                seeds = np.arange(10_000 * (trial + 1), 10_000 * (trial + 1) + n)
                codes = np.stack([labelled.sample_code(g, s) for s in seeds])
                if attribute == "projection":
                    u = np.random.RandomState(trial).randn(codes.shape[1])
                    u /= np.linalg.norm(u)
                    cut = np.median(fresh @ u)
                    y = (codes @ u > cut).astype(int)
                else:
                    value = top(synth(codes))
                    y = (value > np.median(value)).astype(int)
                if min(y.sum(), n - y.sum()) < labelled.MIN_PER_CLASS:
                    continue
                t = time.perf_counter()
                found = labelled.fit_direction(g, codes, y)
                took = time.perf_counter() - t
                d = np.asarray(found.direction).reshape(-1, fresh.shape[1])[0]
                unit = d / np.linalg.norm(d)
                row = [found.record["accuracy"], float("nan"), float("nan"), float("nan"), took, float("nan")]
                if attribute == "projection":
                    normal = unit  # the fresh accuracy uses the median cut along the fitted normal
                    fy = fresh @ u > cut
                    row[1] = max(np.mean((fresh @ normal > np.median(fresh @ normal)) == fy), 0)
                    row[2] = float(unit @ u)
                    if args.sklearn:
                        row[5] = float(sk_fit(codes, y) @ u)
                else:
                    held = fresh[:200]
                    row[3] = float(np.mean(top(synth(held + 2 * d)) > top(synth(held))))
                rows.append(row)
            m = np.nanmean(np.asarray(rows, float), axis=0) if rows else [float("nan")] * 6
            fmt = lambda v: "-" if np.isnan(v) else f"{v:.3f}"
            print(f"| {attribute} | {n} | {fmt(m[0])} | {fmt(m[1])} | {fmt(m[2])} | {fmt(m[3])} | {m[4]:.2f} | "
                  f"{fmt(m[5])} |", flush=True)


if __name__ == "__main__":
    main()
