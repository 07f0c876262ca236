"""A PermanentError (not entitled, account closed) stops what raised it, shows in status, and nothing else stops:
the instance's other polls, other instances and the runner go on."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from livedata_core import BrokerInfo, BrokerStream, Position, hookimpl
from livedata_core.errors import NotEntitled, PermanentError
from livedata_core.runner import Runner, load_config
from livedata_core.testing import registered_plugin, running
from livedata_core.plugin_kit.tokens import MemoryTokenStore

CLOSED = "A-CLOSED"
OPEN = "A-OPEN"


class RefusedStream(BrokerStream):
    def __init__(self, calls: Counter) -> None:
        super().__init__()
        self.calls = calls

    async def connect(self) -> None:
        self.calls["connect"] += 1
        raise NotEntitled("this login has no market data subscription for NASDAQ; add one at the broker")

    async def events(self):
        return
        yield

    async def subscribe(self, symbols) -> None:
        pass


class Refusing:
    """Streams nothing (not entitled); account A-CLOSED is closed for orders; positions poll fine."""

    def __init__(self) -> None:
        self.calls: Counter = Counter()

    @hookimpl
    def broker_info(self):
        return BrokerInfo(name="refusing", capabilities={"stream", "fetch_positions", "fetch_orders"})

    @hookimpl
    def stream(self, ctx):
        return RefusedStream(self.calls)

    @hookimpl
    def fetch_positions(self, ctx, account_id):
        self.calls[f"positions {account_id}"] += 1
        return [Position(broker="refusing", account_id=account_id, symbol="AAPL", quantity=1.0)]

    @hookimpl
    def fetch_orders(self, ctx, account_id, since):
        self.calls[f"orders {account_id}"] += 1
        if account_id == CLOSED:
            raise PermanentError(f"account {CLOSED} is closed")
        return []


class NoAccess:
    """A poll-only broker whose login is refused for good at authenticate."""

    def __init__(self) -> None:
        self.calls: Counter = Counter()

    @hookimpl
    def broker_info(self):
        return BrokerInfo(name="noaccess", capabilities={"authenticate", "fetch_positions", "fetch_balances"})

    @hookimpl
    def authenticate(self, ctx):
        self.calls["authenticate"] += 1
        raise NotEntitled("API access is not enabled for this login; enable it in the broker's settings")

    @hookimpl
    def fetch_positions(self, ctx, account_id):
        self.calls["positions"] += 1
        return []

    @hookimpl
    def fetch_balances(self, ctx, account_id):
        self.calls["balances"] += 1
        return []


def config(url: str, **brokers) -> object:
    return load_config({"redis": {"url": url}, "backoff": {"initial": 0.01, "max": 0.02}, "status_interval": 0.1,
                        "brokers": brokers}, env={})


async def wait_until(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def test_not_entitled_stream_and_closed_account_stop_alone(redis_server, published):
    plugin = Refusing()
    poll = {"positions": 0.02, "orders": 0.02, "balances": 0, "transactions": 0}
    cfg = config(redis_server.url,
                 refusing={"symbols": ["AAPL"], "accounts": [OPEN, CLOSED], "poll": poll},
                 demo={"symbols": ["MSFT"], "quotes_per_second": 50})

    async def scenario() -> tuple[dict, str]:
        from livedata_core import cli

        async with running(Runner(cfg, token_store=MemoryTokenStore())) as runner:
            # The other polls of the instance go on, many times over...
            await wait_until(lambda: plugin.calls[f"orders {OPEN}"] >= 20 and plugin.calls[f"positions {CLOSED}"] >= 20)
            # ...and so does another instance: a demo quote published after that.
            await published.wait_for_async("quotes", "MSFT", where=lambda q: q.instance == "demo")
            with pytest.raises(PermanentError, match="refusing does not stream any more .*NASDAQ"):
                await runner.subscribe("refusing", ["MSFT"])
            status = runner.status()["brokers"]["refusing"]
            text = await asyncio.to_thread(_status_text, cli, redis_server.url)
        return status, text

    with registered_plugin(plugin):
        status, text = asyncio.run(scenario())
    # Retrying stopped: one connect, one orders call for the closed account, however long the runner ran.
    assert plugin.calls["connect"] == 1
    assert plugin.calls[f"orders {CLOSED}"] == 1
    assert status["state"] == "failed"
    assert status["failed"] == {
        "stream": "NotEntitled: this login has no market data subscription for NASDAQ; add one at the broker",
        f"fetch_orders({CLOSED})": f"PermanentError: account {CLOSED} is closed",
    }
    assert "[refusing] failed" in text
    assert "no market data subscription for NASDAQ" in text and f"account {CLOSED} is closed" in text


def _status_text(cli, url: str) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["status", "--redis-url", url]) == 0
    return out.getvalue()


def test_permanent_refusal_at_authenticate_stops_a_poll_only_instance_once(redis_server, published):
    plugin = NoAccess()
    poll = {"positions": 0.02, "balances": 0.02, "orders": 0, "transactions": 0}
    cfg = config(redis_server.url, noaccess={"accounts": ["X1", "X2"], "poll": poll},
                 demo={"symbols": ["MSFT"], "quotes_per_second": 50})

    async def scenario() -> dict:
        async with running(Runner(cfg, token_store=MemoryTokenStore())) as runner:
            await wait_until(lambda: len(runner.status()["brokers"]["noaccess"]["failed"]) == 5)
            published.clear()
            await published.wait_for_async("quotes", "MSFT")  # the runner and the demo instance go on
            return runner.status()["brokers"]["noaccess"]

    with registered_plugin(plugin):
        status = asyncio.run(scenario())
    assert plugin.calls == Counter({"authenticate": 1})  # asked once; no fetch without a session
    assert status["state"] == "failed"
    message = "NotEntitled: API access is not enabled for this login; enable it in the broker's settings"
    assert status["failed"] == {"authenticate": message, **{f"fetch_{k}({a})": message
                                                           for k in ("positions", "balances") for a in ("X1", "X2")}}


def test_permanent_errors_are_broker_errors_the_runner_knows():
    from livedata_core.errors import AuthError, BrokerError, StreamError

    assert issubclass(NotEntitled, PermanentError) and issubclass(PermanentError, BrokerError)
    assert not issubclass(PermanentError, (AuthError, StreamError))  # neither re-authenticate nor reconnect
