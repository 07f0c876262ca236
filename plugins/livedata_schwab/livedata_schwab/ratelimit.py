"""A token-bucket rate limiter for asyncio: at most N requests a minute, with a small burst."""

from __future__ import annotations

import asyncio
import time

__all__ = ["RateLimiter"]


class RateLimiter:
    """Let callers through at ``per_minute`` a minute on average, up to ``burst`` at once.

    ``await limiter.acquire()`` before each request. Fair: waiters go in arrival order.
    """

    def __init__(self, per_minute: float, burst: int | None = None, clock=time.monotonic) -> None:
        self.rate = per_minute / 60.0
        # Five seconds' worth of requests may go at once (10 at 120/min): polls of several accounts start
        # together without waiting, and the average stays at the limit.
        self.capacity = float(burst if burst is not None else max(1, int(per_minute / 12)))
        self._tokens = self.capacity
        self._clock = clock
        self._updated = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until a request may be sent."""
        async with self._lock:
            while True:
                now = self._clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)
