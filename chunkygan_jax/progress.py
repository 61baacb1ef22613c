"""Progress lines on stderr: done/total, rate, ETA; one home for every tool's progress display."""

from __future__ import annotations

import math
import sys
import time


class Progress:
    """`update(done, extra)` prints `[####....] done/total unit, rate/s, ETA h:mm:ss, extra`.

    bar=True redraws one line in place (a terminal progress bar, as bin/invert shows per step);
    bar=False prints one line per update (logs of long dataset runs)."""

    def __init__(self, total: int, *, unit: str = "steps", bar: bool = True, enabled: bool = True,
                 stream=None, width: int = 30):
        self.total, self.unit, self.bar, self.enabled, self.width = max(int(total), 1), unit, bar, enabled, width
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()

    def update(self, done: int, extra: str = "", prefix: str = "") -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "--:--:--"
        filled = int(self.width * min(done, self.total) / self.total)
        line = (f"{prefix}[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} {self.unit}, "
                f"{rate:.2f}/s, ETA {eta_s}" + (f", {extra}" if extra else ""))
        if self.bar:
            print("\r" + line, end="\n" if done >= self.total else "", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)
