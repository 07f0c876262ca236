"""Demo data never outlives the demo as a symbol's current value (issue 11, item 11): what the runner writes for a
broker that declares its data ephemeral (the demo's ``expire_after``) expires, while subscribers still receive it."""

import asyncio
import json
import threading
import time

import pytest
import redis

from livedata_core.errors import ConfigError
from livedata_core.models import Order, Position, Quote, Transaction
from livedata_core.redis_io.publisher import AsyncPublisher
from livedata_core.runner import Runner, load_config
from livedata_core.redis_io.subscriber import book, latest
from livedata_core.testing import running

FAST = {"initial": 0.05, "max": 0.2, "login_retry": 0.5}
POLL = {"positions": 0.1, "balances": 0.1, "orders": 0.1, "transactions": 0.1}


def demo_config(url, **demo):
    table = {"symbols": ["AAPL", "MSFT"], "poll": POLL, "order_every": 0.1, "quotes_per_second": 200, **demo}
    return load_config({"redis": {"url": url}, "backoff": FAST, "status_interval": 0.1, "brokers": {"demo": table}}, env={})


def _seed_snippet_listener(port, channel, ready, out, count):
    # The plain redis-py consumer of the seed design (with the subscribe confirmation left out).
    r = redis.Redis(port=port)
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    ready.set()
    for message in pubsub.listen():
        out.append(json.loads(message["data"]))
        if len(out) >= count:
            break
    pubsub.close()


def _data_keys(r):
    return sorted(k.decode() for k in r.keys("live_data:*") if k != b"live_data:status")


def test_after_the_demo_stops_its_prices_are_no_symbols_current_value(redis_server):
    r = redis.Redis(port=redis_server.port)
    ready, received = threading.Event(), []
    listener = threading.Thread(target=_seed_snippet_listener,
                                args=(redis_server.port, "live_data:quotes:AAPL", ready, received, 3))  # fmt: skip
    listener.start()
    ready.wait(5)

    async def go():
        async with running(Runner(demo_config(redis_server.url, expire_after=1))):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not (
                received and r.exists("live_data:stream:orders:DEMO-1") and r.exists("live_data:stream:transactions:DEMO-1")
            ):
                await asyncio.sleep(0.05)
            keys = set(_data_keys(r))  # now: once the runner stops, its keys expire within expire_after
            return latest("quotes", "AAPL", url=redis_server.url), book("positions", "DEMO-1", url=redis_server.url), keys

    during, positions, keys = asyncio.run(go())
    listener.join(5)
    # While it runs, the demo is a broker like any other: subscribers get its quotes, late readers its latest value.
    assert len(received) == 3 and all(q["broker"] == "demo" and q["symbol"] == "AAPL" for q in received)
    assert during is not None and during.broker == "demo"
    assert positions and all(p.broker == "demo" for p in positions.values())
    assert {"live_data:latest:quotes:AAPL", "live_data:book:positions:DEMO-1", "live_data:stream:orders:DEMO-1"} <= keys
    # Once it has stopped, within its expiry, nothing it wrote is left.
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline and _data_keys(r):
        time.sleep(0.1)
    assert latest("quotes", "AAPL", url=redis_server.url) is None
    assert book("positions", "DEMO-1", url=redis_server.url) == {}
    assert _data_keys(r) == []


def test_the_demo_expires_its_data_without_being_told(redis_server):
    r = redis.Redis(port=redis_server.port)

    async def go():
        async with running(Runner(demo_config(redis_server.url))):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not (
                r.exists("live_data:latest:quotes:AAPL") and r.exists("live_data:book:balances:DEMO-1")
                and r.exists("live_data:stream:transactions:DEMO-1")
            ):
                await asyncio.sleep(0.05)
            return {key: r.pttl(key) for key in _data_keys(r)}

    ttls = asyncio.run(go())
    for kind in ("latest:quotes:AAPL", "latest:orders:DEMO-1", "book:positions:DEMO-1", "book:balances:DEMO-1",
                 "stream:orders:DEMO-1", "stream:transactions:DEMO-1"):  # fmt: skip
        assert 0 < ttls[f"live_data:{kind}"] <= 60_000, kind  # the default: a minute after the last write


def test_a_bad_expiry_is_refused_at_start_naming_the_key(redis_server):
    for bad in (0, -5, "60", True):
        with pytest.raises(ConfigError, match="brokers.demo.expire_after"):
            Runner(demo_config(redis_server.url, expire_after=bad))


def _models(broker, n):
    return [
        Quote(broker=broker, symbol=f"{broker.upper()}Q", last=1.0 + n),
        Order(broker=broker, account_id=f"{broker}-1", order_id=str(n), status="open"),
        Transaction(broker=broker, account_id=f"{broker}-1", transaction_id=str(n), type="fee", amount=-1.0),
        Position(broker=broker, account_id=f"{broker}-1", symbol="AAPL", quantity=1.0 + n),
    ]


def test_expiry_is_for_the_brokers_that_ask_for_it_only(redis_server):
    r = redis.Redis(port=redis_server.port)

    async def go():
        pub = AsyncPublisher(redis_server.url, expire_after={"sim": 30})
        await pub.start()
        for n in range(3):
            pub.publish_many(_models("sim", n) + _models("real", n))
        assert await pub.flush(5)
        await pub.close()

    asyncio.run(go())
    ttls = {key.decode(): r.pttl(key) for key in r.keys("live_data:*")}
    assert len(ttls) == 14  # per broker: 4 latest keys, 2 streams, 1 book
    for key, ttl in ttls.items():
        if "sim" in key.lower():
            assert 0 < ttl <= 30_000, key
        else:
            assert ttl == -1, key  # a real broker's data stays as it always did
    assert json.loads(r.get("live_data:latest:quotes:SIMQ"))["last"] == 3.0
    assert r.xlen("live_data:stream:orders:sim-1") == 3


def test_a_key_first_written_on_a_retry_still_expires(redis_server):
    """Out of memory, Redis refuses XADD and HSET but carries out PEXPIRE (on no key yet): the writes sent again
    later create their keys, and the expiry must follow them."""
    r = redis.Redis(port=redis_server.port)

    async def go():
        pub = AsyncPublisher(redis_server.url, expire_after={"sim": 30})
        await pub.start()
        r.config_set("maxmemory", 1)
        try:
            pub.publish_many(_models("sim", 0)[1:])
            assert not await pub.flush(0.5)
        finally:
            r.config_set("maxmemory", 0)
        assert await pub.flush(10)
        await pub.close()

    asyncio.run(go())
    for key in ("latest:orders:sim-1", "stream:orders:sim-1", "stream:transactions:sim-1", "book:positions:sim-1"):
        assert 0 < r.pttl(f"live_data:{key}") <= 30_000, key


def test_an_expiry_must_be_a_positive_number_of_seconds():
    pub = AsyncPublisher("redis://127.0.0.1:1/0")
    for bad in (0, -1, float("nan"), float("inf"), "5", True):
        with pytest.raises(ValueError, match="expiry of 'demo' data"):
            pub.expire("demo", bad)
