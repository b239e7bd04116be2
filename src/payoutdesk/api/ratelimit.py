"""Token buckets per key, in this process (each web process limits on its own)."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass


@dataclass
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int  # until the bucket is full again
    retry_after: int  # until one request is allowed again


class TokenBuckets:
    """``rate`` tokens per ``per`` seconds, bursts up to ``rate``; rate 0 allows everything."""

    def __init__(self, rate: int, per: float = 1.0, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.per = per
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, cost: float = 1.0) -> Verdict:
        if self.rate <= 0:
            return Verdict(True, 0, 0, 0, 0)
        refill = self.rate / self.per
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.rate), now))
            tokens = min(float(self.rate), tokens + (now - last) * refill)
            allowed = tokens >= cost
            if allowed:
                tokens -= cost
            if len(self._buckets) >= self.max_keys and key not in self._buckets:
                self._buckets.clear()  # bounded memory under a flood of keys
            self._buckets[key] = (tokens, now)
        reset = math.ceil((self.rate - tokens) / refill) if tokens < self.rate else 0
        retry = 0 if allowed else max(1, math.ceil((cost - tokens) / refill))
        return Verdict(allowed, self.rate, int(tokens), reset, retry)

    def peek_blocked(self, key: str) -> Verdict | None:
        """The verdict a request would get without spending a token, if it would be refused."""
        if self.rate <= 0:
            return None
        refill = self.rate / self.per
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.rate), now))
        tokens = min(float(self.rate), tokens + (now - last) * refill)
        if tokens >= 1:
            return None
        return Verdict(False, self.rate, 0, math.ceil((self.rate - tokens) / refill),
                       max(1, math.ceil((1 - tokens) / refill)))
