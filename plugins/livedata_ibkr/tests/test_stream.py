"""Quotes and order updates over the fake gateway's websocket (WSS), published to the real redis-server."""

import asyncio

import orjson
import pytest
import redis

from livedata_core.errors import AuthError, LoginRequired, StreamError, SymbolsRefused
from livedata_core.models import Order, Quote
from livedata_core.redis_io.publisher import AsyncPublisher
from livedata_core.plugin_kit.streaming import HEARTBEAT
from livedata_ibkr.testing import FakeGateway


def run(coro):
    return asyncio.run(coro)


def test_deltas_merge_into_complete_quotes_published_to_redis(authenticated, streaming, redis_server):
    async def main():
        async with (FakeGateway() as gw, authenticated(gw) as ctx,
                    streaming(ctx, ["AAPL", "IBM@8314"]) as (stream, reader)):
            client = gw.clients[0]
            await gw.wait_for(lambda: len([m for m in client.sent if m.startswith("smd+")]) == 2)
            smd = [m for m in client.sent if m.startswith("smd+")]
            assert smd[0].startswith("smd+265598+") and smd[1].startswith("smd+8314+")
            fields = orjson.loads(smd[0].split("+", 2)[2])["fields"]
            assert {"31", "84", "86", "85", "88", "7762"} <= set(fields)
            assert all(isinstance(f, str) for f in fields)
            assert gw.calls("/iserver/secdef/search")[0].query == {"symbol": "AAPL", "secType": "STK"}
            assert len(gw.calls("/iserver/secdef/search")) == 1, "a given conid needs no lookup"

            publisher = AsyncPublisher(redis_server.url)
            await publisher.start()
            await gw.push_quote(265598, {"31": "C168.42", "84": "168.40", "86": "168.45", "88": "1,300",
                                         "85": "500", "87": "24.2M", "6509": "DPB"}, updated=1712596911593)
            await gw.push_quote(265598, {"84": "168.41"}, updated=1712596911600)  # a delta: only the bid
            await gw.push_quote(8314, {"31": "189.60", "7762": "1234567", "87": "1.2M", "7059": "100"})
            await gw.wait_for(lambda: len(reader.of(Quote)) == 3)
            for quote in reader.of(Quote):
                publisher.publish(quote)
            await publisher.flush()
            await publisher.close()

            r = redis.Redis.from_url(redis_server.url)
            aapl = orjson.loads(r.get("live_data:latest:quotes:AAPL"))
            assert aapl["bid"] == 168.41 and aapl["ask"] == 168.45 and aapl["last"] == 168.42
            assert aapl["bid_size"] == 1300.0 and aapl["ask_size"] == 500.0 and aapl["volume"] == 24_200_000.0
            assert aapl["timestamp"] == 1712596911600 and aapl["broker"] == "ibkr"
            assert aapl["extra"] == {"conid": 265598, "market_data": "delayed", "last_flag": "prior_close"}
            ibm = orjson.loads(r.get("live_data:latest:quotes:IBM@8314"))
            assert ibm["last"] == 189.6 and ibm["volume"] == 1234567.0 and ibm["last_size"] == 100.0
            assert ibm["bid"] is None

    run(main())


def test_system_heartbeats_and_echo_replies_are_heartbeats(authenticated, streaming):
    async def main():
        async with (FakeGateway(hb_interval=0.05) as gw, authenticated(gw, echo_interval=0.05) as ctx,
                    streaming(ctx) as (stream, reader)):
            await gw.wait_for(lambda: reader.items.count(HEARTBEAT) >= 4)
            await gw.wait_for(lambda: "ech+hb" in gw.clients[0].sent)
            assert stream.heartbeat_timeout == 2.0

    run(main())


