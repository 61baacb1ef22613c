#!/usr/bin/env python3
"""Ours against NVIDIA's official stylegan2-ada-pytorch `Generator`, side by side on this machine.

Both run the same work on the same weights, in interleaved rounds; the table gives the median
milliseconds of each and ours / official:
- synthesis forward (n = 1 and 8 W+ codes);
- synthesis forward + backward of an MSE against a target;
- the full ChunkyGAN step: n codes -> synthesis -> soft masks (learned 16x16 logits, bilinear, softmax)
  -> composite -> LPIPS-VGG16 (real architecture, random weights) -> dispersion term -> gradients ->
  Adam with NVIDIA's schedule. Ours is `Inverter.advance(state, batch, 1)`, exactly what `invert()`
  runs; the official side is the same objective written with the official Generator;
- LPIPS-VGG alone, forward + backward.
The generator is 256 px, z = w = 512, 8 mapping layers, channel_base 8192, channel_max 256, conv_clamp
256, fp32 (`--resolution`, `--channel_base`, `--channel_max` change it).

Parity comes first and the bench stops if it fails: the images of both for the same ws, the LPIPS of the
same pair, and the losses of the first full steps must agree.

Requirements (optional, for this bench only; nothing else in the package needs them):
  python3 -m pip install torch==2.13.0        # the CPU wheel; torchvision is not needed
  git clone https://github.com/NVlabs/stylegan2-ada-pytorch /tmp/sg2ada   # outside this repository
Its CUDA plugins are not built on a CPU; it then uses its reference ops, as it does on any CPU.

  python3 bench/vs_official.py --official=/tmp/sg2ada [--rounds=5] [--single_thread] [--out=FILE.json]

How: this process starts two workers, one with torch and one with JAX, so that neither library's thread
pools run while the other is timed, and asks them in turn to run each work item once per round
(alternating which goes first). Weights travel between them as .npz files in a temporary directory.
Each call's wall time and process CPU time are recorded; the load average is reported with the table.
On a machine that other jobs also use, torch's OpenMP threads slow down far more than XLA's thread pool
when the cores are oversubscribed, which flatters our wall-time ratio: `--single_thread` (one compute
thread per side) and the CPU-time ratio are the comparisons that hold there. Our worker compiles from
scratch (its persistent cache is off unless --cache), so "ours first call" is the compile time.
The masks are free learned logits on both sides (masks='logits'), not invert()'s default G^S.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKS = [("synth_fwd", 1), ("synth_fwd", 8), ("synth_fwd_bwd", 1), ("synth_fwd_bwd", 8),
         ("step", 1), ("step", 8), ("lpips_fwd_bwd", 1)]
TITLES = {"synth_fwd": "synthesis forward", "synth_fwd_bwd": "synthesis fwd + bwd (MSE)",
          "step": "full ChunkyGAN step (masks, LPIPS, Adam)", "lpips_fwd_bwd": "LPIPS-VGG alone, fwd + bwd"}
SCHEDULE_STEPS = 100_000  # the lr schedule's length: long enough that timing never reaches its end
PARITY_STEPS = 3
# VGG16 features up to relu5_3, as LPIPS uses them: ("conv", tap) or ("pool",).
VGG = [("conv", False), ("conv", True), ("pool",), ("conv", False), ("conv", True), ("pool",),
       ("conv", False), ("conv", False), ("conv", True), ("pool",), ("conv", False), ("conv", False),
       ("conv", True), ("pool",), ("conv", False), ("conv", False), ("conv", True)]
SHIFT = [-0.030, -0.088, -0.188]
SCALE = [0.458, 0.448, 0.450]


def lr_at(step, lr=0.1, steps=SCHEDULE_STEPS, rampup=0.05, rampdown=0.25):
    """NVIDIA's projector schedule (the same formula as chunkygan_jax.inversion.nvidia_lr_schedule)."""
    t = min(max(step / steps, 0.0), 1.0)
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(math.pi * ramp)
    return lr * ramp * min(1.0, t / rampup)


