"""ctx.state: what a plugin remembers between polls survives re-authentication (issue 14, item 4).

The broker below lists only orders submitted in the polled window (as Alpaca does), so the plugin must remember
which orders are still open and ask for them by id. Its session expires after the first poll; the runner
re-authenticates (a new session), and the order's fill must still be published.
"""

from __future__ import annotations

import asyncio

from livedata_core import AuthError, BrokerInfo, Order, hookimpl
from livedata_core.runner import Runner, load_config
from livedata_core.testing import registered_plugin, running
from livedata_core.plugin_kit.tokens import MemoryTokenStore


class WindowedOrders:
    def __init__(self) -> None:
        self.sessions = 0
        self.polls = 0

    @hookimpl
    def broker_info(self):
        return BrokerInfo(name="windowed", capabilities={"authenticate", "fetch_orders"})

    @hookimpl
    def authenticate(self, ctx):
        self.sessions += 1
        ctx.session = {"session": self.sessions}  # authenticate may replace the session...

    @hookimpl
    def fetch_orders(self, ctx, account_id, since):
        self.polls += 1
        if self.polls == 2:
            raise AuthError("session expired")
        open_orders = ctx.state.setdefault("open_orders", set())  # ...the state stays
        if self.polls == 1:  # submitted now: in the window
            open_orders.add("O1")
            return [Order(broker="windowed", account_id=account_id, order_id="O1", status="open", quantity=1.0)]
        # Later polls: O1 is outside the window; only the remembered id finds its fill.
        return [Order(broker="windowed", account_id=account_id, order_id=o, status="filled", quantity=1.0,
                      filled_quantity=1.0) for o in sorted(open_orders)]  # fmt: skip


def test_state_survives_reauthentication(redis_server, published):
    plugin = WindowedOrders()
    config = load_config({"redis": {"url": redis_server.url}, "backoff": {"initial": 0.01, "max": 0.02},
                          "brokers": {"windowed": {"accounts": ["W1"], "poll": {"orders": 0.05}}}}, env={})  # fmt: skip

    async def scenario() -> dict:
        async with running(Runner(config, token_store=MemoryTokenStore())) as runner:
            await published.wait_for_async("orders", "W1", where=lambda o: o.status == "filled")
            return runner.runtimes["windowed"].ctx.state

    with registered_plugin(plugin):
        state = asyncio.run(scenario())
    assert plugin.sessions == 2  # re-authenticated once, after the AuthError
    assert state == {"open_orders": {"O1"}}
    assert [o.status for o in published.of("orders", "W1")] == ["open", "filled"]


def test_state_is_per_instance_and_not_in_reprs():
    from livedata_core.plugin_kit.plugins import get_broker

    demo = get_broker("demo")
    one, two = demo.make_context({}, instance="demo"), demo.make_context({}, instance="demo_b")
    one.state["cursor"] = "secret-cursor-value"
    assert two.state == {}
    assert "secret-cursor-value" not in repr(one)
