"""Client-side pacing under the gateway's limits: a global rate plus per-endpoint minimum intervals.

IBKR answers over-limit requests with HTTP 429 and may put the IP in a "penalty box" for 10 minutes, so
requests wait here instead of being sent and refused. Endpoints are matched on the path without the query
string (``?force=true`` must not slip past the pacer).
"""

from __future__ import annotations

import asyncio
import re
import time

__all__ = ["ENDPOINT_INTERVALS", "Pacer", "endpoint_key"]

# Per-endpoint minimum seconds between requests, from IBKR's "Pacing Limitations" table.
# Account ids in paths are replaced by "{acct}" before lookup.
ENDPOINT_INTERVALS: dict[str, float] = {
    "GET /portfolio/accounts": 5.0,
    "GET /portfolio/subaccounts": 5.0,
    "GET /iserver/account/orders": 5.0,
    "GET /iserver/account/trades": 5.0,
    "GET /iserver/account/pnl/partitioned": 5.0,
    "GET /iserver/marketdata/snapshot": 0.1,
    "POST /tickle": 1.0,
    "GET /tickle": 1.0,
    "GET /sso/validate": 60.0,
}

_ACCOUNT_PATHS = re.compile(r"^/(portfolio2?)/[^/]+/")


def endpoint_key(method: str, path: str) -> str:
    """``"GET /portfolio/{acct}/ledger"`` for ``GET /portfolio/U123/ledger?x=1``."""
    path = path.split("?", 1)[0]
    if path.startswith("/portfolio/") and not path.startswith(("/portfolio/accounts", "/portfolio/subaccounts")):
        path = _ACCOUNT_PATHS.sub(r"/\1/{acct}/", path)
    elif path.startswith("/portfolio2/"):
        path = _ACCOUNT_PATHS.sub(r"/\1/{acct}/", path)
    return f"{method.upper()} {path}"


class Pacer:
    """Make callers wait so that requests stay under ``rate`` per second overall and under each endpoint's
    own limit.

    Waiting callers are served in arrival order per endpoint; the global slot is taken after the endpoint
    slot so a slow endpoint never holds up the others.
    """

    def __init__(self, rate: float, intervals: dict[str, float] | None = None, clock=time.monotonic) -> None:
        self.min_gap = 1.0 / rate
        self.intervals = dict(ENDPOINT_INTERVALS if intervals is None else intervals)
        self._clock = clock
        self._next_global = 0.0
        self._next_endpoint: dict[str, float] = {}
        self._global_lock = asyncio.Lock()
        self._endpoint_locks: dict[str, asyncio.Lock] = {}

    async def wait(self, method: str, path: str) -> None:
        """Return when a request to ``method path`` may be sent."""
        key = endpoint_key(method, path)
        interval = self.intervals.get(key, 0.0)
        if interval or key in self._next_endpoint:
            lock = self._endpoint_locks.setdefault(key, asyncio.Lock())
            async with lock:
                await self._sleep_until(self._next_endpoint.get(key, 0.0))
                await self._take_global()
                # Measured from when the request really goes out, after any wait for the global slot.
                self._next_endpoint[key] = max(self._next_endpoint.get(key, 0.0), self._clock() + interval)
        else:
            await self._take_global()

    def penalize(self, method: str, path: str, seconds: float) -> None:
        """After a 429: hold back this endpoint for ``seconds``."""
        key = endpoint_key(method, path)
        self._next_endpoint[key] = max(self._next_endpoint.get(key, 0.0), self._clock() + seconds)

    async def _take_global(self) -> None:
        async with self._global_lock:
            await self._sleep_until(self._next_global)
            self._next_global = self._clock() + self.min_gap

    async def _sleep_until(self, when: float) -> None:
        delay = when - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)