# ------------------------------------------------------------------------------------------ torch side
class TorchWorker:
    def __init__(self, args):
        import torch

        sys.path.insert(0, str(Path(args.official).resolve()))
        from training.networks import Generator  # noqa: E402  (the official code)

        self.torch = torch
        if args.single_thread:
            torch.set_num_threads(1)
        torch.manual_seed(args.seed)
        g = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=args.resolution, img_channels=3,
                      mapping_kwargs=dict(num_layers=8),
                      synthesis_kwargs=dict(channel_base=args.channel_base, channel_max=args.channel_max,
                                            num_fp16_res=0, conv_clamp=256))
        with torch.no_grad():  # a fresh Generator has zero biases, noise strengths and w_avg: exercise them
            for name, p in g.named_parameters():
                if name.endswith(".bias") and "mapping" not in name:
                    p.add_(0.1 * torch.randn_like(p))
                if name.endswith("noise_strength"):
                    p.add_(0.1 * torch.randn_like(p))
            z = torch.randn(2000, 512)
            g.mapping.w_avg.copy_(g.mapping(z, None)[:, 0].mean(0))
        self.G = g.eval().requires_grad_(False)
        self.dir = Path(args.tmp)

    def init(self):
        torch = self.torch
        state = {k: v.detach().numpy() for k, v in self.G.state_dict().items()}
        import numpy as np

        np.savez(self.dir / "state.npz", **state)
        with torch.no_grad():
            z = torch.randn(9, 512)
            ws = self.G.mapping(z, None, truncation_psi=0.7)
            target = self.G.synthesis(ws[8:], noise_mode="const", force_fp32=True)
            target = (target / target.abs().max()).permute(0, 2, 3, 1)  # NHWC in [-1, 1]
        np.savez(self.dir / "inputs.npz", ws=ws[:8].numpy(), target=target.numpy(), z=z.numpy())
        return {"threads": torch.get_num_threads(), "torch": torch.__version__}

    def setup(self):
        import numpy as np

        torch = self.torch
        inputs = np.load(self.dir / "inputs.npz")
        self.ws = torch.from_numpy(inputs["ws"])
        self.target = torch.from_numpy(inputs["target"]).permute(0, 3, 1, 2).contiguous()  # [1, 3, H, W]
        lp = np.load(self.dir / "lpips.npz")
        self.convs = [(torch.from_numpy(lp[f"conv{i}/kernel"].transpose(3, 2, 0, 1).copy()),
                       torch.from_numpy(lp[f"conv{i}/bias"])) for i in range(13)]
        self.lins = [torch.from_numpy(lp[f"lin{j}"]).view(1, -1, 1, 1) for j in range(5)]
        self.logits = {n: torch.from_numpy(lp[f"logits{n}"]) for n in (2, 8) if f"logits{n}" in lp.files}
        self.target_feats = [f.detach() for f in self.features(self.target)]
        self.states = {}
        return {}

    # LPIPS v0.1 'lin' with the given VGG16 weights, NCHW
    def features(self, x):
        F = self.torch.nn.functional
        shift = self.torch.tensor(SHIFT).view(1, 3, 1, 1)
        scale = self.torch.tensor(SCALE).view(1, 3, 1, 1)
        h, feats, i = (x - shift) / scale, [], 0
        for op in VGG:
            if op[0] == "pool":
                h = F.max_pool2d(h, 2, 2)
                continue
            w, b = self.convs[i]
            h = F.relu(F.conv2d(h, w, b, padding=1))
            i += 1
            if op[1]:
                feats.append(h / (h.square().sum(1, keepdim=True).sqrt() + 1e-10))
        return feats

    def distance(self, fx, fy):
        F = self.torch.nn.functional
        return sum(F.conv2d((a - b).square(), lin).mean((2, 3))[:, 0] for a, b, lin in zip(fx, fy, self.lins))

    def synth(self, ws):
        return self.G.synthesis(ws, noise_mode="const", force_fp32=True)

    def new_step_state(self, n):
        torch = self.torch
        codes = self.G.mapping.w_avg.detach().clone().view(1, 1, -1).repeat(n, self.ws.shape[1], 1)
        codes.requires_grad_(True)
        groups = [{"params": [codes], "eps": 1e-8}]
        logits = None
        if n > 1:
            logits = self.logits[n].clone().requires_grad_(True)
            groups.append({"params": [logits], "eps": 1e-6})  # chunkygan_jax.inversion.MASK_ADAM_EPS
        return {"codes": codes, "logits": logits, "opt": torch.optim.Adam(groups, lr=0.0), "step": 0}

    def step(self, st):
        torch = self.torch
        F = torch.nn.functional
        for group in st["opt"].param_groups:
            group["lr"] = lr_at(st["step"])
        imgs = self.synth(st["codes"])  # [n, 3, H, W]
        if st["logits"] is None:
            out = imgs
        else:
            res = imgs.shape[-1]
            masks = F.softmax(F.interpolate(st["logits"][None], size=(res, res), mode="bilinear",
                                            align_corners=False)[0], dim=0)
            out = (imgs * masks[:, None]).sum(0, keepdim=True)
        lp = self.distance(self.features(out), self.target_feats).sum()
        codes = st["codes"]
        loss = lp + (codes - codes.mean(0, keepdim=True)).square().sum()
        st["opt"].zero_grad(set_to_none=True)
        loss.backward()
        st["opt"].step()
        st["step"] += 1
        return loss.item()

    def run(self, work, n):
        torch = self.torch
        if work == "synth_fwd":
            with torch.no_grad():
                return self.synth(self.ws[:n])
        if work == "synth_fwd_bwd":
            ws = self.ws[:n].clone().requires_grad_(True)
            loss = (self.synth(ws) - self.target).square().mean()
            loss.backward()
            return ws.grad
        if work == "step":
            if n not in self.states:
                self.states[n] = self.new_step_state(n)
            return self.step(self.states[n])
        if work == "lpips_fwd_bwd":
            x = self.target.flip(3).repeat(n, 1, 1, 1).requires_grad_(True)
            self.distance(self.features(x), self.target_feats).sum().backward()
            return x.grad
        raise ValueError(work)

    def parity(self):
        import numpy as np

        torch = self.torch
        with torch.no_grad():
            img = self.synth(self.ws[:2]).permute(0, 2, 3, 1).numpy()
            lp = self.distance(self.features(self.target.flip(3)), self.target_feats).numpy()
        st = self.new_step_state(2)
        losses = [self.step(st) for _ in range(PARITY_STEPS)]
        np.savez(self.dir / "parity_official.npz", img=img, lpips=lp, losses=np.array(losses))
        return {}


