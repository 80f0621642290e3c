"""A one-line progress display on stderr: count, rate, ETA."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int | None = None, every: float = 0.5):
        self.label = label
        self.total = total
        self.every = every
        self.started = time.monotonic()
        self._last = 0.0
        self.tty = sys.stderr.isatty()

    def update(self, count: int, total: int | None = None) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        total = total or self.total
        rate = count / max(now - self.started, 1e-9)
        line = f"{self.label}: {count:,}"
        if total:
            eta = (total - count) / rate if rate > 0 else float("inf")
            line += f"/{total:,} ({100 * count / total:.0f}%), ETA {eta:,.0f}s"
        line += f", {rate:,.0f}/s"
        if self.tty:
            sys.stderr.write("\r" + line + " " * 8)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self, count: int) -> None:
        elapsed = time.monotonic() - self.started
        end = "\n" if self.tty else ""
        sys.stderr.write(
            f"{end}{self.label}: {count:,} in {elapsed:,.1f}s ({count / max(elapsed, 1e-9):,.0f}/s)\n"
        )
