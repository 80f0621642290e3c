"""Token buckets per principal: how many requests a token may make, in one process.

The buckets live in the memory of one service instance, so with N replicas behind a load
balancer a principal may make up to N times the configured rate; docs/security.md says so,
and a bank that needs a global limit puts it in its API gateway.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per key: `rate` tokens a second, at most `burst` saved up.

    >>> clock = [0.0]
    >>> limiter = RateLimiter(rate=1.0, burst=2, clock=lambda: clock[0])
    >>> [limiter.take("rm-7") for _ in range(3)]
    [0.0, 0.0, 1.0]
    >>> limiter.take("rm-8")  # another principal has its own bucket
    0.0
    >>> clock[0] = 1.0
    >>> limiter.take("rm-7")
    0.0
    """

    def __init__(
        self, *, rate: float, burst: int, max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        # Least recently used first, so the memory stays bounded however many tokens call.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str) -> float:
        """Spend one token of `key`'s bucket: 0.0 if allowed, else seconds until one is due."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.burst), updated=now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        self._buckets[key] = bucket
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    @staticmethod
    def retry_after(wait_seconds: float) -> str:
        """The Retry-After header value: whole seconds, at least one."""
        return str(max(1, math.ceil(wait_seconds)))
