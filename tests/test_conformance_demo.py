"""The built-in demo broker passes the conformance suite.

The demo has no network: its "server" is the process itself, so dropping the connection means ending the
live demo streams (their ``events()`` return, which the runner treats as the server closing the stream).
"""

from __future__ import annotations

import re
import weakref

import pytest

from livedata_core import BrokerInfo, hookimpl
from livedata_core.default_plugins import demo
from livedata_core.testing.conformance import ConformanceSuite


class DemoServer:
    """Tracks the demo streams that connect, so a test can cut them all."""

    def __init__(self) -> None:
        self.streams: weakref.WeakSet[demo.DemoStream] = weakref.WeakSet()
        self.connections_total = 0

    def drop(self) -> None:
        for stream in list(self.streams):
            stream.connected = False


@pytest.fixture
def conformance_broker():
    return "demo"


@pytest.fixture
def conformance_settings():
    return {"quotes_per_second": 200, "seed": 7, "order_every": 0.001, "heartbeat_timeout": 2.0}


@pytest.fixture
def conformance_symbols():
    return ["AAPL", "msft", "BRK.B"]


@pytest.fixture
def conformance_account():
    return demo.ACCOUNT


@pytest.fixture
def conformance_bar_symbols():
    return ["/ES", "aapl"]


@pytest.fixture
def conformance_depth_symbols():
    return ["AAPL", "MSFT"]


@pytest.fixture
def conformance_chain_underlying():
    return "AAPL"


@pytest.fixture
def conformance_unknown_underlying():
    return "/ES"


@pytest.fixture
def conformance_server(monkeypatch):
    server = DemoServer()
    connect = demo.DemoStream.connect

    async def tracked_connect(self):
        server.streams.add(self)
        server.connections_total += 1
        await connect(self)

    monkeypatch.setattr(demo.DemoStream, "connect", tracked_connect)
    return server


class TestDemoConformance(ConformanceSuite):
    pass


# -- the suite catches broken plugins ---------------------------------------------------------------------------

BROKEN_CONFTEST = '''
import pytest

from livedata_core import BrokerInfo, Order, Position, hookimpl
from livedata_core.testing import registered_plugin


class Broken:
    @hookimpl
    def broker_info(self):
        return BrokerInfo(name="broken", capabilities={"stream", "fetch_positions", "fetch_orders"})

    @hookimpl
    def stream(self, ctx):
        raise NotImplementedError

    @hookimpl
    def fetch_positions(self, ctx, account_id):
        if account_id != "A1":
            raise KeyError(account_id)
        return [Position(broker="broken", account_id="hash-77", symbol="AAPL", quantity=1.0)]

    @hookimpl
    def fetch_orders(self, ctx, account_id, since):
        return [Order(broker="broken", account_id=account_id, order_id="1", status="WORKING")]


@pytest.fixture
def conformance_broker():
    with registered_plugin(Broken()):
        yield "broken"


@pytest.fixture
def conformance_symbols():
    return ["AAPL"]


@pytest.fixture
def conformance_account():
    return "A1"
'''

BROKEN_TESTS = '''
from livedata_core.testing.conformance import ConformanceSuite


class TestBroken(ConformanceSuite):
    pass
'''


def test_the_suite_fails_a_broken_plugin_for_the_right_reasons(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "conftest.py").write_text(BROKEN_CONFTEST)
    (tmp_path / "test_broken.py").write_text(BROKEN_TESTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEDATA_", "PYTEST_"))}
    env["LIVEDATA_LOAD_PLUGINS"] = ""  # only the built-in demo and the broken plugin
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "livedata_core.testing", "-p", "no:cacheprovider", "-q", "-rA",
         "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    out = result.stdout
    outcome = {m.group(2): m.group(1) for m in re.finditer(r"^(PASSED|FAILED|SKIPPED|ERROR) \S*?::TestBroken::test_(TC_\w+?)_[a-z]", out, re.M)}
    assert outcome.get("TC_INFO_01") == "PASSED", out
    assert outcome.get("TC_ERR_02") == "PASSED", out
    for failing in ("TC_Q01", "TC_Q02", "TC_ACC_02", "TC_ACC_04", "TC_ERR_01"):
        assert outcome.get(failing) == "FAILED", f"{failing}: {outcome.get(failing)}\n{out}"
    assert "`conformance_server` must be defined in your conftest.py" in out
    assert "Position.account_id is 'hash-77' but account 'A1' was asked for" in out
    assert "Order 1 has status 'WORKING'" in out
    assert "raised builtins.KeyError" in out


def test_check_quote_names_what_is_wrong():
    from livedata_core import Quote
    from livedata_core.testing.conformance import check_quote

    check_quote(Quote(broker="x", symbol="AAPL", bid=1.0, ask=1.5), "x", ["AAPL"])
    with pytest.raises(AssertionError, match="numbers must be float"):
        check_quote(Quote(broker="x", symbol="AAPL", bid=1, ask=1.5), "x", ["AAPL"])
    with pytest.raises(AssertionError, match="ask 1.0 below bid 1.5"):
        check_quote(Quote(broker="x", symbol="AAPL", bid=1.5, ask=1.0), "x", ["AAPL"])
    with pytest.raises(AssertionError, match="not subscribed"):
        check_quote(Quote(broker="x", symbol="MSFT", bid=1.0), "x", ["AAPL"])
    with pytest.raises(AssertionError, match="no price at all"):
        check_quote(Quote(broker="x", symbol="AAPL"), "x", ["AAPL"])


def test_registered_plugin_registers_for_the_block_only():
    from livedata_core.errors import PluginError
    from livedata_core.plugin_kit.plugins import get_brokers
    from livedata_core.testing import registered_plugin

    class Tiny:
        @hookimpl
        def broker_info(self):
            return BrokerInfo(name="tiny", capabilities=set())

    with registered_plugin(Tiny()) as broker:
        assert broker.name == "tiny" and "tiny" in get_brokers()
    assert "tiny" not in get_brokers()

    class Liar:
        @hookimpl
        def broker_info(self):
            return BrokerInfo(name="liar", capabilities={"stream"})

    with pytest.raises(PluginError, match="declares \\['stream'\\] but does not implement"):
        with registered_plugin(Liar()):
            pass


def test_published_collects_models_and_frame_server_replays(published, frame_server):
    import asyncio
    import json

    from livedata_core import Quote
    from livedata_core.redis_io.publisher import sync as live_data_redis

    server = frame_server([{"n": 1}, "two"], on_message=lambda m: {"echo": m}, wait_for_message=True)

    async def client():
        import websockets

        async with websockets.connect(server.url) as ws:
            await ws.send("hello")
            return [await ws.recv() for _ in range(3)]

    frames = asyncio.run(client())
    assert sorted(frames) == sorted([json.dumps({"echo": "hello"}), json.dumps({"n": 1}), "two"])
    assert server.received == ["hello"] and server.connections_total == 1

    live_data_redis.publish_quote("AAPL", {"broker": "t", "bid": 1.0, "ask": 1.1})
    [quote] = published.wait_for("quotes", "AAPL")
    assert isinstance(quote, Quote) and quote.ask == 1.1
    with pytest.raises(AssertionError, match="published so far: {'quotes:AAPL': 1}"):
        published.wait_for("orders", timeout=0.2)
