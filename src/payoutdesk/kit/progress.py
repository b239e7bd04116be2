"""A plain progress bar on standard error for long CLI work."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str, enabled: bool = True) -> None:
        self.total = max(total, 1)
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self.done = 0
        self.started = time.monotonic()
        self._last = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.2 or self.done >= self.total):
            self._last = now
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * 30)
            rate = self.done / max(now - self.started, 1e-6)
            sys.stderr.write(f"\r{self.label} [{bar:<30}] {self.done:,}/{self.total:,} ({rate:,.0f}/s)")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
