"""The subscriber helpers Thor uses: typed models from channels and patterns, and the latest value."""

import asyncio
import threading
import time

import pytest
import redis

from livedata_core import live_data_redis
from livedata_core.models import Order, Quote
from livedata_core.redis_io.subscriber import asubscribe, latest, subscribe


def _publish_soon(redis_server, *calls):
    def go():
        time.sleep(0.3)
        live_data_redis.configure(redis_server.url)
        for fn, args in calls:
            fn(*args)

    t = threading.Thread(target=go)
    t.start()
    return t


def test_sync_iterator_yields_models_for_channels_and_patterns(redis_server):
    t = _publish_soon(
        redis_server,
        (live_data_redis.publish_quote, ("MSFT", {"bid": 1.0})),
        (live_data_redis.publish_order, ("A1", {"order_id": "7", "status": "filled"})),
        (live_data_redis.publish_quote, ("AAPL", {"bid": 2.0, "broker": "demo"})),
    )
    got = []
    for message in subscribe("quotes:AAPL", "orders:*", url=redis_server.url):
        got.append(message)
        if len(got) == 2:
            break
    t.join()
    live_data_redis.configure()
    order, quote = got
    assert (order.kind, order.identifier, order.channel) == ("orders", "A1", "live_data:orders:A1")
    assert isinstance(order.data, Order) and order.data.status == "filled"
    assert isinstance(quote.data, Quote) and quote.data.symbol == "AAPL" and quote.data.broker == "demo"


def test_async_iterator_and_foreign_payloads(redis_server):
    async def go():
        received = []

        async def consume():
            async for message in asubscribe("quotes:*", url=redis_server.url):
                received.append(message)
                if len(received) == 2:
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.3)
        r = redis.asyncio.Redis(port=redis_server.port)
        await r.publish("live_data:quotes:XYZ", b'{"something": "else"}')  # not a Quote: handed over as a dict
        await r.publish("live_data:quotes:ABC", b'{"broker": "x", "symbol": "ABC", "last": 3}')
        await asyncio.wait_for(task, 5)
        await r.aclose()
        return received

    foreign, good = asyncio.run(go())
    assert foreign.data == {"something": "else"}
    assert isinstance(good.data, Quote) and good.data.last == 3.0


def test_latest_returns_the_last_payload_or_none(redis_server):
    live_data_redis.configure(redis_server.url)
    try:
        assert latest("quotes", "AAPL", url=redis_server.url) is None
        live_data_redis.publish_quote("AAPL", {"last": 1.0})
        live_data_redis.publish_quote("AAPL", {"last": 2.0})
        assert latest("quotes", "AAPL", url=redis_server.url).last == 2.0
        assert latest("quotes", "AAPL", url=redis_server.url, models=False)["last"] == 2.0
    finally:
        live_data_redis.configure()


def _publish_until(server, channel, payload, done, timeout=20.0):
    """Publish ``payload`` on ``channel`` every 50 ms until ``done()`` (the subscriber got one) or ``timeout``."""
    client = redis.Redis(port=server.port, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    try:
        while not done() and time.monotonic() < deadline:
            try:
                client.publish(channel, payload)
            except redis.ConnectionError:
                pass
            time.sleep(0.05)
    finally:
        client.close()


def test_subscribe_reconnects_and_resubscribes_after_a_redis_restart(private_redis):
    got, reconnects, errors = [], [], []

    def consume():
        try:
            for message in subscribe("quotes:AAPL", "orders:*", url=private_redis.url,
                                     on_reconnect=lambda: reconnects.append(1)):
                got.append(message)
                if {m.kind for m in got} == {"quotes", "orders"} and any(m.data.last == 2.0 for m in got if m.kind == "quotes"):
                    return
        except Exception as exc:  # the test asserts there is none
            errors.append(exc)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    _publish_until(private_redis, "live_data:quotes:AAPL", b'{"broker": "x", "symbol": "AAPL", "last": 1.0}', lambda: got or errors)
    private_redis.kill()
    time.sleep(0.5)  # the subscriber finds Redis gone and retries meanwhile
    private_redis.start()
    # Published after the restart: arrive on both the channel and the pattern subscription.
    _publish_until(private_redis, "live_data:quotes:AAPL", b'{"broker": "x", "symbol": "AAPL", "last": 2.0}',
                   lambda: errors or any(m.kind == "quotes" and m.data.last == 2.0 for m in got))
    _publish_until(private_redis, "live_data:orders:A1", b'{"broker": "x", "account_id": "A1", "order_id": "9", "status": "filled"}',
                   lambda: errors or not t.is_alive())
    t.join(5)
    assert not errors, errors
    assert not t.is_alive()
    assert reconnects == [1]
    assert [m.data.last for m in got if m.kind == "quotes"][-1] == 2.0
    assert got[-1].kind == "orders" and got[-1].data.order_id == "9"


def test_asubscribe_reconnects_and_resubscribes_after_a_redis_restart(private_redis):
    async def go():
        got, reconnects = [], []

        async def on_reconnect():
            reconnects.append(1)

        async def consume():
            async for message in asubscribe("quotes:*", url=private_redis.url, on_reconnect=on_reconnect):
                got.append(message.data.last)
                if 2.0 in got:
                    return

        async def publish_until(payload, done):
            client = redis.asyncio.Redis(port=private_redis.port, socket_connect_timeout=1)
            try:
                for _ in range(400):
                    if done():
                        return
                    try:
                        await client.publish("live_data:quotes:AAPL", payload)
                    except redis.ConnectionError:
                        pass
                    await asyncio.sleep(0.05)
            finally:
                await client.aclose()

        task = asyncio.create_task(consume())
        await publish_until(b'{"broker": "x", "symbol": "AAPL", "last": 1.0}', lambda: got or task.done())
        private_redis.kill()
        await asyncio.sleep(0.5)
        private_redis.start()
        await publish_until(b'{"broker": "x", "symbol": "AAPL", "last": 2.0}', task.done)
        await asyncio.wait_for(task, 5)
        return got, reconnects

    got, reconnects = asyncio.run(go())
    assert got[0] == 1.0 and got[-1] == 2.0
    assert reconnects == [1]


def test_asubscribe_can_be_cancelled_while_redis_is_down(private_redis):
    """A consumer stopping its task while the subscriber waits for Redis to come back: the task ends at once."""
    async def go():
        got = []

        async def consume():
            async for message in asubscribe("quotes:*", url=private_redis.url):
                got.append(message)

        task = asyncio.create_task(consume())
        client = redis.asyncio.Redis(port=private_redis.port)
        while not got:
            await client.publish("live_data:quotes:AAPL", b'{"broker": "x", "symbol": "AAPL", "last": 1.0}')
            await asyncio.sleep(0.05)
        await client.aclose()
        private_redis.kill()
        await asyncio.sleep(0.5)  # now in its reconnect loop
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)

    asyncio.run(go())


def test_subscribe_fails_at_once_when_the_first_connection_fails():
    """A wrong URL is an error to show, not an outage to wait out."""
    with pytest.raises(redis.ConnectionError):
        next(subscribe("quotes:*", url="redis://127.0.0.1:1/0"))