def test_subscriptions_are_renewed_before_the_gateway_expires_them(authenticated, streaming):
    async def main():
        async with (FakeGateway(smd_ttl=0.5) as gw, authenticated(gw, renew_interval=0.3) as ctx,
                    streaming(ctx, ["AAPL"]) as (stream, reader)):
            await gw.wait_for(lambda: gw.subscribed(265598))
            for i in range(8):  # 1.2 s: more than two lifetimes of a subscription
                await asyncio.sleep(0.15)
                assert await gw.push_quote(265598, {"31": f"{100 + i}.00"}) == 1
            assert gw.dropped_quotes == 0
            assert stream.renewals >= 3
            await gw.wait_for(lambda: len(reader.of(Quote)) == 8)
            assert reader.of(Quote)[-1].last == 107.0

    run(main())


def test_without_renewal_the_fake_gateway_stops_quotes(authenticated, streaming):
    # Guards the test above: the fake really expires subscriptions.
    async def main():
        async with (FakeGateway(smd_ttl=0.2) as gw, authenticated(gw, renew_interval=60) as ctx,
                    streaming(ctx, ["AAPL"]) as (stream, reader)):
            await asyncio.sleep(0.3)
            assert await gw.push_quote(265598, {"31": "1.00"}) == 0
            assert gw.dropped_quotes == 1

    run(main())


def test_auth_loss_on_the_websocket_raises_autherror_and_reauth_recovers(ibkr, authenticated, streaming):
    async def main():
        async with FakeGateway() as gw, authenticated(gw) as ctx:
            async with streaming(ctx, ["AAPL"]) as (stream, reader):
                await gw.lose_auth()
                await gw.wait_for(lambda: reader.task.done())
                assert isinstance(reader.error, AuthError) and "not authenticated" in str(reader.error)
            with pytest.raises(AuthError):
                await ibkr.call("stream", ctx=ctx)  # nothing more until re-authenticated
            await ibkr.call("authenticate", ctx=ctx)  # what the runner does next
            async with streaming(ctx, ["AAPL"]) as (stream, reader):
                await gw.wait_for(lambda: gw.subscribed(265598))
                await gw.push_quote(265598, {"31": "170.00"})
                await gw.wait_for(lambda: reader.of(Quote))

    run(main())


def test_competing_session_on_the_websocket_ends_in_login_required_not_a_takeover(ibkr, authenticated, streaming):
    async def main():
        async with FakeGateway() as gw, authenticated(gw) as ctx:
            async with streaming(ctx, ["AAPL"]) as (stream, reader):
                await gw.lose_auth(competing=True)  # the user logged in to TWS
                await gw.wait_for(lambda: reader.task.done())
                assert isinstance(reader.error, AuthError) and "competing" in str(reader.error)
            with pytest.raises(LoginRequired, match="another IBKR session"):
                await ibkr.call("authenticate", ctx=ctx)  # what the runner does after AuthError
            assert gw.calls("/iserver/auth/ssodh/init") == []
            assert gw.competing, "the user's TWS session keeps the brokerage session"

    run(main())


def test_forced_drop_raises_stream_error(authenticated, streaming):
    async def main():
        async with FakeGateway() as gw, authenticated(gw) as ctx, streaming(ctx, ["AAPL"]) as (stream, reader):
            await gw.drop_websockets()
            await gw.wait_for(lambda: reader.task.done())
            assert isinstance(reader.error, StreamError) and "1011" in str(reader.error)

    run(main())


def test_session_is_sent_when_the_gateway_waits_for_it(ibkr, authenticated):
    async def main():
        async with FakeGateway() as gw, authenticated(gw) as ctx:
            stream = await ibkr.call("stream", ctx=ctx)
            stream.session.ws_token, token = None, stream.session.ws_token
            with pytest.raises(AuthError, match="wants a session"):
                await stream.connect()
            stream = await ibkr.call("stream", ctx=ctx)
            stream.session.ws_token = token
            await stream.connect()  # cookie path
            await stream.close()

    run(main())


