"""Refusals and malformed input that must not stop the stream: a refused ACCT_ACTIVITY subscription, and
malformed items next to valid ones in one frame. Real websockets against FakeStreamer, real redis-server."""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as aioredis

from livedata_core.runner import Runner, load_config
from livedata_core.plugin_kit.streaming import HEARTBEAT
from livedata_core.plugin_kit.tokens import MemoryTokenStore
from livedata_tos import plugin
from livedata_tos.stream import TosStream
from livedata_tos.testing import FakeSchwabClient, FakeStreamer, FakeTokens, open_stream


def make_stream(fake: FakeStreamer, **kw) -> TosStream:
    return TosStream(fake.info(), FakeTokens().source(), command_timeout=2, login_timeout=2, **kw)


async def next_models(events, timeout: float = 2.0) -> list:
    while True:
        ev = await asyncio.wait_for(events.__anext__(), timeout)
        if ev is not HEARTBEAT:
            return ev


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_refused_account_activity_subscription_keeps_the_stream_for_quotes(caplog):
    for code, msg in [(11, "Service not available"), (22, "Failed command SUBS"), (9, "unknown failure")]:

        async def main():
            async with FakeStreamer() as fake:
                fake.command_codes[("ACCT_ACTIVITY", "SUBS")] = (code, msg)
                status: dict = {}
                stream = make_stream(fake, status=status)
                await stream.connect()  # does not raise
                assert not stream.account_activity_subscribed
                assert f"failed with code {code}" in status["last_refused_command"]
                assert status["last_refused_command"].startswith("account activity subscribe failed")
                assert status["account_activity"] == "refused"
                assert stream.stats.skipped["account activity subscribe failed"] == 1
                await stream.subscribe(["AAPL"])
                events = stream.events()
                await fake.send_data("LEVELONE_EQUITIES", [{"key": "AAPL", "1": 10.0}])
                (q,) = await next_models(events)
                assert q.bid == 10.0
                await stream.close()
                assert fake.connected_total == 1

        run(main())
    assert "account activity subscribe failed" in caplog.text


def test_account_activity_subscribe_that_severs_the_connection_still_raises():
    async def main():
        from livedata_core.errors import StreamError

        async with FakeStreamer() as fake:
            fake.command_codes[("ACCT_ACTIVITY", "SUBS")] = (20, "Stream connection not found")
            stream = make_stream(fake)
            try:
                await stream.connect()
            except StreamError:
                pass
            else:
                raise AssertionError("code 20 must end the connection")
            await stream.close()

    run(main())


def test_runner_keeps_streaming_quotes_when_account_activity_is_refused(redis_server, monkeypatch):
    async def main():
        async with FakeStreamer() as fake:
            fake.command_codes[("ACCT_ACTIVITY", "SUBS")] = (11, "Service not available")
            monkeypatch.setattr(plugin, "make_client", lambda settings, store, log, status=None: FakeSchwabClient(fake))
            r = aioredis.Redis(port=redis_server.port)
            pubsub = r.pubsub()
            await pubsub.psubscribe("live_data:quotes:*")
            config = load_config({
                "redis": {"url": redis_server.url}, "backoff": {"initial": 0.02, "max": 0.1},
                "brokers": {"tos": {"symbols": ["AAPL"], "streamer_url": fake.url, "login_timeout": 2.0,
                                    "command_timeout": 2.0, "heartbeat_timeout": 5.0}}})  # fmt: skip
            runner = Runner(config, token_store=MemoryTokenStore())
            task = asyncio.create_task(runner.run())
            await fake.wait_for(lambda: fake.subscriptions.get("LEVELONE_EQUITIES") == {"AAPL"})
            await fake.send_data("LEVELONE_EQUITIES", [{"key": "AAPL", "1": 190.0, "2": 190.1}])
            m = None
            deadline = asyncio.get_running_loop().time() + 3
            while m is None and asyncio.get_running_loop().time() < deadline:
                m = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
            assert m is not None and json.loads(m["data"])["bid"] == 190.0
            await asyncio.sleep(0.3)  # no reconnect loop
            status = runner.status()["brokers"]["tos"]
            assert fake.connected_total == 1 and fake.logins == 1
            assert status["state"] == "streaming" and status["reconnects"] == 0
            assert "SERVICE_NOT_AVAILABLE" in status["extra"]["last_refused_command"]
            assert status["extra"]["account_activity"] == "refused"
            runner.stop()
            await asyncio.wait_for(task, 10)
            await pubsub.aclose()
            await r.aclose()

    asyncio.run(main())


