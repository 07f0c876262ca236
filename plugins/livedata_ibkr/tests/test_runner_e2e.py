"""End to end through the core Runner: fake gateway -> plugin -> runner -> real redis-server -> subscriber."""

import asyncio

import pytest

from livedata_core.errors import BrokerError
from livedata_core.runner import Runner, load_config
from livedata_core.testing.published import PublishedCollector
from livedata_core.testing.running import running
from livedata_core.plugin_kit.tokens import MemoryTokenStore
from livedata_ibkr.testing import FakeGateway


def test_runner_streams_polls_and_recovers_from_auth_loss_and_drops(redis_server, fast_settings):
    async def main(collector):
        async with FakeGateway(hb_interval=0.2) as gw:
            table = {**gw.settings(**fast_settings), "symbols": ["AAPL", "IBM@8314"],
                     "poll": {"positions": 0.2, "balances": 0.2, "orders": 0.2, "transactions": 0}}
            config = load_config({"redis": {"url": redis_server.url}, "brokers": {"ibkr": table},
                                  "backoff": {"initial": 0.05, "max": 0.2, "login_retry": 0.2},
                                  "shutdown_timeout": 2.0}, env={})
            runner = Runner(config, token_store=MemoryTokenStore())
            task = asyncio.create_task(runner.run())
            runtime = runner.runtimes["ibkr"]

            async def quote_after(last, n):
                await gw.wait_for(lambda: gw.subscribed(265598) and gw.subscribed(8314), timeout=5)
                await gw.push_quote(265598, {"31": last, "84": "1.00", "86": "2.00"})
                await gw.push_quote(8314, {"31": last})
                await collector.wait_for_async("quotes", "AAPL", where=lambda q: q.last == float(last), timeout=5)
                await collector.wait_for_async("quotes", "IBM@8314", where=lambda q: q.last == float(last))

            try:
                await quote_after("10.50", 1)
                await collector.wait_for_async("positions", "DU1234", where=lambda p: p.symbol == "SPY")
                await collector.wait_for_async("balances", "DU1234", where=lambda b: b.currency == "BASE")

                # An order arriving on the websocket is published once.
                await gw.wait_for(lambda: any(c.orders for c in gw.clients))
                order = {"acct": "DU1234", "orderId": 55, "ticker": "AAPL", "status": "Submitted",
                         "remainingQuantity": 5.0, "filledQuantity": 0.0, "side": "BUY", "orderType": "Limit",
                         "price": 10}
                await gw.push_order(order)
                await collector.wait_for_async("orders", "DU1234", where=lambda o: o.order_id == "55")
                gw.orders.append(order)  # the REST poll now sees the same order state
                polls = runtime.status.polls.get("orders", 0)
                await gw.wait_for(lambda: runtime.status.polls.get("orders", 0) >= polls + 2)

                # The brokerage session drops: the runner re-authenticates (ssodh/init) and resubscribes.
                await gw.lose_auth()
                await gw.wait_for(lambda: gw.calls("/iserver/auth/ssodh/init"), timeout=5)
                await quote_after("11.50", 2)

                # The socket drops: the runner reconnects and resubscribes.
                reconnects = runtime.status.reconnects
                await gw.drop_websockets()
                await gw.wait_for(lambda: runtime.status.reconnects > reconnects, timeout=5)
                await quote_after("12.50", 3)
                assert gw.ws_connections == 3

                status = runner.status()["brokers"]["ibkr"]
                assert status["extra"]["session"] == "authenticated"
                assert status["extra"]["tickle"].startswith("ok at")
            finally:
                runner.stop()
                await asyncio.wait_for(task, 10)
            orders = [o for o in collector.orders if o.order_id == "55"]
            assert len(orders) == 1, "the websocket and REST views of one order state are published once"

    with PublishedCollector(redis_server.url) as collector:
        asyncio.run(main(collector))


def _runner_config(redis_url, gw, fast_settings, **table):
    return load_config({"redis": {"url": redis_url},
                        "brokers": {"ibkr": {**gw.settings(**fast_settings), **table}},
                        "backoff": {"initial": 0.05, "max": 0.2, "login_retry": 0.2},
                        "shutdown_timeout": 2.0}, env={})


def test_a_triggered_stop_order_is_published_from_the_websocket_and_from_the_poll(redis_server, fast_settings):
    # PreSubmitted -> Submitted (a stop order being triggered) are both status "open"; the gateway's word in
    # broker_status is what changes, and subscribers must see it.
    stop = {"acct": "DU1234", "orderId": 71, "ticker": "AAPL", "status": "PreSubmitted", "remainingQuantity": 5.0,
            "filledQuantity": 0.0, "side": "SELL", "orderType": "Stop", "auxPrice": "150.00"}
    polled = {**stop, "orderId": 72}

    async def main(collector):
        async with FakeGateway(hb_interval=0.2) as gw:
            gw.orders = [polled]
            config = _runner_config(redis_server.url, gw, fast_settings, symbols=[],
                                    poll={"positions": 0, "balances": 0, "orders": 0.1, "transactions": 0})
            async with running(Runner(config, token_store=MemoryTokenStore())):
                await gw.wait_for(lambda: any(c.orders for c in gw.clients))
                await gw.push_order(stop)
                await collector.wait_for_async("orders", "DU1234", where=lambda o: o.order_id == "71")
                await gw.push_order({"acct": "DU1234", "orderId": 71, "status": "Submitted"})
                await collector.wait_for_async(
                    "orders", "DU1234", where=lambda o: o.order_id == "71" and o.broker_status == "Submitted")

                await collector.wait_for_async("orders", "DU1234", where=lambda o: o.order_id == "72")
                gw.orders = [{**polled, "status": "Submitted"}]
                await collector.wait_for_async(
                    "orders", "DU1234", where=lambda o: o.order_id == "72" and o.broker_status == "Submitted")
            for order_id in ("71", "72"):
                states = [(o.status, o.broker_status) for o in collector.orders if o.order_id == order_id]
                assert states == [("open", "PreSubmitted"), ("open", "Submitted")], order_id

    with PublishedCollector(redis_server.url) as collector:
        asyncio.run(main(collector))


