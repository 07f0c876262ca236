"""Accounts, positions, balances and orders from the fake gateway's REST API, and pacing."""

import asyncio

import orjson
import redis

from livedata_core.redis_io.publisher import AsyncPublisher
from livedata_ibkr.pacing import Pacer, endpoint_key
from livedata_ibkr.testing import FakeGateway


def run(coro):
    return asyncio.run(coro)


def position_row(i, account="DU1234"):
    return {"acctId": account, "conid": 1000 + i, "contractDesc": f"S{i:03d}", "assetClass": "STK",
            "position": float(i + 1), "mktValue": 10.0 * (i + 1), "avgPrice": 9.5, "unrealizedPnl": 0.5,
            "currency": "USD", "ticker": f"S{i:03d}"}


def test_accounts_are_listed_from_portfolio_accounts(ibkr, authenticated):
    async def main():
        async with FakeGateway() as gw, authenticated(gw) as ctx:
            accounts = await ibkr.call("fetch_accounts", ctx=ctx)
            assert len(accounts) == 1
            account = accounts[0]
            assert (account.account_id, account.account_type, account.name) == ("DU1234", "DEMO", "DU1234")
            assert account.extra == {"currency": "USD", "tradingType": "PMRGN", "paper": True}

    run(main())


def test_positions_are_read_page_by_page(ibkr, authenticated):
    async def main():
        async with FakeGateway() as gw:
            gw.positions["DU1234"] = [position_row(i) for i in range(205)]
            gw.positions["DU1234"][7]["position"] = "garbage"  # one bad row is skipped, not fatal
            async with authenticated(gw) as ctx:
                positions = await ibkr.call("fetch_positions", ctx=ctx, account_id="DU1234")
                assert len(positions) == 204
                assert [r.path for r in gw.requests if "/positions/" in r.path] == [
                    "/portfolio/DU1234/positions/invalidate", "/portfolio/DU1234/positions/0",
                    "/portfolio/DU1234/positions/1", "/portfolio/DU1234/positions/2",
                ]
                assert gw.calls("/portfolio/accounts"), "portfolio pre-flight comes first"
                p = positions[-1]
                assert (p.symbol, p.quantity, p.market_value, p.average_price, p.asset_type) == (
                    "S204", 205.0, 2050.0, 9.5, "equity")
                assert p.extra == {"conid": 1204, "currency": "USD"}

    run(main())


def test_balances_per_currency_with_margin_on_base(ibkr, authenticated):
    async def main():
        async with FakeGateway() as gw, authenticated(gw) as ctx:
            balances = {b.currency: b for b in await ibkr.call("fetch_balances", ctx=ctx, account_id="DU1234")}
            assert set(balances) == {"BASE", "USD"}
            usd, base = balances["USD"], balances["BASE"]
            assert (usd.cash, usd.account_value, usd.buying_power) == (21471.5, 66915.5, None)
            assert usd.timestamp == 1702582321000
            assert (base.cash, base.account_value, base.buying_power, base.equity, base.maintenance_requirement) == (
                21471.5, 66915.5, 85886.0, 66915.5, 11361.0)
            assert base.extra["base_currency"] == "USD"

    run(main())


def test_orders_preflight_then_normalised(ibkr, authenticated):
    async def main():
        async with FakeGateway() as gw:
            gw.orders = [
                {"acct": "DU1234", "conid": 265598, "orderId": 1, "ticker": "AAPL", "remainingQuantity": 0.0,
                 "filledQuantity": 10.0, "status": "Filled", "orderType": "Market", "side": "SELL",
                 "timeInForce": "DAY", "avgPrice": "190.01", "lastExecutionTime_r": 1712596911593},
                {"acct": "DU1234", "conid": 8314, "orderId": 2, "ticker": "IBM", "remainingQuantity": 5.0,
                 "filledQuantity": 0.0, "status": "PreSubmitted", "orderType": "Stop", "side": "BUY",
                 "timeInForce": "GTC", "auxPrice": "150.00"},
                {"acct": "DU1234", "orderId": 3, "status": "Cancelled", "ticker": "SPY"},
                {"acct": "U999", "orderId": 4, "status": "Submitted"},  # another account
                {"acct": "DU1234", "status": "Submitted"},  # no order id: skipped and logged
            ]
            async with authenticated(gw) as ctx:
                orders = await ibkr.call("fetch_orders", ctx=ctx, account_id="DU1234", since=0)
                assert len(gw.calls("/iserver/account/orders")) == 2, "the first (empty) answer is a pre-flight"
                assert gw.calls("/iserver/account/orders")[0].query == {"accountId": "DU1234"}
                by_id = {o.order_id: o for o in orders}
                assert set(by_id) == {"1", "2", "3"}
                assert (by_id["1"].status, by_id["1"].side, by_id["1"].order_type, by_id["1"].average_fill_price,
                        by_id["1"].timestamp) == ("filled", "sell", "market", 190.01, 1712596911593)
                assert (by_id["2"].status, by_id["2"].order_type, by_id["2"].stop_price, by_id["2"].quantity) == (
                    "open", "stop", 150.0, 5.0)
                assert by_id["3"].status == "canceled" and by_id["3"].broker_status == "Cancelled"
                await ibkr.call("fetch_orders", ctx=ctx, account_id="DU1234", since=0)
                assert len(gw.calls("/iserver/account/orders")) == 3, "no pre-flight after the first call"

    run(main())