# ------------------------------------------------------------------------------------------ JAX side
class JaxWorker:
    def __init__(self, args):
        sys.path.insert(0, str(ROOT))
        self.args = args
        self.dir = Path(args.tmp)

    def setup(self):
        import jax
        import jax.numpy as jnp
        import numpy as np

        from chunkygan_jax import enable_compilation_cache
        from chunkygan_jax.generators import stylegan2_from_nvidia
        from chunkygan_jax.inversion import InversionSettings, Inverter
        from chunkygan_jax.lpips import random_lpips
        from chunkygan_jax.masks.options import make_mask_source

        if self.args.cache:
            enable_compilation_cache()
        self.jax, self.jnp, self.np = jax, jnp, np
        self.G = stylegan2_from_nvidia(dict(np.load(self.dir / "state.npz")), conv_clamp=256)
        inputs = np.load(self.dir / "inputs.npz")
        self.ws = jnp.asarray(inputs["ws"])
        self.target = jnp.asarray(inputs["target"])
        self.lp = random_lpips("vgg", seed=self.args.seed)
        self.inverters = {}
        saved = {}  # the LPIPS weights for the torch side: conv{i}/kernel (HWIO), conv{i}/bias, lin{j}
        for name, value in self.lp.params.items():
            for sub, leaf in (value.items() if isinstance(value, dict) else [(None, value)]):
                saved[name if sub is None else f"{name}/{sub}"] = np.asarray(leaf)
        for n in (1, 2, 8):
            masks = make_mask_source("logits", n, self.G.resolution)  # what the official side writes out
            inv = Inverter(self.G, InversionSettings(segments=n, steps=SCHEDULE_STEPS, lpips_resolution=256),
                           masks, lpips=self.lp, loop=self.args.loop)
            self.inverters[n] = inv
            if n > 1:
                saved[f"logits{n}"] = np.asarray(inv.initial_latents(1)["mask_logits"][0])
        np.savez(self.dir / "lpips.npz", **saved)
        self.fwd = jax.jit(lambda g, ws: g.synthesis(ws))
        self.fwd_bwd = jax.jit(jax.value_and_grad(lambda ws, g, t: jnp.mean(jnp.square(g.synthesis(ws) - t))))
        feats = jax.jit(lambda lp, x: lp.features(x))
        self.target_feats = feats(self.lp, self.target)
        self.lpips_grad = jax.jit(jax.grad(lambda x, lp, tf: jnp.sum(lp.distance_from_features(lp.features(x), tf))))
        self.states = {}
        return {"jax": jax.__version__, "backend": jax.default_backend(),
                "loop": self.inverters[1].loop}

    def new_step_state(self, n):
        inv = self.inverters[n]
        return inv, inv.make_batch(self.np.asarray(self.target)), inv.start(inv.initial_latents(1), 1)

    def run(self, work, n):
        jax = self.jax
        if work == "synth_fwd":
            return jax.block_until_ready(self.fwd(self.G, self.ws[:n]))
        if work == "synth_fwd_bwd":
            return jax.block_until_ready(self.fwd_bwd(self.ws[:n], self.G, self.target))
        if work == "step":
            if n not in self.states:
                self.states[n] = self.new_step_state(n)
            inv, batch, state = self.states[n]
            state = inv.advance(state, batch, 1)  # returns the loss history on the host: synced
            self.states[n] = (inv, batch, state)
            return state.history[0, state.step - 1]
        if work == "lpips_fwd_bwd":
            x = self.jnp.repeat(self.target[:, :, ::-1], n, axis=0)
            return jax.block_until_ready(self.lpips_grad(x, self.lp, self.target_feats))
        raise ValueError(work)

    def parity(self):
        np = self.np
        img = np.asarray(self.fwd(self.G, self.ws[:2]))
        lp = np.asarray(self.lp.distance_from_features(self.lp.features(self.target[:, :, ::-1]), self.target_feats))
        inv, batch, state = self.new_step_state(2)
        state = inv.advance(state, batch, PARITY_STEPS)
        np.savez(self.dir / "parity_ours.npz", img=img, lpips=lp, losses=state.history[0, :PARITY_STEPS])
        return {}


