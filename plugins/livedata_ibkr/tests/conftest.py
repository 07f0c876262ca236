from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from livedata_core.plugin_kit.plugins import get_broker
from livedata_core.plugin_kit.tokens import MemoryTokenStore

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


@pytest.fixture
def authenticated(ibkr, make_ctx):
    """A broker context for a fake gateway (fast settings plus overrides), authenticated; shut down on exit::

        async with FakeGateway() as gw, authenticated(gw, tickle_interval=0.05) as ctx:
            await ibkr.call("fetch_orders", ctx=ctx, account_id="DU1234", since=0)

    Tests of authentication itself call ``authenticate`` explicitly instead.
    """

    @contextlib.asynccontextmanager
    async def session(gw, **overrides):
        ctx = make_ctx(gw, **overrides)
        await ibkr.call("authenticate", ctx=ctx)
        try:
            yield ctx
        finally:
            await ibkr.call("shutdown", ctx=ctx)

    return session


class Reader:
    """Read a stream's events in the background and keep what it yields (and the error that ended it)."""

    def __init__(self, stream):
        self.stream = stream
        self.items = []
        self.error = None
        self.task = asyncio.create_task(self._read())

    async def _read(self):
        try:
            async for item in self.stream.events():
                self.items.extend(item if isinstance(item, list) else [item])
        except Exception as exc:  # kept for the test to assert on
            self.error = exc

    def of(self, cls):
        return [i for i in self.items if isinstance(i, cls)]

    async def stop(self):
        """Cancel the reading and close the stream (again, if the test closed it already)."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.stream.close()


@pytest.fixture
def streaming(ibkr):
    """A stream of an authenticated context, connected, subscribed to ``symbols`` and read in the background
    by a :class:`Reader`; the reader is stopped and the stream closed on exit::

        async with authenticated(gw) as ctx, streaming(ctx, ["AAPL"]) as (stream, reader):
            await gw.wait_for(lambda: reader.of(Quote))
    """

    @contextlib.asynccontextmanager
    async def open_stream(ctx, symbols=()):
        stream = await ibkr.call("stream", ctx=ctx)
        await stream.connect()
        await stream.subscribe(list(symbols))
        reader = Reader(stream)
        try:
            yield stream, reader
        finally:
            await reader.stop()

    return open_stream


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
