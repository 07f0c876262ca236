"""The tos plugin as the runner drives it: entry point, hooks, reconnect, resubscribe, re-auth, Redis."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from livedata_core.errors import ConfigError
from livedata_core.plugin_kit.plugins import get_broker
from livedata_core.runner import Runner, load_config
from livedata_core.plugin_kit.tokens import MemoryTokenStore
from livedata_tos import plugin
from livedata_tos.testing import FakeSchwabClient, FakeStreamer, FakeTokens, activity_item

GOOD, FRESH = "tok-SECRET-good", "tok-SECRET-fresh"


def make_config(redis_url: str, fake: FakeStreamer, symbols: list[str], **settings) -> dict:
    table = {"symbols": symbols, "streamer_url": fake.url, "login_timeout": 2.0, "command_timeout": 2.0,
             "heartbeat_timeout": 5.0, "connection_limit_retry": 0.2, **settings}  # fmt: skip
    return load_config({"redis": {"url": redis_url}, "brokers": {"tos": table},
                        "backoff": {"initial": 0.02, "max": 0.1}})  # fmt: skip


async def messages(pubsub, n: int, timeout: float = 3.0) -> list[tuple[str, dict]]:
    out = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(out) < n and asyncio.get_running_loop().time() < deadline:
        m = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
        if m is not None:
            out.append((m["channel"].decode(), json.loads(m["data"])))
    return out


async def first_match(pubsub, predicate, timeout: float = 3.0) -> tuple[str, dict]:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        m = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
        if m is not None:
            item = (m["channel"].decode(), json.loads(m["data"]))
            if predicate(*item):
                return item
    raise AssertionError("no matching message")


def test_entry_point_declares_the_broker():
    broker = get_broker("tos")
    # login: `livedata auth tos` (issue 12); fetch_bars and option_chain: bars and chains (issue 15)
    assert broker.info.capabilities == {"authenticate", "login", "stream", "fetch_bars", "option_chain"}
    assert broker.info.kinds == ("quotes", "bars", "depth")
    assert broker.normalize_symbol("/esz24") == "/ESZ24"
    with pytest.raises(ConfigError, match="streamer_url"):
        broker.make_context({"streamer_url": "http://x"})
    with pytest.raises(ConfigError, match="bogus"):
        broker.make_context({"bogus": 1})
    assert broker.make_context({}).settings.heartbeat_timeout == 60.0


def test_missing_schwab_app_credentials_stop_the_runner_before_it_starts(monkeypatch):
    monkeypatch.delenv("LIVEDATA_SCHWAB_APP_KEY")
    monkeypatch.delenv("LIVEDATA_SCHWAB_APP_SECRET")
    with pytest.raises(ConfigError, match=r"LIVEDATA_SCHWAB_APP_KEY and LIVEDATA_SCHWAB_APP_SECRET.*\[brokers\.tos\.schwab\]"):
        Runner(load_config({"brokers": {"tos": {"symbols": ["AAPL"]}}}), token_store=MemoryTokenStore())
    Runner(load_config({"brokers": {"tos": {"schwab": {"app_key": "k", "app_secret": "s"}}}}), token_store=MemoryTokenStore())


def test_runner_streams_resubscribes_after_a_drop_and_reauthenticates_after_login_denied(redis_server, monkeypatch):
    tokens = FakeTokens(GOOD, FRESH)

    async def main():
        async with FakeStreamer(valid_tokens=[GOOD]) as fake:
            client = FakeSchwabClient(fake, tokens)
            monkeypatch.setattr(plugin, "make_client", lambda settings, store, log, status=None: client)
            r = aioredis.Redis(port=redis_server.port)
            pubsub = r.pubsub()
            await pubsub.psubscribe("live_data:quotes:*", "live_data:orders:*")
            runner = Runner(make_config(redis_server.url, fake, ["aapl", "/es"]), token_store=MemoryTokenStore())
            task = asyncio.create_task(runner.run())
            await fake.wait_for(lambda: fake.subscriptions.get("LEVELONE_FUTURES") == {"/ES"}
                                and fake.subscriptions.get("LEVELONE_EQUITIES") == {"AAPL"})  # fmt: skip

            await fake.send_data("LEVELONE_EQUITIES", [{"key": "AAPL", "1": 190.0, "2": 190.1, "3": 190.05}])
            await fake.send_data("LEVELONE_EQUITIES", [{"key": "AAPL", "3": 190.08}])
            # Both frames may be conflated into one publish; the last one is always complete.
            _, last = await first_match(pubsub, lambda c, q: c == "live_data:quotes:AAPL" and q["last"] == 190.08)
            assert (last["bid"], last["ask"], last["last"]) == (190.0, 190.1, 190.08)

            # Live control while streaming.
            await runner.subscribe("tos", ["msft"])
            await runner.unsubscribe("tos", ["AAPL"])
            assert fake.subscriptions["LEVELONE_EQUITIES"] == {"MSFT"}

            # A dropped connection: the runner reconnects, logs in and subscribes what is wanted now.
            await fake.drop()
            await fake.wait_for(lambda: fake.connected_total == 2
                                and fake.subscriptions.get("LEVELONE_EQUITIES") == {"MSFT"}
                                and fake.subscriptions.get("LEVELONE_FUTURES") == {"/ES"})  # fmt: skip
            await fake.send_data("LEVELONE_EQUITIES", [{"key": "MSFT", "1": 410.0}])
            ((channel, quote),) = await messages(pubsub, 1)
            assert (channel, quote["bid"], quote["broker"]) == ("live_data:quotes:MSFT", 410.0, "tos")

            # Login denied with the old token: AuthError, re-authenticate (refresh), log in with the new token.
            fake.valid_tokens = {FRESH}
            await fake.drop()
            await fake.wait_for(lambda: fake.logins == 3, timeout=5)
            assert fake.login_tokens[-2:] == [GOOD, FRESH]
            assert tokens.refreshes == 1
            await fake.wait_for(lambda: fake.subscriptions.get("LEVELONE_EQUITIES") == {"MSFT"})

            # Account activity reaches the orders channel.
            await fake.send_activity([activity_item(1, "12345678", "OrderAccepted", {"SchwabOrderID": "42", "Status": "Open"})])
            channel, order = await first_match(pubsub, lambda c, q: c.startswith("live_data:orders:"))
            assert (channel, order["order_id"], order["status"]) == ("live_data:orders:12345678", "42", "open")

            status = runner.status()["brokers"]["tos"]
            assert status["state"] == "streaming" and status["reconnects"] >= 2
            assert status["extra"]["streamer_login"] == "server=fake-1;status=NP"
            assert status["extra"]["streamer"] == f"127.0.0.1:{fake.port}"

            runner.stop()
            await asyncio.wait_for(task, 10)
            assert fake.logouts == 1
            assert client.closed
            await pubsub.aclose()
            await r.aclose()

    asyncio.run(main())


def test_runner_reports_connection_limit_and_waits_retry_after(redis_server, monkeypatch):
    async def main():
        async with FakeStreamer() as fake:
            monkeypatch.setattr(plugin, "make_client", lambda settings, store, log, status=None: FakeSchwabClient(fake))
            fake.login_code = 12
            runner = Runner(make_config(redis_server.url, fake, ["AAPL"], connection_limit_retry=0.3),
                            token_store=MemoryTokenStore())  # fmt: skip
            task = asyncio.create_task(runner.run())
            await fake.wait_for(lambda: len(fake.login_tokens) >= 2, timeout=5)
            start = asyncio.get_running_loop().time()
            await fake.wait_for(lambda: len(fake.login_tokens) >= 3, timeout=5)
            assert asyncio.get_running_loop().time() - start >= 0.25  # retry_after honoured, not 0.1 s backoff
            status = runner.status()["brokers"]["tos"]
            assert "another streamer is already connected for this Schwab login" in status["last_error"]
            fake.login_code = None
            await fake.wait_for(lambda: fake.subscriptions.get("LEVELONE_EQUITIES") == {"AAPL"}, timeout=5)
            runner.stop()
            await asyncio.wait_for(task, 10)

    asyncio.run(main())