def test_an_order_update_arriving_as_the_session_drops_is_published(redis_server, fast_settings):
    async def main(collector):
        async with FakeGateway(hb_interval=0.2) as gw:
            config = _runner_config(redis_server.url, gw, fast_settings, symbols=[],
                                    poll={"positions": 0, "balances": 0, "orders": 0, "transactions": 0})
            async with running(Runner(config, token_store=MemoryTokenStore())) as runner:
                await gw.wait_for(lambda: any(c.orders for c in gw.clients))
                runner.runtimes["ibkr"].ctx.session.mark_lost("tickle reports the session is not authenticated")
                await gw.push_order({"acct": "DU1234", "orderId": 61, "ticker": "AAPL", "status": "Filled",
                                     "remainingQuantity": 0.0, "filledQuantity": 5.0, "side": "BUY",
                                     "orderType": "Market", "avgPrice": "10.5"})
                await collector.wait_for_async("orders", "DU1234", where=lambda o: o.order_id == "61")

    with PublishedCollector(redis_server.url) as collector:
        asyncio.run(main(collector))


def test_symbol_lookups_refused_or_failed_at_connect_and_live(redis_server, fast_settings):
    async def main(collector):
        async with FakeGateway(hb_interval=0.2) as gw:
            gw.rate_limit("/iserver/secdef/search", times=3)  # the first lookup fails after its 2 retries
            config = _runner_config(redis_server.url, gw, fast_settings, symbols=["AAPL", "NOPE"],
                                    poll={"positions": 0, "balances": 0, "orders": 0, "transactions": 0})
            async with running(Runner(config, token_store=MemoryTokenStore())) as runner:
                runtime = runner.runtimes["ibkr"]
                # At connect: the failed lookup reconnects, and AAPL streams; NOPE is reported as refused.
                await gw.wait_for(lambda: gw.subscribed(265598), timeout=5)
                await gw.push_quote(265598, {"31": "10.25"})
                await collector.wait_for_async("quotes", "AAPL", where=lambda q: q.last == 10.25)
                assert gw.ws_connections == 2
                assert "NOPE" in (runtime.status.last_error or "")

                # Live: an unknown symbol is refused by name, the others of the call stream.
                with pytest.raises(BrokerError, match="did not subscribe NOPE2"):
                    await runner.subscribe("ibkr", ["IBM", "NOPE2"])
                assert "NOPE2" not in runtime.symbols and "IBM" in runtime.symbols
                await gw.wait_for(lambda: gw.subscribed(8314))

                # Live: a lookup the gateway fails (HTTP 429 three times) is not dropped: SPY streams after
                # the reconnect that follows.
                gw.rate_limit("/iserver/secdef/search", times=3)
                assert await runner.subscribe("ibkr", ["SPY"]) == {"added": ["SPY"], "already": []}
                await gw.wait_for(lambda: gw.subscribed(756733), timeout=5)
                await gw.push_quote(756733, {"31": "500.5"})
                await collector.wait_for_async("quotes", "SPY", where=lambda q: q.last == 500.5)
                assert gw.ws_connections == 3

    with PublishedCollector(redis_server.url) as collector:
        asyncio.run(main(collector))


def test_quotes_resume_after_an_auth_loss_before_the_paced_orders_preflight(redis_server, fast_settings):
    # After an sts authentication loss the runner re-authenticates and connects again. The new connection's
    # orders pre-flight waits for IBKR's pacing (one per 5 s); quotes do not wait for it (IBKR needs it
    # before sor only), so they are published again while it is still held back.
    async def main(collector):
        async with FakeGateway(hb_interval=0.2) as gw:
            settings = {**fast_settings, "pacing_overrides": {}}  # IBKR's own limits: orders once per 5 s
            config = _runner_config(redis_server.url, gw, settings, symbols=["AAPL"],
                                    poll={"positions": 0, "balances": 0, "orders": 0, "transactions": 0})
            async with running(Runner(config, token_store=MemoryTokenStore())):
                await gw.wait_for(lambda: gw.clients and gw.clients[0].orders and gw.subscribed(265598))
                await gw.lose_auth()
                await gw.wait_for(lambda: gw.ws_connections == 2 and len(gw.clients) == 1 and gw.subscribed(265598))
                await gw.push_quote(265598, {"31": "11.50", "84": "11.49", "86": "11.51"})
                await collector.wait_for_async("quotes", "AAPL", where=lambda q: q.last == 11.5)
                assert len(gw.calls("/iserver/account/orders", "GET")) == 1, "the new pre-flight is still paced"
                assert not gw.clients[0].orders, "sor waits for its pre-flight"

    with PublishedCollector(redis_server.url) as collector:
        asyncio.run(main(collector))
