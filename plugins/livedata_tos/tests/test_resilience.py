"""Refusals and malformed input that must not stop the stream: a refused ACCT_ACTIVITY subscription, and
malformed items next to valid ones in one frame. Real websockets against FakeStreamer, real redis-server."""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as aioredis

from livedata_core.runner import Runner, load_config
from livedata_core.streaming import HEARTBEAT
from livedata_core.tokens import MemoryTokenStore
from livedata_tos import plugin
from livedata_tos.stream import TosStream
from livedata_tos.testing import FakeSchwabClient, FakeStreamer, FakeTokens


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