def test_malformed_frames_are_counted_and_the_stream_goes_on(authenticated, streaming):
    async def main():
        async with FakeGateway() as gw, authenticated(gw) as ctx, streaming(ctx, ["AAPL"]) as (stream, reader):
            await gw.wait_for(lambda: gw.subscribed(265598))
            await gw.send_raw("not json")
            await gw.send_raw("[1, 2]")
            await gw.send_raw(orjson.dumps({"topic": "smd+265598", "conid": "x1"}).decode())
            await gw.send_raw(orjson.dumps({"topic": "smd+999", "conid": 999, "31": "1"}).decode())
            await gw.send_raw(orjson.dumps({"topic": "zzz"}).decode())
            await gw.send_raw(orjson.dumps({"topic": "smd+265598", "conid": 265598, "error": "no permissions"}).decode())
            await gw.push_quote(265598, {"31": "abc", "84": "10.00"})
            await gw.send_raw(orjson.dumps({"topic": "sor", "args": [{"status": "Filled"}]}).decode())
            await gw.wait_for(lambda: reader.of(Quote))
            assert reader.of(Quote)[0].bid == 10.0 and reader.of(Quote)[0].last is None
            assert reader.error is None
            assert set(stream.stats.skipped) == {
                "ibkr: frame is not JSON", "ibkr: frame is not an object", "ibkr smd: bad conid",
                "ibkr smd: conid not subscribed", "ibkr: unknown topic", "ibkr smd: bad value for field 31",
                "ibkr sor: order without orderId", "ibkr: websocket error message",
            }

    run(main())


def test_unknown_symbol_is_refused_by_name_and_the_others_stream(authenticated, streaming):
    async def main():
        async with FakeGateway() as gw, authenticated(gw) as ctx, streaming(ctx) as (stream, reader):
            with pytest.raises(SymbolsRefused, match="NOPE") as refused:
                await stream.subscribe(["NOPE", "AAPL"])
            assert refused.value.symbols == ["NOPE"]
            assert stream.stats.skipped["ibkr: unknown symbol"] == 1
            assert stream.conid_of == {"AAPL": 265598}
            await gw.wait_for(lambda: gw.subscribed(265598))
            await gw.push_quote(265598, {"31": "1.50"})
            await gw.wait_for(lambda: reader.of(Quote))
            assert reader.error is None, "a refused symbol does not end the stream"

    run(main())


def test_unsubscribe_sends_umd_once_no_symbol_needs_the_conid(authenticated, streaming):
    async def main():
        async with (FakeGateway() as gw, authenticated(gw) as ctx,
                    streaming(ctx, ["AAPL", "AAPL@265598"]) as (stream, reader)):
            await gw.wait_for(lambda: gw.subscribed(265598))
            client = gw.clients[0]
            assert len([m for m in client.sent if m.startswith("smd+")]) == 1  # one smd for both forms
            await gw.push_quote(265598, {"31": "1.50"})
            await gw.wait_for(lambda: len(reader.of(Quote)) == 2)
            assert sorted(q.symbol for q in reader.of(Quote)) == ["AAPL", "AAPL@265598"]
            await stream.unsubscribe(["AAPL"])
            assert not any(m.startswith("umd+") for m in client.sent)
            await stream.unsubscribe(["AAPL@265598"])
            await gw.wait_for(lambda: "umd+265598+{}" in client.sent)

    run(main())


def test_order_updates_merge_partial_frames(authenticated, streaming):
    async def main():
        async with FakeGateway() as gw, authenticated(gw) as ctx, streaming(ctx) as (stream, reader):
            await gw.wait_for(lambda: gw.clients and gw.clients[0].orders)
            await gw.push_order({"acct": "DU1234", "conid": 265598, "orderId": 922048212, "ticker": "AAPL",
                                 "remainingQuantity": 100.0, "filledQuantity": 0.0, "status": "Submitted",
                                 "orderType": "Limit", "side": "BUY", "timeInForce": "GTC", "price": 372})
            await gw.push_order({"acct": "DU1234", "orderId": 922048212, "remainingQuantity": 60.0,
                                 "filledQuantity": 40.0, "avgPrice": "371.95"})
            await gw.wait_for(lambda: len(reader.of(Order)) == 2)
            first, second = reader.of(Order)
            assert (first.status, first.quantity, first.side, first.order_type) == ("open", 100.0, "buy", "limit")
            assert second.order_id == "922048212" and second.symbol == "AAPL"
            assert second.status == "partially_filled" and second.broker_status == "Submitted"
            assert (second.filled_quantity, second.remaining_quantity, second.quantity) == (40.0, 60.0, 100.0)
            assert second.average_fill_price == 371.95 and second.price == 372.0

    run(main())


