from __future__ import annotations

import logging

import pytest

from livedata_core.plugins import get_broker
from livedata_core.tokens import MemoryTokenStore

# Short timings so the whole suite stays fast; pacing stays on (its own test checks it).
FAST = {
    "tickle_interval": 60.0,
    "login_wait": 0.3,
    "pacing_overrides": {"GET /iserver/account/orders": 0.0, "GET /portfolio/accounts": 0.0, "POST /tickle": 0.0},
    "max_requests_per_second": 200.0,
    "rate_limit_backoff": 0.05,
    "heartbeat_timeout": 2.0,
    "ws_auth_timeout": 2.0,
}


@pytest.fixture
def ibkr():
    """The ibkr broker handle, as core loads it through the entry point."""
    return get_broker("ibkr")


@pytest.fixture
def make_ctx(ibkr):
    def make(gw, **overrides):
        ctx = ibkr.make_context(gw.settings(**{**FAST, **overrides}), MemoryTokenStore())
        ctx.log = logging.getLogger("livedata.broker.ibkr")
        return ctx

    return make
