"""Slider-to-image latency of the web editor, measured through its HTTP API as the page uses it.

A slider move is one POST /api/preview (the edit with the slider's strength) answered with the PNG of
the re-rendered image; letting go of the slider is one POST /api/edits (commit, at the strength of the
last move) followed by GET /api/image/current.png. The server runs in this process on 127.0.0.1 with one keep-alive connection,
like a browser tab. After a warm-up (the first edit compiles the render program), every request uses a
new strength, so nothing comes from the render cache. Reported: median and 90th percentile in ms, for
an edit of one segment and of all segments.

The result is made of random codes of the generator (the demo generator by default) blended by the
soft default layout masks, or loaded with --latents; the direction is random, or --direction=SPEC
("pca:K" where the editing package provides it).

Usage: python3 bench/editor_latency.py [--generator=demo|random:RES|CHECKPOINT] [--latents=DIR]
       [--segments=8] [--repeats=50] [--warmup=3] [--json=FILE]
"""

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np


def build_generator(spec):
    if spec.startswith("random:"):
        from chunkygan_jax.generators import StyleGAN2, ffhq_config, random_params
        cfg = ffhq_config(int(spec.split(":", 1)[1]))
        return StyleGAN2(cfg, random_params(0, cfg)), spec
    from chunkygan_jax.demo import resolve_generator
    return resolve_generator(None if spec == "demo" else spec), spec


def random_result(g, n, seed=0):
    """n random codes (W for StyleGAN2, z otherwise), the soft default layout, their composite."""
    from chunkygan_jax.inversion import InversionSettings
    from chunkygan_jax.masks.sources import default_layout
    from chunkygan_jax.results import InversionResult
    if hasattr(g, "mapping"):
        from chunkygan_jax.generators.stylegan2 import sample_ws
        codes, space = sample_ws(g, n, seed)[:, :1], "w"
    else:
        codes, space = np.random.RandomState(seed).randn(n, g.z_dim).astype(np.float32), g.default_space
    imgs = np.asarray(jax.jit(lambda g, c: g.synthesize(c, space))(g, jnp.asarray(codes)), np.float32)
    masks = np.asarray(default_layout(n, g.resolution), np.float32)
    comp = np.einsum("nhw,nhwc->hwc", masks, imgs).astype(np.float32)
    settings = InversionSettings(segments=n, space=space, steps=1).to_dict()
    return InversionResult(target=np.clip(comp, -1, 1), composite=comp, segment_images=imgs, masks=masks,
                           latents={"codes": codes}, loss_history=np.zeros(1, np.float32), final_losses={},
                           settings=settings)


class Client:
    def __init__(self, editor):
        host, port = editor.address
        self.conn, self.token = http.client.HTTPConnection(host, port, timeout=300), editor.token

    def call(self, method, path, body=None):
        headers = {"X-Editor-Token": self.token}
        if method == "POST":  # state-changing requests send JSON
            body = json.dumps({} if body is None else body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise SystemExit(f"{method} {path}: {resp.status} {data[:300]!r}")
        return data


def stats(ms):
    ms = sorted(ms)
    return {"median_ms": round(statistics.median(ms), 1),
            "p90_ms": round(ms[min(len(ms) - 1, int(np.ceil(0.9 * len(ms))) - 1)], 1),
            "min_ms": round(ms[0], 1), "n": len(ms)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default="demo", help="demo, random:RES (random StyleGAN2 weights) or a checkpoint")
    ap.add_argument("--latents", default=None, help="a saved result to edit instead of random codes")
    ap.add_argument("--direction", default=None, help="a direction id such as pca:0 (default: a random .npy)")
    ap.add_argument("--segments", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args()

    from chunkygan_jax.editor import EditorSession
    from chunkygan_jax.editor.server import RunningEditor
    from chunkygan_jax.results import load_result

    g, name = build_generator(args.generator)
    result = load_result(args.latents) if args.latents else random_result(g, args.segments)
    tmp = Path(tempfile.mkdtemp(prefix="editor-bench-"))
    (tmp / "dirs").mkdir()
    (tmp / "work").mkdir()
    shape = (g.num_ws, g.w_dim) if hasattr(g, "num_ws") else (g.z_dim,)
    np.save(tmp / "dirs" / "random.npy", np.random.RandomState(1).randn(*shape).astype(np.float32))
    session = EditorSession(result, g, workdir=tmp / "work", directions=tmp / "dirs")
    if not session.editable:
        raise SystemExit(f"this generator cannot be edited yet: {session.why_not}")
    direction = args.direction or "file:random.npy"
    editor = RunningEditor(session)
    client = Client(editor)
    n = session.n
    out = {"generator": name, "resolution": g.resolution, "segments": n, "direction": direction,
           "jax_backend": jax.default_backend(), "cpus": os.cpu_count(),
           "load_average_before": round(os.getloadavg()[0], 1), "cases": {}}
    try:
        for label, target in (("one segment", {"segments": [0]}), ("all segments", {"segments": "all"})):
            edit = {"kind": "direction", "direction": direction, "target": target}
            t0 = time.perf_counter()
            for k in range(args.warmup):
                client.call("POST", "/api/preview", {"edit": dict(edit, strength=0.5 + 0.1 * k)})
            warm = time.perf_counter() - t0
            previews, commits = [], []
            for k in range(args.repeats):
                strength = round(-3.0 + 6.0 * (k + 0.5) / args.repeats, 4)
                t = time.perf_counter()
                png = client.call("POST", "/api/preview", {"edit": dict(edit, strength=strength)})
                previews.append(1e3 * (time.perf_counter() - t))
                assert png[:8] == b"\x89PNG\r\n\x1a\n"
            for k in range(max(args.repeats // 5, 5)):
                strength = round(3.5 + 0.01 * k, 4)
                client.call("POST", "/api/preview", {"edit": dict(edit, strength=strength)})  # the last move
                t = time.perf_counter()
                client.call("POST", "/api/edits", {"edit": dict(edit, strength=strength)})
                client.call("GET", "/api/image/current.png")
                commits.append(1e3 * (time.perf_counter() - t))
            client.call("POST", "/api/undo")
            out["cases"][label] = {"warmup_s": round(warm, 2), "slider_move": stats(previews),
                                   "release_commit_and_fetch": stats(commits)}
    finally:
        editor.stop()
        session.close()
    out["load_average_after"] = round(os.getloadavg()[0], 1)
    print(f"{name}: {g.resolution} px, {n} segments, backend {out['jax_backend']}, {out['cpus']} CPUs, "
          f"load average {out['load_average_before']} -> {out['load_average_after']}")
    for label, case in out["cases"].items():
        s, c = case["slider_move"], case["release_commit_and_fetch"]
        print(f"  {label:13s} slider move: median {s['median_ms']} ms, p90 {s['p90_ms']} ms (n={s['n']}); "
              f"release (commit + fetch): median {c['median_ms']} ms, p90 {c['p90_ms']} ms; "
              f"warm-up {case['warmup_s']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
