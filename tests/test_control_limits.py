"""Live control has limits (issue 11, items 5 and 6): a broker streams at most ``max_symbols`` symbols, and
every field of a control command is bounded, so nothing a publisher sends is echoed back at any size."""

from __future__ import annotations

import asyncio
import logging
import uuid

import orjson
import pytest
import redis.asyncio as aioredis

from livedata_core.redis_io.control import MAX_COMMAND_BYTES, ControlClient, ControlError
from livedata_core.runner import Runner, load_config
from livedata_core.testing import running
from livedata_core.plugin_kit.tokens import MemoryTokenStore

OFF = {"positions": 0, "balances": 0, "orders": 0, "transactions": 0}


def demo_runner(url: str, **table) -> Runner:
    config = load_config({"redis": {"url": url}, "status_interval": 0.1,
                          "brokers": {"demo": {"symbols": ["AAPL", "MSFT"], "poll": OFF, **table}}})  # fmt: skip
    return Runner(config, token_store=MemoryTokenStore())


async def control(runner: Runner, url: str, call, *args):
    await asyncio.wait_for(runner.control.ready.wait(), 5)
    with ControlClient(url, timeout=5) as client:
        return await asyncio.to_thread(getattr(client, call), *args)


# -- the cap on symbols ------------------------------------------------------------------------------------


def test_a_live_subscribe_over_the_cap_is_refused_with_the_counts_and_changes_nothing(redis_server):
    async def go():
        async with running(demo_runner(redis_server.url, max_symbols=5)) as runner:
            with pytest.raises(ControlError) as info:
                await control(runner, redis_server.url, "subscribe", "demo", ["A", "B", "C", "D", "AAPL"])
            before = (await control(runner, redis_server.url, "status"))["brokers"]["demo"]
            added = await control(runner, redis_server.url, "subscribe", "demo", ["A", "B", "C", "MSFT"])
            after = (await control(runner, redis_server.url, "status"))["brokers"]["demo"]
        return str(info.value), before, added, after

    message, before, added, after = asyncio.run(go())
    assert message == (
        "cannot subscribe 4 more symbols to demo: 2 subscribed now, 6 would exceed the cap of 5 "
        "(brokers.demo.max_symbols); unsubscribe some or raise max_symbols in [brokers.demo]"
    )
    assert before["symbols"] == ["AAPL", "MSFT"] and before["extra"]["max_symbols"] == 5
    assert added == {"added": ["A", "B", "C"], "already": ["MSFT"]}
    assert after["symbols"] == ["A", "AAPL", "B", "C", "MSFT"]


def test_the_reported_flood_of_symbols_stops_at_the_brokers_default_cap(redis_server):
    # The issue: 100 commands of 1,000 symbols were all accepted. The demo's own cap is 5,000.
    async def go():
        async with running(demo_runner(redis_server.url)) as runner:
            for n in range(4):
                await control(runner, redis_server.url, "subscribe", "demo", [f"S{n}X{i}" for i in range(1000)])
            with pytest.raises(ControlError) as info:
                await control(runner, redis_server.url, "subscribe", "demo", [f"S4X{i}" for i in range(1000)])
            status = await control(runner, redis_server.url, "status")
        return str(info.value), status["brokers"]["demo"]["symbols"]

    message, symbols = asyncio.run(go())
    assert message.startswith("cannot subscribe 1000 more symbols to demo: 4002 subscribed now, 5002 would exceed "
                              "the cap of 5000 (brokers.demo.max_symbols, by default the broker's own limit)")
    assert len(symbols) == 4002


# -- bounded command fields --------------------------------------------------------------------------------


async def ask(url: str, command: dict | bytes, reply_to: str | None = None, timeout: float = 5.0) -> bytes | None:
    """Publish one raw command and return the raw reply on ``reply_to`` (None if none came in ``timeout``)."""
    client = aioredis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        if reply_to:
            await pubsub.subscribe(reply_to)
        raw = command if isinstance(command, bytes) else orjson.dumps(command)
        assert await client.publish("live_data:control", raw) == 1
        if not reply_to:
            return None
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            message = await pubsub.get_message(timeout=0.2)
            if message and message["type"] == "message":
                return message["data"]
        return None
    finally:
        await pubsub.aclose()
        await client.aclose()


def reply_channel() -> str:
    return "live_data:control:reply:" + uuid.uuid4().hex


HUGE = 100_000  # characters: far over every field's bound, well under the size limit of a whole command