BAD_AND_GOOD_QUOTES = [
    {"key": ["AAPL"], "1": 1.0},  # unhashable key
    {"key": "AAPL", "1": [1.0], "2": 2.5},  # a bad value is counted, the rest of the item used
    {"key": "MSFT", "1": 400.0},
]
BAD_AND_GOOD_ACTIVITY = [
    {"seq": [1], "1": "12345678", "2": "OrderCreated", "3": json.dumps({"SchwabOrderID": "1"})},  # unhashable seq
    {"seq": 2, "1": "12345678", "2": "OrderCreated",
     "3": json.dumps({"SchwabOrderID": "2", "LimitPrice": {"lo": "9" * 400, "signScale": 12}})},  # overflow
    {"seq": 3, "1": "12345678", "2": "OrderCreated",
     "3": json.dumps({"SchwabOrderID": "3", "Quantity": {"lo": "1", "signScale": 10**12}})},  # absurd scale
    {"seq": 4, "1": "12345678", "2": "OrderAccepted", "3": json.dumps({"SchwabOrderID": "4", "Status": "WORKING"})},
]  # fmt: skip


def test_malformed_items_cost_only_themselves_not_the_frame():
    async def main():
        async with FakeStreamer() as fake, open_stream(fake, ["AAPL", "MSFT"]) as stream:
            events = stream.events()
            await fake.send({"data": [
                {"service": "LEVELONE_EQUITIES", "timestamp": 1, "command": "SUBS", "content": BAD_AND_GOOD_QUOTES},
                {"service": "ACCT_ACTIVITY", "timestamp": 0, "command": "SUBS", "content": BAD_AND_GOOD_ACTIVITY}],
                "notify": [{"service": "ADMIN", "content": {"code": [30], "msg": "unhashable code"}}]})  # fmt: skip
            models = await next_models(events)
            quotes = [m for m in models if m.TYPE == "quotes"]
            orders = [m for m in models if m.TYPE == "orders"]
            assert [(q.symbol, q.bid, q.ask) for q in quotes] == [("AAPL", None, 2.5), ("MSFT", 400.0, None)]
            assert [(o.order_id, o.price, o.quantity) for o in orders] == [
                ("1", None, None), ("2", None, None), ("3", None, None), ("4", None, None)]
            assert orders[0].extra is None or "seq" not in orders[0].extra
            assert stream.stats.skipped["level-one item without a string key"] == 1
            assert stream.stats.skipped["LEVELONE_EQUITIES bad value"] == 1
            # The stream is still up and a malformed response code does not break a command.
            await fake.send_data("LEVELONE_EQUITIES", [{"key": "MSFT", "2": 401.0}])
            (q,) = await next_models(events)
            assert (q.bid, q.ask) == (400.0, 401.0)

    run(main())


def test_runner_publishes_the_valid_items_of_a_frame_with_malformed_ones(redis_server, monkeypatch):
    async def main():
        async with FakeStreamer() as fake:
            monkeypatch.setattr(plugin, "make_client", lambda settings, store, log, status=None: FakeSchwabClient(fake))
            r = aioredis.Redis(port=redis_server.port)
            pubsub = r.pubsub()
            await pubsub.psubscribe("live_data:quotes:*", "live_data:orders:*")
            config = load_config({
                "redis": {"url": redis_server.url}, "backoff": {"initial": 0.02, "max": 0.1},
                "brokers": {"tos": {"symbols": ["AAPL", "MSFT"], "streamer_url": fake.url, "login_timeout": 2.0,
                                    "command_timeout": 2.0, "heartbeat_timeout": 5.0}}})  # fmt: skip
            runner = Runner(config, token_store=MemoryTokenStore())
            task = asyncio.create_task(runner.run())
            await fake.wait_for(lambda: fake.subscriptions.get("LEVELONE_EQUITIES") == {"AAPL", "MSFT"})
            await fake.send({"data": [
                {"service": "LEVELONE_EQUITIES", "timestamp": 1, "command": "SUBS", "content": BAD_AND_GOOD_QUOTES},
                {"service": "ACCT_ACTIVITY", "timestamp": 0, "command": "SUBS", "content": BAD_AND_GOOD_ACTIVITY}]})  # fmt: skip
            got = []
            deadline = asyncio.get_running_loop().time() + 3
            while len(got) < 6 and asyncio.get_running_loop().time() < deadline:
                m = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
                if m is not None:
                    got.append((m["channel"].decode(), json.loads(m["data"])))
            runner.stop()
            await asyncio.wait_for(task, 10)
            await pubsub.aclose()
            await r.aclose()
        assert sorted(c for c, _ in got) == ["live_data:orders:12345678"] * 4 + ["live_data:quotes:AAPL", "live_data:quotes:MSFT"]
        assert [o["order_id"] for c, o in got if "orders" in c] == ["1", "2", "3", "4"]

    asyncio.run(main())