def test_subscribe_on_a_closed_socket_is_a_stream_error(authenticated, streaming):
    async def main():
        async with FakeGateway() as gw, authenticated(gw) as ctx, streaming(ctx) as (stream, reader):
            await gw.drop_websockets()
            await gw.wait_for(lambda: reader.task.done())
            with pytest.raises(StreamError, match="closed while sending"):
                await stream.subscribe(["AAPL"])

    run(main())


def _row(symbol, conid, *sec_types):
    return {"conid": str(conid), "companyHeader": f"{symbol} - NYSE", "companyName": f"{symbol} CORP", "symbol": symbol,
            "description": "NYSE", "restricted": None, "sections": [{"secType": t} for t in sec_types]}


def test_only_an_exact_symbol_and_sec_type_match_is_streamed(authenticated, streaming):
    # The gateway's search is fuzzy: "AAP" finds AAPL. Streaming AAPL's quotes as "AAP" would publish another
    # instrument under the user's symbol.
    async def main():
        async with FakeGateway() as gw:
            gw.search_results["OPTONLY"] = [_row("OPTONLY", 111, "OPT", "WAR")]  # the symbol, but no STK section
            gw.search_results["BRK B"] = [_row("BRK A", 222, "STK"), _row("brk b", 333, "STK", "OPT")]
            async with authenticated(gw) as ctx, streaming(ctx) as (stream, reader):
                with pytest.raises(SymbolsRefused) as refused:
                    await stream.subscribe(["AAP", "OPTONLY", "BRK B", "IBM"])
                assert refused.value.symbols == ["AAP", "OPTONLY"]
                assert [r["symbol"] for r in await ctx.session.client.get("/iserver/secdef/search", symbol="AAP")] == ["AAPL"]
                assert stream.conid_of == {"BRK B": 333, "IBM": 8314}
                assert stream.stats.skipped["ibkr: unknown symbol"] == 2
                assert ctx.session.conids == {"BRK B": 333, "IBM": 8314}, "a miss is not cached as a conid"
                await gw.wait_for(lambda: gw.subscribed(8314) and gw.subscribed(333))
                assert not gw.subscribed(265598) and not gw.subscribed(111) and not gw.subscribed(222)

    run(main())


def test_connect_calls_the_orders_preflight_once_before_sor(ibkr, authenticated, streaming):
    # IBKR: "Call GET /iserver/account/orders first" before sor+{}; without it order updates may never come.
    async def main():
        paced = {"GET /iserver/account/orders": 0.3}  # paced like the rest
        async with FakeGateway() as gw, authenticated(gw, pacing_overrides=paced) as ctx:
            async with streaming(ctx) as (stream, reader):
                await gw.wait_for(lambda: gw.clients and gw.clients[0].orders)
                client = gw.clients[0]
                (preflight,) = gw.calls("/iserver/account/orders", "GET")
                assert preflight.at < client.sor_at and client.orders_preflighted
                assert await gw.push_order({"acct": "DU1234", "orderId": 1, "conid": 265598, "ticker": "AAPL",
                                            "status": "Submitted", "remainingQuantity": 1.0, "filledQuantity": 0.0,
                                            "side": "BUY", "orderType": "Market"}) == 1
                await gw.wait_for(lambda: reader.of(Order))
            # A reconnect pre-flights again, through the pacer (0.3 s apart here), and sends sor after it.
            stream = await ibkr.call("stream", ctx=ctx)
            await stream.connect()
            await gw.wait_for(lambda: len(gw.clients) == 1 and gw.clients[0].orders)
            first, second = gw.calls("/iserver/account/orders", "GET")
            assert second.at - first.at >= 0.29
            assert second.at < gw.clients[0].sor_at
            await stream.close()
            # The session's order feed is started: the next REST poll needs one request, not two.
            await ibkr.call("fetch_orders", ctx=ctx, account_id="DU1234", since=0)
            assert len(gw.calls("/iserver/account/orders")) == 3

    run(main())


