"""Per-model token buckets: a burst of requests queues briefly instead of hammering the provider.

Each model id gets a bucket of ``burst`` tokens refilled at ``rate`` per second (from
``Settings.generation.rate_limits``). ``acquire`` takes a token, waiting up to ``max_wait_s``
for one; if none comes in time it raises :class:`~ragline.errors.ModelError` (503, transient),
which the generation service treats like a throttled model and moves on to the fallback.

Written by hand: the libraries at hand (``limits``, ``pyrate-limiter``) either do not block or
need a backend store; a blocking, thread-safe bucket within one process is twenty lines. In
Lambda it is per container, which bounds each container's share of the provider quota.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..errors import ModelError


class TokenBucket:
    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = int(burst)
        self.clock = clock
        self.sleep = sleep
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_acquire(self) -> float:
        """Take a token now (returns 0.0) or return how long until one is available; a waiter
        reserves its token so that concurrent waiters queue in order."""
        with self._lock:
            self._refill()
            self._tokens -= 1.0
            if self._tokens >= 0:
                return 0.0
            return -self._tokens / self.rate

    def acquire(self, max_wait_s: float, label: str = "model") -> float:
        """Block until a token is ours; returns the seconds waited."""
        wait = self.try_acquire()
        if wait <= 0:
            return 0.0
        if wait > max_wait_s:
            with self._lock:
                self._tokens += 1.0  # give the reservation back
            raise ModelError(f"model {label} is rate limited locally (next slot in {wait:.2f}s > {max_wait_s:.2f}s)")
        self.sleep(wait)
        return wait


class RateLimiter:
    """The buckets of all models, built from ``{model_id: (rate_per_s, burst)}``."""

    def __init__(self, limits: dict[str, tuple[float, int]], *, max_wait_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.max_wait_s = max_wait_s
        self.buckets = {m: TokenBucket(r, b, clock=clock, sleep=sleep) for m, (r, b) in limits.items()}

    def acquire(self, model_id: str, max_wait_s: float | None = None) -> float:
        bucket = self.buckets.get(model_id)
        if bucket is None:
            return 0.0
        return bucket.acquire(self.max_wait_s if max_wait_s is None else max_wait_s, model_id)

    def acquirer(self, model_id: str) -> Callable[[float], float] | None:
        """A ChatModel's ``acquire`` for ``model_id`` (None when it has no bucket): a token per attempt,
        waiting at most half the attempt's time left (and ``max_wait_s``) so the attempt keeps time to run."""
        if model_id not in self.buckets:
            return None
        return lambda left: self.acquire(model_id, min(self.max_wait_s, left / 2))
