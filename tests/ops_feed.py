"""A small broker plugin for the operations tests (metrics, health, staleness): it streams every subscribed symbol
steadily with heartbeats, and a test can silence one symbol (heartbeats go on), ask for a new login, or count
resubscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import time

import attrs

from livedata_core import BrokerInfo, BrokerStream, HEARTBEAT, Order, Quote, hookimpl
from livedata_core.errors import AuthError, LoginRequired
from livedata_core.runner.ops import REFRESH_TOKEN_EXPIRES_AT
from livedata_core.runner import Runner, load_config
from livedata_core.testing import registered_plugin
from livedata_core.plugin_kit.tokens import MemoryTokenStore

SECRET = "s3cr3t-app-secret-never-shown"
TOKEN_DAYS_LEFT = 3.5


@attrs.frozen
class FeedSettings:
    app_secret: str = attrs.field(default=SECRET, repr=False)


class FeedBroker:
    """``feed``: quotes every ``period`` seconds per subscribed symbol, a heartbeat between them."""

    __name__ = "feed"

    def __init__(self, period: float = 0.02, fail_first_login: bool = False) -> None:
        self.period = period
        self.silenced: set[str] = set()
        self.login_needed = False
        self.fail_logins = 1 if fail_first_login else 0
        self.subscribe_calls: list[list[str]] = []
        self.unsubscribe_calls: list[list[str]] = []

    @hookimpl
    def broker_info(self):
        return BrokerInfo(name="feed", capabilities={"authenticate", "stream"}, settings_cls=FeedSettings)

    @hookimpl
    async def authenticate(self, ctx):
        if self.fail_logins:
            self.fail_logins -= 1
            raise AuthError("token refused once (test)")
        if self.login_needed:
            raise LoginRequired("the refresh token expired: run `livedata auth feed`")
        ctx.status[REFRESH_TOKEN_EXPIRES_AT] = time.time() + TOKEN_DAYS_LEFT * 86400

    @hookimpl
    def stream(self, ctx):
        return FeedStream(self)

    def require_login(self) -> None:
        """From now on the stream ends with LoginRequired and authentication fails the same way."""
        self.login_needed = True


class FeedStream(BrokerStream):
    heartbeat_timeout = 5.0

    def __init__(self, broker: FeedBroker) -> None:
        super().__init__()
        self.broker = broker
        self.symbols: set[str] = set()

    async def connect(self):
        pass

    async def subscribe(self, symbols):
        self.broker.subscribe_calls.append(sorted(symbols))
        self.symbols |= set(symbols)

    async def unsubscribe(self, symbols):
        self.broker.unsubscribe_calls.append(sorted(symbols))
        self.symbols -= set(symbols)

    async def events(self):
        # One order (an account event) and one quote the publisher refuses (a NaN: a counted skip) per connection.
        yield Order(broker="feed", account_id="ACC-1", order_id="1", symbol="AAPL", status="open")
        yield Quote(broker="feed", symbol=min(self.symbols, default="AAPL"), last=float("nan"))
        while True:
            if self.broker.login_needed:
                raise LoginRequired("the refresh token expired: run `livedata auth feed`")
            live = sorted(self.symbols - self.broker.silenced)
            if live:
                yield [Quote(broker="feed", symbol=s, bid=99.0, ask=101.0, last=100.0) for s in live]
            await asyncio.sleep(self.broker.period / 2)
            yield HEARTBEAT
            await asyncio.sleep(self.broker.period / 2)


def feed_config(url: str, *, metrics: bool = True, **table):
    table.setdefault("symbols", ["AAPL", "MSFT"])
    data = {"redis": {"url": url}, "backoff": {"initial": 0.05, "max": 0.2, "login_retry": 0.2}, "status_interval": 0.1,
            "brokers": {"feed": table}}
    if metrics:
        data["metrics"] = {"port": 0}
    return load_config(data, env={})


@contextlib.contextmanager
def feed_plugin(broker: FeedBroker):
    with registered_plugin(broker, "feed"):
        yield broker


def feed_runner(url: str, clock=None, **table) -> Runner:
    return Runner(feed_config(url, **table), token_store=MemoryTokenStore(), clock=clock)


async def eventually(condition, timeout: float = 10.0, what: str = "condition"):
    """Wait until ``condition()`` is true (awaiting it if it returns an awaitable)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
