#!/usr/bin/env python3
"""Our conversion of NVIDIA pickles (TensorFlow and PyTorch, conditional or not) against the official
generator's outputs, on whatever device JAX uses (fp32): conversion time, the largest difference of
the mapping (psi 1 and 0.7) and of the images from w, W+ and W+ without noise.

  python3 bench/foreign_parity.py                              # the fixtures in tests/fixtures
  python3 bench/foreign_parity.py --pickles=DIR/tf_config_f1024.pkl   # with DIR/tf_config_f1024.npz

The .npz beside each pickle holds the official outputs (tests/fixtures/make_official_fixtures.py
writes both; `--config_f=1024 --out=DIR` makes a full-size config-f pair).
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

from chunkygan_jax.converters import stylegan2 as conv

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def measure(path: Path) -> dict:
    official = np.load(path.with_suffix(".npz"))
    start = time.perf_counter()
    g, record = conv.convert_file(path)
    out = {"format": record["format"], "resolution": g.resolution, "classes": g.num_classes,
           "convert_s": round(time.perf_counter() - start, 2)}
    labels = jnp.asarray(official["labels"]) if g.num_classes else None
    z = jnp.asarray(official["z"])
    diff = lambda a, b: float(np.abs(np.asarray(a) - b).max())
    out["ws"] = diff(g.mapping(z, label=labels), official["ws"])
    out["ws_trunc"] = diff(g.mapping(z, label=labels, truncation_psi=0.7, truncation_cutoff=4), official["ws_trunc"])
    synth = jax.jit(lambda g, ws, mode: g.synthesis(ws, noise_mode=mode), static_argnums=2)
    for codes, image, mode in (("ws", "img_w", "const"), ("wplus", "img_wplus", "const"),
                               ("wplus", "img_wplus_nonoise", "none")):
        img = np.transpose(np.asarray(synth(g, jnp.asarray(official[codes]), mode)), (0, 3, 1, 2))
        out[image] = diff(img, official[image])
    out["image_scale"] = float(np.abs(official["img_w"]).max())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pickles", nargs="*", type=Path, default=sorted(FIXTURES.glob("*.pkl")))
    args = ap.parse_args()
    results = {"device": jax.devices()[0].device_kind, "jax": jax.__version__}
    for path in args.pickles:
        results[path.name] = measure(path)
        print(path.name, json.dumps(results[path.name]), flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
