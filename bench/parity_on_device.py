#!/usr/bin/env python3
"""Parity of our StyleGAN2 with the official generators' golden outputs, on whatever device JAX uses
(fp32, precision highest). Run it on a GPU/TPU to check that no TF32/bf16 slipped into the fp32 path.

  python3 bench/parity_on_device.py --golden=../shared/golden
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

from chunkygan_jax.generators import stylegan2_from_nvidia, stylegan2_from_rosinality


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--golden", default=str(Path(__file__).resolve().parents[2] / "shared" / "golden"))
    args = ap.parse_args()
    out = {"device": jax.devices()[0].device_kind, "jax": jax.__version__}
    synth = jax.jit(lambda g, ws, mode: g.synthesis(ws, noise_mode=mode), static_argnums=2)
    for name, clamp in (("nvidia_P1", None), ("nvidia_P2", 256)):
        d = np.load(Path(args.golden) / f"{name}.npz")
        state = {k[6:]: d[k] for k in d.files if k.startswith("state/")}
        g = stylegan2_from_nvidia(state, conv_clamp=clamp)
        ws = jnp.asarray(d["ws_in"])
        for mode in ("const", "none"):
            img = np.transpose(np.asarray(synth(g, ws, mode)), (0, 3, 1, 2))
            out[f"{name}/img_{mode}"] = float(np.abs(img - d[f"img_{mode}"]).max())
        out[f"{name}/ws_psi1"] = float(np.abs(np.asarray(g.mapping(jnp.asarray(d["z"]))) - d["ws_psi1"]).max())
    d = np.load(Path(args.golden) / "rosinality_R1.npz")
    g = stylegan2_from_rosinality({k[6:]: d[k] for k in d.files if k.startswith("state/")})
    img = np.transpose(np.asarray(synth(g, jnp.asarray(d["latent_in"]), "const")), (0, 3, 1, 2))
    out["rosinality_R1/img"] = float(np.abs(img - d["img"]).max())
    out["all_within_1e-4"] = all(v <= 1e-4 for k, v in out.items() if "/" in k)
    print(json.dumps(out, indent=1))
    return 0 if out["all_within_1e-4"] else 1


if __name__ == "__main__":
    sys.exit(main())
