"""The subscriber helpers Thor uses: typed models from channels and patterns, and the latest value."""

import asyncio
import threading
import time

import redis

from livedata_core import live_data_redis
from livedata_core.models import Order, Quote
from livedata_core.subscriber import asubscribe, latest, subscribe


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
