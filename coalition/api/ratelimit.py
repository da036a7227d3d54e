"""Per-key token buckets: each key may burst to ``capacity`` requests and refills at
``rate_per_second``; an empty bucket answers HTTP 429 with Retry-After."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

DEFAULT_LIMITS = {  # (requests per second, burst) per role
    "partner": (200.0, 400),
    "auditor": (50.0, 100),
    "finance": (20.0, 50),
    "operator": (20.0, 50),
    "anonymous": (5.0, 10),
}
BUCKETS_MAX = 100_000  # a bound on memory: idle buckets are dropped beyond it


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, limits: dict[str, tuple[float, int]] | None = None) -> None:
        self.limits = dict(DEFAULT_LIMITS if limits is None else limits)
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str, role: str) -> float:
        """0 when the request may go on; else the seconds to wait before retrying."""
        rate, capacity = self.limits.get(role, self.limits["anonymous"])
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= BUCKETS_MAX:
                    self._buckets.clear()
                bucket = self._buckets[key] = _Bucket(float(capacity), now)
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / rate


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