def test_no_orders_preflight_without_stream_orders(authenticated, streaming):
    async def main():
        async with (FakeGateway() as gw, authenticated(gw, stream_orders=False) as ctx,
                    streaming(ctx, ["AAPL"]) as (stream, reader)):
            await gw.wait_for(lambda: gw.subscribed(265598))
            assert gw.calls("/iserver/account/orders") == []
            assert not any(m.startswith("sor+") for m in gw.clients[0].sent)

    run(main())


def _order(order_id, status="Submitted"):
    return {"acct": "DU1234", "orderId": order_id, "conid": 265598, "ticker": "AAPL", "status": status,
            "remainingQuantity": 1.0, "filledQuantity": 0.0, "side": "BUY", "orderType": "Market"}


def test_an_order_update_read_after_the_session_is_lost_is_yielded_before_the_auth_error(authenticated, streaming):
    async def main():
        async with FakeGateway() as gw, authenticated(gw) as ctx, streaming(ctx) as (stream, reader):
            await gw.wait_for(lambda: gw.clients and gw.clients[0].orders)
            ctx.session.mark_lost("tickle reports the brokerage session is not authenticated")
            await gw.push_order(_order(81))
            await gw.wait_for(lambda: reader.task.done())
            assert [o.order_id for o in reader.of(Order)] == ["81"]
            assert isinstance(reader.error, AuthError)

    run(main())


def test_order_updates_left_unread_are_handed_over_after_close_also_with_a_lost_session(ibkr, authenticated, streaming):
    # What the runner does after events() raised: close(), then read events() once more for what is left.
    async def main():
        async with FakeGateway() as gw, authenticated(gw) as ctx:
            async with streaming(ctx) as (stream, reader):
                await gw.wait_for(lambda: gw.clients and gw.clients[0].orders)
            stream = await ibkr.call("stream", ctx=ctx)
            await stream.connect()
            await gw.wait_for(lambda: len(gw.clients) == 1 and gw.clients[0].orders)
            await gw.push_order(_order(91))
            await gw.push_order(_order(92, "Filled"))
            await asyncio.sleep(0.2)  # received, not read
            ctx.session.mark_lost("tickle reports the brokerage session is not authenticated")
            await stream.close()
            left = []
            async with asyncio.timeout(0.5):  # the runner's DRAIN_TIMEOUT
                async for item in stream.events():
                    left.extend(item if isinstance(item, list) else [item])
            assert [(o.order_id, o.broker_status) for o in left if isinstance(o, Order)] == [
                ("91", "Submitted"), ("92", "Filled")]

    run(main())


def test_close_aborts_the_socket_of_a_gateway_that_does_not_answer_the_close(authenticated, streaming):
    async def main():
        loop = asyncio.get_running_loop()
        async with FakeGateway() as gw, authenticated(gw) as ctx, streaming(ctx, ["AAPL"]) as (stream, reader):
            await gw.wait_for(lambda: gw.subscribed(265598))
            sock = stream._ws.transport.get_extra_info("socket")
            gw.hang_websockets()
            started = loop.time()
            await reader.stop()  # cancels the reader, then close()
            assert loop.time() - started < 1.9, "inside the runner's 2 s for close()"
            await gw.wait_for(lambda: sock.fileno() == -1, timeout=0.2)  # the TCP connection is gone

    run(main())