REFUSED = [
    ({"id": "i" * HUGE, "command": "ping"}, "id must be a string of at most 64 characters or a whole number, was 'iiii"),
    ({"id": 1.5, "command": "ping"}, "id must be a string of at most 64 characters or a whole number, was 1.5"),
    ({"command": "c" * HUGE}, "unknown command 'cccc"),
    ({"command": "subscribe", "broker": "b" * HUGE, "symbols": ["AAPL"]},
     "broker must be a broker name of at most 32 characters, was 'bbbb"),
    ({"command": "subscribe", "broker": "demo", "symbols": ["AAPL", "s" * HUGE]},
     f"symbols[1] is {HUGE} characters long; a symbol has at most 64"),
    ({"command": "subscribe", "broker": "demo", "symbols": ["AAPL", 7]}, "symbols[1] must be a string, was 7"),
    ({"command": "unsubscribe", "broker": "demo", "symbols": ["x"] * 1001}, "at most 1000 symbols per command, was 1001"),
    ({"command": "ping", "k" * HUGE: 1}, "unknown key(s) 'kkkk"),
]


def test_every_field_of_a_command_is_bounded_and_never_echoed_at_length(redis_server):
    async def go():
        async with running(demo_runner(redis_server.url)) as runner:
            await asyncio.wait_for(runner.control.ready.wait(), 5)
            replies = []
            for command, _ in REFUSED:
                channel = reply_channel()
                replies.append(await ask(redis_server.url, {**command, "reply_to": channel}, channel))
            symbols = (await control(runner, redis_server.url, "status"))["brokers"]["demo"]["symbols"]
        return replies, symbols

    replies, symbols = asyncio.run(go())
    for (command, expected), raw in zip(REFUSED, replies):
        assert raw is not None, f"no answer to {str(command)[:80]}"
        assert len(raw) < 1000, f"a {len(raw)}-byte answer to {str(command)[:80]}"
        reply = orjson.loads(raw)
        assert reply["ok"] is False and expected in reply["error"], reply
        assert reply["id"] in (None, 7)
    assert symbols == ["AAPL", "MSFT"]


def test_a_good_id_is_echoed_and_a_one_megabyte_command_is_refused_unread(redis_server, caplog):
    caplog.set_level(logging.WARNING, logger="livedata.runner.control")

    async def go():
        async with running(demo_runner(redis_server.url)) as runner:
            await asyncio.wait_for(runner.control.ready.wait(), 5)
            big, ping = reply_channel(), reply_channel()
            # The 1 MB id: the command is longer than any command can be, so it is not even parsed.
            unanswered = await ask(redis_server.url, {"id": "x" * 1_000_000, "command": "ping", "reply_to": big},
                                   reply_to=None)  # fmt: skip
            # Commands are taken in order: once this one is answered, the big one was dealt with.
            answered = await ask(redis_server.url, {"id": "a" * 64, "command": "ping", "reply_to": ping}, ping)
            numbered = await ask(redis_server.url, {"id": 7, "command": "ping", "reply_to": ping}, ping)
        return unanswered, answered, numbered

    unanswered, answered, numbered = asyncio.run(go())
    assert unanswered is None
    assert orjson.loads(answered)["id"] == "a" * 64 and orjson.loads(answered)["ok"] is True
    assert orjson.loads(numbered)["id"] == 7
    refused = [r.getMessage() for r in caplog.records if "control command" in r.getMessage()]
    assert refused and all(len(m) < 300 for m in refused), refused
    assert f"is longer than a command can be ({MAX_COMMAND_BYTES} bytes)" in refused[0]


def test_a_reply_channel_out_of_bounds_gets_no_answer_and_is_logged_short(redis_server, caplog):
    caplog.set_level(logging.WARNING, logger="livedata.runner.control")
    long_channel = "live_data:control:reply:" + "r" * 10_000

    async def go():
        async with running(demo_runner(redis_server.url)) as runner:
            await asyncio.wait_for(runner.control.ready.wait(), 5)
            silent = await ask(redis_server.url, {"command": "ping", "reply_to": long_channel}, long_channel, timeout=1)
            ping = reply_channel()
            answered = await ask(redis_server.url, {"command": "ping", "reply_to": ping}, ping)
        return silent, answered

    silent, answered = asyncio.run(go())
    assert silent is None and orjson.loads(answered)["ok"] is True
    refused = [r.getMessage() for r in caplog.records if "control command" in r.getMessage()]
    assert any("reply_to must be a channel under live_data:control:reply: with at most 64 more characters" in m
               for m in refused), refused
    assert all(len(m) < 300 for m in refused)


