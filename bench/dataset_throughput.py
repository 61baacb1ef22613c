#!/usr/bin/env python3
"""Images/s of the dataset runner (dataset.invert_dataset: read, invert, write results and
manifest) with the batch sharded over 1 and over 4 devices, the images and results on local disk or
in a GCS bucket (gcp-storage-emulator on 127.0.0.1, started here), and where the time goes: seconds
reading files, decoding them, computing, and writing results (the writer overlaps the next batch).

On CPU the devices are simulated (XLA_FLAGS=--xla_force_host_platform_device_count=D) and share the
same cores, so the ratio is a sanity check of the sharded path (it should stay near 1, not collapse),
not a speed-up. On a machine with D real accelerators, run with --devices=1,D.

  python3 bench/dataset_throughput.py                                  # CPU: 1 and 4 simulated devices,
                                                                       # local disk and the GCS emulator
  python3 bench/dataset_throughput.py --devices=1 --real               # the real devices (GPU/TPU)
  python3 bench/dataset_throughput.py --write_only=1024 --segments=8   # seconds to write one result

Each device count runs in its own process: one warm-up batch (compilation), then --images images are
timed end to end (writing included: results are written on a background thread while the next batch
computes; --store chooses how they keep their segment images). Generator: random weights of a small
StyleGAN2 (64 px, w_dim 128), or --generator.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def child(args):
    import jax
    import numpy as np
    from PIL import Image

    jax.config.update("jax_default_matmul_precision", "highest")
    from chunkygan_jax import dataset, sharding
    from chunkygan_jax.generators import StyleGAN2, ffhq_config, random_params
    from chunkygan_jax.inversion import InversionSettings, Inverter
    from chunkygan_jax.masks.options import make_mask_source

    if args.generator:
        from chunkygan_jax.checkpoints import load_generator
        generator = load_generator(args.generator)
    else:
        cfg = ffhq_config(64, channel_base=4096, channel_max=128, w_dim=128, mapping_layers=2)
        generator = StyleGAN2(cfg, random_params(0, cfg))
    common = dict(segments=args.segments, steps=args.steps, lpips_net=args.lpips_net,
                  lpips_resolution="full", lambda_reg=0.0)
    mesh = sharding.data_mesh()
    settings = InversionSettings(space=generator.default_space, **common)
    inverter = Inverter(generator, settings, make_mask_source(None, args.segments, generator.resolution, generator=generator), mesh=mesh)
    r = generator.resolution
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp
        if args.source == "gcs":  # a fresh bucket on the emulator the parent started
            from chunkygan_jax import paths

            name = f"bench-{os.getpid()}"
            paths.filesystem(f"gs://{name}").mkdir(name)
            base = f"gs://{name}"
        for folder, count in (("warm", args.batch_size), ("data", args.images)):
            (tmp / folder).mkdir()
            for i in range(count):
                img = np.random.RandomState(i).uniform(0, 255, (8, 8, 3)).astype(np.uint8)
                Image.fromarray(img).resize((r, r), Image.Resampling.BICUBIC).save(tmp / folder / f"{i:05d}.png")
                if args.source == "gcs":
                    paths.upload(tmp / folder / f"{i:05d}.png", f"{base}/{folder}/{i:05d}.png")
        join = (lambda *p: "/".join([base, *p])) if args.source == "gcs" else (lambda *p: base.joinpath(*p))
        kw = dict(inverter=inverter, settings=common,
                  options=dataset.DatasetOptions(batch_size=args.batch_size, progress=False, store=args.store,
                                                 read_threads=args.read_threads))
        t0 = time.perf_counter()
        dataset.invert_dataset(join("warm"), join("out_warm"), generator, **kw)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        summary = dataset.invert_dataset(join("data"), join("out"), generator, **kw)
        seconds = time.perf_counter() - t0
    t = {k: round(v, 4) for k, v in summary.timings.items()}
    print(json.dumps({"devices": jax.device_count(), "source": args.source, "platform": jax.devices()[0].platform,
                      "device_kind": jax.devices()[0].device_kind, "images": summary.local_done,
                      "batch_size": args.batch_size, "segments": args.segments, "steps": args.steps,
                      "store": args.store, "read_threads": args.read_threads,
                      "resolution": r, "seconds": seconds, "images_per_s": summary.local_done / seconds,
                      "warmup_s": compile_s, "read_s": t["read"], "decode_s": t["decode"],
                      "compute_s": t["compute"], "write_s": t["write"],
                      "io_share": (t["read"] + t["write"]) / max(sum(t.values()), 1e-9)}))


def write_only(args):
    """Seconds to write one image's outputs (dataset.save_image_result) at --write_only px with
    --segments segment images, per store: what the background writer hides behind the next batch."""
    import numpy as np

    from chunkygan_jax import dataset
    from chunkygan_jax.results import SEGMENT_STORES, InversionResult

    r, n = args.write_only, args.segments
    rng = np.random.RandomState(0)
    smooth = lambda *shape: np.clip(rng.standard_normal(shape).astype(np.float32).cumsum(-2) / 30, -1, 1)
    masks = rng.dirichlet(np.ones(n), (r, r)).transpose(2, 0, 1).astype(np.float32)
    result = InversionResult(target=smooth(r, r, 3), composite=smooth(r, r, 3), segment_images=smooth(n, r, r, 3),
                             masks=masks, latents={"codes": np.zeros((n, 18, 512), np.float32)},
                             loss_history=np.zeros(500, np.float32), final_losses={"lpips": 0.1}, settings={})
    print(f"{'store':>8} {'write s':>8} {'MiB':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for store in SEGMENT_STORES:
            times = []
            for i in range(args.rounds):
                out = Path(tmp) / f"{store}-{i}"
                t0 = time.perf_counter()
                dataset.save_image_result(result, out, {"image": "x"}, store=store)
                times.append(time.perf_counter() - t0)
            mib = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
            print(f"{store:>8} {sorted(times)[len(times) // 2]:>8.2f} {mib:>7.1f}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", default="1,4", help="device counts to compare")
    p.add_argument("--real", action="store_true", help="use the real devices (no CPU simulation flag)")
    p.add_argument("--sources", default="local,gcs", help="where images and results are: local disk, gcs (the "
                   "GCS emulator on 127.0.0.1, started here), or both")
    p.add_argument("--source", default="local", help=argparse.SUPPRESS)
    p.add_argument("--read_threads", type=int, default=8, help="invert_dataset(read_threads=): grain threads "
                   "reading ahead; 0 reads each batch in the loop")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--batch_size", type=int, default=4, help="global batch (a multiple of every device count)")
    p.add_argument("--segments", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--lpips_net", default="alex")
    p.add_argument("--store", default="float32", help="how results keep their segment images: float32, float16, none")
    p.add_argument("--generator", default=None, help="a generator checkpoint instead of random weights")
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    p.add_argument("--write_only", type=int, default=0, help="only time writing one result at this resolution")
    p.add_argument("--rounds", type=int, default=3, help="with --write_only: writes per store (median)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    if args.write_only:
        return write_only(args)
    rows = []
    sources = args.sources.split(",")
    server = None
    if "gcs" in sources:  # a real GCS JSON-API server, in memory, on the loopback
        import socket

        from gcp_storage_emulator.server import create_server

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = create_server("127.0.0.1", port, in_memory=True)
        server.start()
    for d, source in [(int(x), src) for x in args.devices.split(",") for src in sources]:
        env = dict(os.environ)
        if server is not None:
            env["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
        if not args.real:
            env["JAX_PLATFORMS"] = "cpu"
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={d}".strip()
        cmd = [sys.executable, __file__, "--child", f"--images={args.images}", f"--batch_size={args.batch_size}",
               f"--segments={args.segments}", f"--steps={args.steps}", f"--lpips_net={args.lpips_net}",
               f"--store={args.store}", f"--source={source}", f"--read_threads={args.read_threads}"]
        if args.generator:
            cmd.append(f"--generator={args.generator}")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"device count {d} ({source}) failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    if server is not None:
        server.stop()
    base = rows[0]["images_per_s"]
    print(f"{'devices':>7} {'source':>6} {'platform':>8} {'images':>6} {'batch':>5} {'n':>3} {'steps':>5} {'res':>4} "
          f"{'warm-up s':>9} {'images/s':>9} {'ratio':>6} {'read s':>7} {'decode s':>8} {'compute s':>9} "
          f"{'write s':>7} {'I/O':>5}")
    for r in rows:
        print(f"{r['devices']:>7} {r['source']:>6} {r['platform']:>8} {r['images']:>6} {r['batch_size']:>5} "
              f"{r['segments']:>3} {r['steps']:>5} {r['resolution']:>4} {r['warmup_s']:>9.1f} "
              f"{r['images_per_s']:>9.3f} {r['images_per_s'] / base:>6.2f} {r['read_s']:>7.3f} "
              f"{r['decode_s']:>8.3f} {r['compute_s']:>9.2f} {r['write_s']:>7.3f} {r['io_share']:>5.1%}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