def test_a_cancelled_close_still_closes_the_socket(authenticated, streaming):
    async def main():
        async with FakeGateway() as gw, authenticated(gw) as ctx, streaming(ctx, ["AAPL"]) as (stream, reader):
            await gw.wait_for(lambda: gw.subscribed(265598))
            sock = stream._ws.transport.get_extra_info("socket")
            reader.task.cancel()
            gw.hang_websockets()
            closing = asyncio.create_task(stream.close())
            await asyncio.sleep(0.2)  # waiting for the closing handshake
            closing.cancel()  # e.g. the runner's time for close() is up, or the runner is stopped
            with pytest.raises(asyncio.CancelledError):
                await closing
            await gw.wait_for(lambda: sock.fileno() == -1, timeout=0.2)

    run(main())


def test_a_cancellation_arriving_as_the_websocket_login_completes_stops_connect(ibkr, authenticated):
    # asyncio.wait_for (Python 3.11) would return the login's result and drop the cancellation: connect()
    # would carry on, subscribe to orders and start a keep-alive for a stream nobody reads.
    async def main():
        async with FakeGateway() as gw, authenticated(gw) as ctx:
            stream = await ibkr.call("stream", ctx=ctx)
            login = stream._await_authenticated

            async def login_then_cancelled(token):
                await login(token)
                connecting.cancel()  # arrives just as the login finishes

            stream._await_authenticated = login_then_cancelled
            connecting = asyncio.create_task(stream.connect())
            with pytest.raises(asyncio.CancelledError):
                await connecting
            await asyncio.sleep(0.1)
            assert gw.clients == [] and gw.ws_connections == 1, "the socket is closed"
            assert gw.calls("/iserver/account/orders") == [] and stream._keepalive is None

    run(main())


def test_quotes_resume_after_an_auth_loss_while_the_orders_preflight_waits_for_its_pacing(ibkr, authenticated, streaming):
    # The orders pre-flight is paced at one per 5 s, so after an sts authentication loss the new connection's
    # pre-flight waits for the pacer. IBKR needs it before sor, not before smd: quotes must not wait for it.
    async def main():
        paced = {"GET /iserver/account/orders": 5.0}  # IBKR's own limit
        async with FakeGateway() as gw, authenticated(gw, pacing_overrides=paced) as ctx:
            async with streaming(ctx, ["AAPL"]) as (stream, reader):
                await gw.wait_for(lambda: gw.clients and gw.clients[0].orders)
                await gw.lose_auth()
                await gw.wait_for(lambda: reader.task.done())
                assert isinstance(reader.error, AuthError)
            await ibkr.call("authenticate", ctx=ctx)  # what the runner does next
            async with streaming(ctx, ["AAPL"]) as (stream, reader):
                await gw.wait_for(lambda: gw.subscribed(265598))
                await gw.push_quote(265598, {"31": "170.00"})
                await gw.wait_for(lambda: reader.of(Quote))
                # The quote came while the new pre-flight was still held back by the pacer, and no sor went
                # out before it.
                assert len(gw.calls("/iserver/account/orders", "GET")) == 1
                assert not any(c.orders for c in gw.clients)
            # Closing the stream drops the pending pre-flight: nothing is left running against the gateway.
            assert stream._orders_task is None
            await asyncio.sleep(0.05)
            assert len(gw.calls("/iserver/account/orders", "GET")) == 1

    run(main())


def test_an_auth_loss_seen_by_the_background_orders_preflight_ends_the_stream_with_autherror(authenticated, streaming):
    async def main():
        paced = {"GET /iserver/account/orders": 0.5}
        async with FakeGateway() as gw, authenticated(gw, pacing_overrides=paced) as ctx:
            await ctx.session.client.get("/iserver/account/orders")  # the stream's pre-flight now waits 0.5 s
            async with streaming(ctx, ["AAPL"]) as (stream, reader):
                gw.authenticated = False  # REST 401 on /iserver, but no sts frame on the websocket
                await gw.wait_for(lambda: reader.task.done())
                assert isinstance(reader.error, AuthError) and "orders" in str(reader.error)
                assert ctx.session.auth_lost
                assert not any(c.orders for c in gw.clients)

    run(main())