def test_the_client_refuses_an_out_of_bounds_command_before_sending_it(redis_server):
    # No runner: a command the runner would refuse is refused here, saying why, instead of "no runner".
    with ControlClient(redis_server.url, timeout=1) as client:
        with pytest.raises(ControlError, match="symbols\\[0\\] is 65 characters long; a symbol has at most 64"):
            client.subscribe("demo", ["S" * 65])
        with pytest.raises(ControlError, match="broker must be a broker name of at most 32 characters"):
            client.subscribe("b" * 33, ["AAPL"])


# -- the trust model: the Redis ACLs docs/channels.md recommends -------------------------------------------


def _documented_acls() -> list[str]:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    section = text.split("## Access control", 1)[1]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.startswith("ACL SETUSER")]


def test_the_documented_redis_acls_let_each_client_do_its_part_and_no_more():
    import redis

    from livedata_core.redis_io.server import RedisServer

    acls = _documented_acls()
    assert len(acls) == 4 and acls[-1] == "ACL SETUSER default off"
    with RedisServer() as server:
        admin = redis.Redis(port=server.port)
        for line in acls:
            admin.execute_command(*line.split())
        admin.close()

        def url(user: str, secret: str) -> str:
            return f"redis://{user}:{secret}@127.0.0.1:{server.port}/0"

        async def go():
            polls = {"positions": 0.1, "balances": 0.1, "orders": 0.1, "transactions": 0.1}
            async with running(demo_runner(url("livedata", "runner-secret"), poll=polls, order_every=0.1)) as runner:
                await asyncio.wait_for(runner.control.ready.wait(), 5)
                reader = aioredis.Redis.from_url(url("consumer", "consumer-secret"))
                pubsub = reader.pubsub(ignore_subscribe_messages=True)
                await pubsub.psubscribe("live_data:quotes:*")
                with ControlClient(url("operator", "operator-secret"), timeout=5) as client:
                    added = await asyncio.to_thread(client.subscribe, "demo", ["NVDA"])
                    status = await asyncio.to_thread(client.status)
                    with pytest.raises(Exception, match="NOPERM|permission"):
                        await asyncio.to_thread(client._redis.publish, "live_data:quotes:AAPL", b"{}")
                quote = orders = book = None
                for _ in range(200):  # orders reach their stream and positions the book: XADD, HSET allowed
                    message = await pubsub.get_message(timeout=0.05)
                    quote = quote or (message and orjson.loads(message["data"]))
                    orders = await reader.xrange("live_data:stream:orders:DEMO-1")
                    book = await reader.hgetall("live_data:book:positions:DEMO-1")
                    if quote and orders and book:
                        break
                refused = []
                for attempt in (reader.publish("live_data:control", b'{"command": "ping"}'),
                                reader.set("live_data:latest:quotes:AAPL", b"{}")):  # fmt: skip
                    try:
                        await attempt
                    except Exception as exc:
                        refused.append(str(exc))
                await pubsub.aclose()
                await reader.aclose()
                published = runner.publisher.stats.published
            return added, status, quote, refused, published, orders, book

        added, status, quote, refused, published, orders, book = asyncio.run(go())
    assert added == {"added": ["NVDA"], "already": []} and "NVDA" in status["brokers"]["demo"]["symbols"]
    assert quote and quote["broker"] == "demo" and orders and book and published > 0
    assert len(refused) == 2 and all("NOPERM" in r or "permission" in r for r in refused), refused


def test_junk_on_the_control_channel_does_not_grow_the_log_with_it(redis_server, caplog):
    """Anyone who can publish on the channel can send junk: 300 refusals log 5 lines, and the runner still answers."""
    caplog.set_level(logging.WARNING, logger="livedata.runner.control")

    async def go():
        async with running(demo_runner(redis_server.url)) as runner:
            await asyncio.wait_for(runner.control.ready.wait(), 5)
            client = aioredis.Redis.from_url(redis_server.url)
            try:
                for i in range(300):
                    await client.publish("live_data:control", f"junk{i}")
            finally:
                await client.aclose()
            ping = reply_channel()
            answered = await ask(redis_server.url, {"command": "ping", "reply_to": ping}, ping)
            return answered, runner.control.refused

    answered, refused = asyncio.run(go())
    assert orjson.loads(answered)["ok"] is True and refused == 300
    logged = [r.getMessage() for r in caplog.records if "refused control command" in r.getMessage()]
    assert len(logged) == 5 and "from now on every 1000th is logged" in logged[-1], logged
