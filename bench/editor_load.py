"""The web editor under load: N concurrent clients on 127.0.0.1 for a bounded time, each on its own
keep-alive connection, sending what a page sends (state polls, slider previews that re-render, commits
and undos, image fetches) plus, with --hostile, as many again that misbehave (bodies that do not parse,
a wrong token, a foreign Origin, headers that stall). Reported: p50 and p99 latency of every kind of
request and of all of them, requests per second, the statuses seen (a 5xx fails the run), and the
process's resident memory (the server runs in this process) before, at the end, and its peak.

Usage: python3 bench/editor_load.py [--generator=demo|random:RES|CHECKPOINT] [--segments=8] [--clients=16]
       [--seconds=30] [--hostile] [--json=FILE]
"""

import argparse
import collections
import http.client
import json
import os
import random
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np

from editor_latency import build_generator, random_result  # noqa: E402


def rss_mib(field="VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def percentile(ms, q):
    ms = sorted(ms)
    return round(ms[min(len(ms) - 1, max(0, int(np.ceil(q * len(ms))) - 1))], 1) if ms else None


class Client(threading.Thread):
    """One page's worth of requests, on one keep-alive connection, until `stop` is set."""

    def __init__(self, k, editor, direction, stop, hostile):
        super().__init__(daemon=True)
        self.k, self.editor, self.direction, self.stop, self.hostile = k, editor, direction, stop, hostile
        self.rng = random.Random(k)
        self.times = collections.defaultdict(list)
        self.statuses = collections.Counter()

    def request(self, conn, method, path, body=None, headers=None):
        h = {"X-Editor-Token": self.editor.token, **(headers or {})}
        if method == "POST":
            h.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        resp.read()
        return resp.status

    def pick(self):
        edit = {"kind": "direction", "direction": self.direction, "target": {"segments": [self.k % 8]},
                "strength": round(self.rng.uniform(-3, 3), 2)}
        if self.hostile:
            return self.rng.choice([
                ("bad json", "POST", "/api/edits", b"{" * 1000, None),
                ("bad token", "GET", "/api/state", None, {"X-Editor-Token": "wrong"}),
                ("foreign origin", "POST", "/api/edits", json.dumps({"edit": edit}).encode(),
                 {"Origin": "https://evil.example"}),
                ("bool strength", "POST", "/api/edits", json.dumps({"edit": dict(edit, strength=True)}).encode(), None),
                ("stalled headers", None, None, None, None),
            ])
        r = self.rng.random()
        if r < 0.4:
            return "state", "GET", "/api/state", None, None
        if r < 0.7:
            return "preview", "POST", "/api/preview", json.dumps({"edit": edit}).encode(), None
        if r < 0.8:
            return "commit", "POST", "/api/edits", json.dumps({"edit": edit}).encode(), None
        if r < 0.85:
            return "undo", "POST", "/api/undo", b"{}", None
        return "image", "GET", f"/api/image/current.png?r={self.rng.random()}", None, None

    def run(self):
        host, port = self.editor.address
        conn = http.client.HTTPConnection(host, port, timeout=120)
        while not self.stop.is_set():
            kind, method, path, body, headers = self.pick()
            t = time.perf_counter()
            if kind == "stalled headers":  # opens a connection, half-sends headers, leaves it
                s = socket.create_connection((host, port))
                s.sendall(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                self.stop.wait(0.5)
                s.close()
                continue
            try:
                status = self.request(conn, method, path, body, headers)
            except (ConnectionError, http.client.HTTPException, OSError):
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=120)
                status = "reset"
            self.times[kind].append(1e3 * (time.perf_counter() - t))
            self.statuses[status] += 1
        conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default="demo", help="demo, random:RES (random StyleGAN2 weights) or a checkpoint")
    ap.add_argument("--segments", type=int, default=8)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--hostile", action="store_true", help="as many misbehaving clients again")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args()
    if not 1 <= args.clients <= 256 or not 0 < args.seconds <= 600:
        raise SystemExit("--clients must be in 1..256 and --seconds in (0, 600]")

    import jax

    from chunkygan_jax.editor import EditorSession
    from chunkygan_jax.editor.server import RunningEditor

    g, name = build_generator(args.generator)
    result = random_result(g, args.segments)
    tmp = Path(tempfile.mkdtemp(prefix="editor-load-"))
    (tmp / "dirs").mkdir()
    (tmp / "work").mkdir()
    shape = (g.num_ws, g.w_dim) if hasattr(g, "num_ws") else (g.z_dim,)
    np.save(tmp / "dirs" / "random.npy", np.random.RandomState(1).randn(*shape).astype(np.float32))
    session = EditorSession(result, g, workdir=tmp / "work", directions=tmp / "dirs", pca=0)
    editor = RunningEditor(session)
    warm = Client(0, editor, "file:random.npy", threading.Event(), False)
    conn = http.client.HTTPConnection(*editor.address, timeout=300)
    for k in range(args.segments):  # compile the render programs before timing
        edit = {"kind": "direction", "direction": "file:random.npy", "target": {"segments": [k]}, "strength": 1.0}
        warm.request(conn, "POST", "/api/preview", json.dumps({"edit": edit}).encode())
    conn.close()
    rss_before = rss_mib()
    stop = threading.Event()
    clients = [Client(k, editor, "file:random.npy", stop, False) for k in range(args.clients)]
    if args.hostile:
        clients += [Client(1000 + k, editor, "file:random.npy", stop, True) for k in range(args.clients)]
    t0 = time.perf_counter()
    for c in clients:
        c.start()
    time.sleep(args.seconds)
    stop.set()
    for c in clients:
        c.join(120)
    elapsed = time.perf_counter() - t0
    out = {"generator": name, "resolution": g.resolution, "segments": args.segments, "clients": args.clients,
           "hostile_clients": args.clients if args.hostile else 0, "seconds": round(elapsed, 1),
           "jax_backend": jax.default_backend(), "cpus": os.cpu_count(), "load_average": round(os.getloadavg()[0], 1),
           "rss_mib": {"before": rss_before, "end": rss_mib(), "peak": rss_mib("VmHWM")}, "kinds": {}}
    times, statuses = collections.defaultdict(list), collections.Counter()
    for c in clients:
        for kind, ms in c.times.items():
            times[kind] += ms
            if not c.hostile:
                times["all (well-behaved)"] += ms
        statuses.update(c.statuses)
    for kind, ms in sorted(times.items()):
        out["kinds"][kind] = {"n": len(ms), "p50_ms": percentile(ms, 0.5), "p99_ms": percentile(ms, 0.99)}
    out["requests_per_s"] = round(sum(len(v) for k, v in times.items() if k != "all (well-behaved)") / elapsed, 1)
    out["statuses"] = {str(k): v for k, v in sorted(statuses.items(), key=str)}
    editor.stop()
    session.close()
    print(f"{name}: {g.resolution} px, {args.segments} segments, {args.clients} clients"
          f"{' + as many hostile' if args.hostile else ''}, {out['seconds']} s, backend {out['jax_backend']}, "
          f"{out['cpus']} CPUs, load average {out['load_average']}")
    for kind, k in out["kinds"].items():
        print(f"  {kind:20s} n={k['n']:6d}  p50 {k['p50_ms']} ms  p99 {k['p99_ms']} ms")
    print(f"  {out['requests_per_s']} requests/s; statuses {out['statuses']}; RSS {out['rss_mib']} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    if any(str(s).startswith("5") or s == "reset" for s in statuses):
        raise SystemExit("a 5xx answer or a reset connection: the editor failed under load")


if __name__ == "__main__":
    main()
