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
def fast_settings():
    """Settings that keep tests fast (merge over a fake gateway's settings)."""
    return dict(FAST)


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


# -- the core conformance suite (tests/test_conformance.py) --------------------------------------------------


@pytest.fixture(scope="module")
def _conformance_gateway():
    from livedata_core.testing.threads import ServerThread
    from livedata_ibkr.testing import FakeGateway

    with ServerThread(FakeGateway(hb_interval=0.5, quote_interval=0.05)) as server:
        yield server


@pytest.fixture
def conformance_broker():
    return "ibkr"


@pytest.fixture
def conformance_server(_conformance_gateway):
    return _conformance_gateway


@pytest.fixture
def conformance_settings(_conformance_gateway):
    return _conformance_gateway.server.settings(**FAST)


@pytest.fixture
def conformance_symbols():
    return ["AAPL", "IBM@8314", "@756733"]


@pytest.fixture
def conformance_account():
    return "DU1234"


@pytest.fixture
def conformance_secrets():
    from livedata_ibkr.testing import SESSION_TOKEN

    return [SESSION_TOKEN]


@pytest.fixture
def conformance_unreachable_settings():
    return {"base_url": "https://127.0.0.1:9/v1/api", "ws_url": "wss://127.0.0.1:9/v1/api/ws",
            "connect_timeout": 1.0, "login_wait": 0.1}


@pytest.fixture
def conformance_timeout():
    return 5.0


@pytest.fixture(scope="module")
def _logged_out_gateway():
    from livedata_core.testing.threads import ServerThread
    from livedata_ibkr.testing import FakeGateway

    gateway = FakeGateway()
    gateway.logged_in = False  # nobody logged in through the browser: every request gets HTTP 401
    with ServerThread(gateway) as server:
        yield server


@pytest.fixture
def conformance_bad_credentials(_logged_out_gateway):
    return _logged_out_gateway.server.settings(**FAST)