def worker_main(args):
    worker = TorchWorker(args) if args.worker == "torch" else JaxWorker(args)
    out = sys.stdout
    sys.stdout = sys.stderr  # the protocol owns stdout
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if cmd["cmd"] == "time":
                t, c = time.perf_counter(), time.process_time()
                worker.run(cmd["work"], cmd["n"])
                reply = {"ms": 1000 * (time.perf_counter() - t), "cpu_ms": 1000 * (time.process_time() - c)}
            else:
                reply = getattr(worker, cmd["cmd"])()
        except Exception as e:  # reported to the parent, which stops
            import traceback
            traceback.print_exc()
            reply = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


# ------------------------------------------------------------------------------------------ parent
class Worker:
    def __init__(self, kind, args):
        cmd = [sys.executable, __file__, f"--worker={kind}", f"--tmp={args.tmp}", f"--official={args.official}",
               f"--resolution={args.resolution}", f"--channel_base={args.channel_base}",
               f"--channel_max={args.channel_max}", f"--seed={args.seed}"] + \
              ([f"--loop={args.loop}"] if args.loop else []) + (["--single_thread"] if args.single_thread else []) + \
              (["--cache"] if args.cache else [])
        self.kind = kind
        # our worker compiles from scratch (no persistent cache unless --cache), so that its first call is
        # the compile time a new setup costs
        env = dict(os.environ)
        if kind == "jax" and args.single_thread:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                                " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def __call__(self, cmd, **kw):
        self.proc.stdin.write(json.dumps(dict(cmd=cmd, **kw)) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            sys.exit(f"the {self.kind} worker died (see its messages above)")
        reply = json.loads(line)
        if "error" in reply:
            sys.exit(f"{self.kind} worker: {reply['error']}")
        return reply

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def check_parity(tmp, tol_img, tol_rel):
    import numpy as np

    a, b = np.load(Path(tmp) / "parity_ours.npz"), np.load(Path(tmp) / "parity_official.npz")
    rel = lambda x, y: float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-12)))
    out = {"image_max_abs_diff": float(np.abs(a["img"] - b["img"]).max()),
           "image_max_abs": float(np.abs(b["img"]).max()),
           "lpips_ours": a["lpips"].tolist(), "lpips_official": b["lpips"].tolist(),
           "lpips_rel_diff": rel(a["lpips"], b["lpips"]),
           "step_losses_ours": a["losses"].tolist(), "step_losses_official": b["losses"].tolist(),
           "step_losses_rel_diff": rel(a["losses"], b["losses"])}
    ok = out["image_max_abs_diff"] <= tol_img * max(1.0, out["image_max_abs"]) and \
        out["lpips_rel_diff"] <= tol_rel and out["step_losses_rel_diff"] <= tol_rel
    return ok, out