def test_account_data_published_to_redis(ibkr, authenticated, redis_server):
    async def main():
        async with FakeGateway() as gw:
            gw.orders = [{"acct": "DU1234", "orderId": 7, "ticker": "AAPL", "status": "Submitted",
                          "remainingQuantity": 1.0, "filledQuantity": 0.0, "side": "BUY", "orderType": "Limit",
                          "price": 100}]
            async with authenticated(gw) as ctx:
                publisher = AsyncPublisher(redis_server.url)
                await publisher.start()
                for hook in ("fetch_positions", "fetch_balances"):
                    for model in await ibkr.call(hook, ctx=ctx, account_id="DU1234"):
                        publisher.publish(model)
                for model in await ibkr.call("fetch_orders", ctx=ctx, account_id="DU1234", since=0):
                    publisher.publish(model)
                await publisher.flush()
                await publisher.close()
                r = redis.Redis.from_url(redis_server.url)
                assert orjson.loads(r.get("live_data:latest:positions:DU1234"))["symbol"] == "SPY"
                assert orjson.loads(r.get("live_data:latest:balances:DU1234"))["account_id"] == "DU1234"
                entries = r.xrange("live_data:stream:orders:DU1234")
                assert len(entries) == 1
                order = orjson.loads(entries[0][1][b"data"])
                assert (order["order_id"], order["status"], order["price"]) == ("7", "open", 100.0)

    run(main())


def test_endpoint_keys_ignore_query_and_account():
    assert endpoint_key("get", "/iserver/account/orders?force=true") == "GET /iserver/account/orders"
    assert endpoint_key("GET", "/portfolio/U123/ledger") == "GET /portfolio/{acct}/ledger"
    assert endpoint_key("GET", "/portfolio/accounts") == "GET /portfolio/accounts"


def test_pacer_holds_global_rate_and_per_endpoint_interval():
    async def main():
        loop = asyncio.get_running_loop()
        pacer = Pacer(rate=20.0, intervals={"GET /slow": 0.2})
        times = []

        async def hit(path):
            await pacer.wait("GET", path)
            times.append((path, loop.time()))

        start = loop.time()
        await asyncio.gather(*(hit("/fast") for _ in range(6)), *(hit("/slow?x=1") for _ in range(3)))
        fast = [t for p, t in times if p == "/fast"]
        slow = [t for p, t in times if p.startswith("/slow")]
        all_times = sorted(t for _, t in times)
        gaps = [b - a for a, b in zip(all_times, all_times[1:])]
        assert min(gaps) >= 0.05 - 0.005, "global 20/s"
        assert [round(b - a, 1) for a, b in zip(slow, slow[1:])] == [0.2, 0.2]
        assert fast[-1] - start < 0.5, "a slow endpoint does not hold up the others"

    run(main())


def test_client_paces_orders_endpoint_on_the_wire(ibkr, authenticated):
    async def main():
        async with FakeGateway() as gw:
            gw.orders_preflight = False
            gw.orders = [{"acct": "DU1234", "orderId": 1, "status": "Submitted"}]
            async with authenticated(gw, pacing_overrides={"GET /iserver/account/orders": 0.15}) as ctx:
                await asyncio.gather(*(ibkr.call("fetch_orders", ctx=ctx, account_id="DU1234", since=0)
                                       for _ in range(4)))
                at = [r.at for r in gw.calls("/iserver/account/orders")]
                assert len(at) == 4
                assert all(b - a >= 0.14 for a, b in zip(at, at[1:]))

    run(main())