def table(rows):
    lines = ["| work | n | official ms | ours ms | ours / official | CPU-time ratio | ours first call s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {TITLES[r['work']]} | {r['n']} | {r['official_ms']:.0f} | {r['ours_ms']:.0f} | "
                     f"{r['ratio']:.2f} | {r['cpu_ratio']:.2f} | {r['ours_first_call_s']:.1f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", required=True, help="a checkout of NVlabs/stylegan2-ada-pytorch")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds (medians reported)")
    ap.add_argument("--works", default=None, help="comma-separated WORK:N (default: all of " +
                    ",".join(f"{w}:{n}" for w, n in WORKS) + ")")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--channel_base", type=int, default=8192)
    ap.add_argument("--channel_max", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--loop", default=None, help="our Inverter's loop form (default: chosen per backend)")
    ap.add_argument("--single_thread", action="store_true",
                    help="one compute thread on each side (comparable even on a busy machine)")
    ap.add_argument("--cache", action="store_true", help="let our worker use the persistent compilation cache")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_main(args)
    if not (Path(args.official) / "training" / "networks.py").exists():
        sys.exit(f"--official={args.official} is not a stylegan2-ada-pytorch checkout (see --help)")
    works = [(w.split(":")[0], int(w.split(":")[1])) for w in args.works.split(",")] if args.works else WORKS

    with tempfile.TemporaryDirectory(prefix="vs-official-") as tmp:
        args.tmp = tmp
        official = Worker("torch", args)
        info = official("init")
        ours = Worker("jax", args)
        info.update(ours("setup"))
        official("setup")
        print(f"torch {info['torch']} ({info['threads']} threads), jax {info['jax']} on {info['backend']}, "
              f"our loop form: {info['loop']}", file=sys.stderr)
        official("parity")
        ours("parity")
        ok, parity = check_parity(tmp, tol_img=1e-4, tol_rel=1e-4)
        print("parity: " + json.dumps(parity), file=sys.stderr)
        if not ok:
            sys.exit("parity check failed; not timing")
        first = {}
        for work, n in works:  # warm-up: our first call includes compilation
            first[(work, n)] = {side: w("time", work=work, n=n)["ms"] / 1000
                                for side, w in (("official", official), ("ours", ours))}
        times = {key: {"official": [], "ours": [], "official_cpu": [], "ours_cpu": []} for key in works}
        load = [os.getloadavg()[0]]
        for r in range(args.rounds):
            for work, n in works:
                pair = [("official", official), ("ours", ours)]
                for side, w in pair if r % 2 == 0 else pair[::-1]:
                    reply = w("time", work=work, n=n)
                    times[(work, n)][side].append(reply["ms"])
                    times[(work, n)][side + "_cpu"].append(reply["cpu_ms"])
            load.append(os.getloadavg()[0])
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{w}:{n} {times[(w, n)]['ours'][-1] / times[(w, n)]['official'][-1]:.2f}" for w, n in works),
                file=sys.stderr, flush=True)
        official.close()
        ours.close()

    rows = []
    for (work, n), t in times.items():
        o, u = statistics.median(t["official"]), statistics.median(t["ours"])
        oc, uc = statistics.median(t["official_cpu"]), statistics.median(t["ours_cpu"])
        rows.append(dict(work=work, n=n, official_ms=o, ours_ms=u, ratio=u / o, official_cpu_ms=oc, ours_cpu_ms=uc,
                         cpu_ratio=uc / oc, official_ms_all=t["official"], ours_ms_all=t["ours"],
                         ours_first_call_s=first[(work, n)]["ours"],
                         official_first_call_s=first[(work, n)]["official"]))
    print(table(rows))
    print(f"load average (1 min) during the rounds: {min(load):.1f} to {max(load):.1f} on {os.cpu_count()} CPUs")
    report = {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
              "rounds": args.rounds, "resolution": args.resolution, "channel_base": args.channel_base,
              "channel_max": args.channel_max, "single_thread": args.single_thread, "load_average": load,
              "info": info, "parity": parity, "rows": rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
