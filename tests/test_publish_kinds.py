"""Publishing the market-data kinds beyond quotes (issue 15) to a real redis-server: option quotes and order books
conflated like quotes under their latest keys, bars in order on their channel, latest key and capped stream."""

import asyncio
import json

import pytest
import redis

from livedata_core import live_data_redis
from livedata_core.models import Bar, Depth, DepthLevel, OptionQuote, Quote
from livedata_core.redis_io.publisher import AsyncPublisher, make_publisher
from livedata_core.redis_io.publisher.cluster import ClusterPublisher
from livedata_core.redis_io.subscriber import latest


def _bar(symbol, minute, **over):
    return Bar(broker="t", symbol=symbol, interval=60, start=1_700_000_000_000 + 60_000 * minute, open=1.0, high=2.0,
               low=0.5, close=1.5 + minute, volume=10, seq=minute, **over)


def _book(symbol, price):
    return Depth(broker="t", symbol=symbol, bids=[DepthLevel(price=price, size=100, count=2)],
                 asks=[DepthLevel(price=price + 0.01, size=200, count=1)], book="NASDAQ")


def _option(price):
    return OptionQuote(broker="t", symbol="AAPL  261218C00200000", bid=price, ask=price + 0.1, delta=0.5,
                       strike=200.0, expiration="2026-12-18", put_call="call", multiplier=100.0, underlying="AAPL")


async def _run(url, models, **options):
    pub = AsyncPublisher(url, **options)
    await pub.start()
    for model in models:
        pub.publish(model)
    assert await pub.flush(5)
    stats = pub.stats
    await pub.close()
    return stats


def test_bars_go_to_their_channel_latest_key_and_capped_stream_in_order(redis_server):
    r = redis.Redis(port=redis_server.port)
    p = r.pubsub(ignore_subscribe_messages=True)
    p.subscribe("live_data:bars:/ES")
    assert p.get_message(timeout=1) is None  # the subscription is confirmed (and the confirmation skipped)
    bars = [_bar("/ES", m) for m in range(30)]
    stats = asyncio.run(_run(redis_server.url, bars, bars_maxlen=5))
    received = []
    while len(received) < 30 and (message := p.get_message(timeout=2)) is not None:
        received.append(json.loads(message["data"]))
    assert [b["start"] for b in received] == [b.start for b in bars]  # every bar once, in order
    assert stats.published == 30 and stats.conflated == 0
    assert json.loads(r.get("live_data:latest:bars:/ES"))["close"] == 30.5
    starts = [json.loads(f[b"data"])["start"] for _, f in r.xrange("live_data:stream:bars:/ES")]
    assert starts == sorted(starts) and starts[-1] == bars[-1].start
    assert 5 <= len(starts) < 30  # capped (approximately: MAXLEN ~ trims whole nodes)
    assert latest("bars", "/ES", url=redis_server.url) == bars[-1]


def test_books_and_option_quotes_are_conflated_per_symbol_and_kept_as_latest(redis_server):
    models = [_book("AAPL", 100 + i) for i in range(50)] + [_book("MSFT", 300.0)] + [_option(1.0 + i) for i in range(5)]
    models.append(Quote(broker="t", symbol="AAPL", bid=1.0))  # the quote of AAPL is not its book
    stats = asyncio.run(_run(redis_server.url, models))
    assert stats.published + stats.conflated == len(models)
    book = latest("depth", "AAPL", url=redis_server.url)
    assert type(book) is Depth and book.bids[0] == DepthLevel(price=149.0, size=100.0, count=2)
    assert latest("depth", "MSFT", url=redis_server.url).asks[0].price == 300.01
    option = latest("quotes", "AAPL  261218C00200000", url=redis_server.url)
    assert type(option) is OptionQuote and option.bid == 5.0 and option.put_call == "call"
    assert type(latest("quotes", "AAPL", url=redis_server.url)) is Quote


def test_a_bad_book_or_option_is_refused_at_publish_naming_the_field(redis_server):
    async def go():
        pub = AsyncPublisher(redis_server.url)
        with pytest.raises(ValueError, match=r"bids\[0\].size: nan"):
            pub.publish(Depth(broker="t", symbol="A", bids=[DepthLevel(price=1.0, size=float("nan"))]))
        with pytest.raises(ValueError, match="put_call: 'P' is not"):
            pub.publish(OptionQuote(broker="t", symbol="A", put_call="P"))
        with pytest.raises(ValueError, match="backfilled: must be true or false"):
            pub.publish(_bar("/ES", 0, backfilled="yes"))
        assert pub.pending == 0

    asyncio.run(go())


def test_the_script_api_publishes_bars_and_books(redis_server):
    live_data_redis.configure(redis_server.url)
    try:
        live_data_redis.publish_bar("/ES", {"interval": 60, "start": 0, "open": 1, "high": 1, "low": 1, "close": 1})
        live_data_redis.publish_depth("AAPL", {"bids": [{"price": 1, "size": 2}], "asks": []})
        live_data_redis.publish_quote("AAPL  261218P00200000", {"strike": 200, "put_call": "put", "delta": -0.4})
    finally:
        live_data_redis.configure()
    r = redis.Redis(port=redis_server.port)
    assert r.xlen("live_data:stream:bars:/ES") == 1
    assert json.loads(r.get("live_data:latest:depth:AAPL"))["bids"] == [{"price": 1, "size": 2, "count": None}]
    assert json.loads(r.get("live_data:latest:quotes:AAPL  261218P00200000"))["delta"] == -0.4


def test_the_cluster_publisher_writes_the_new_kinds_to_their_keys(redis_cluster):
    async def go():
        publisher = make_publisher(redis_cluster.topology())
        assert isinstance(publisher, ClusterPublisher)
        await publisher.start()
        for m in range(3):
            publisher.publish(_bar("/NQ", m))
        publisher.publish(_book("QQQ", 400.0))
        publisher.publish(_option(2.0))
        assert await publisher.flush(20)
        await publisher.close()

    asyncio.run(go())
    url = redis_cluster.topology()
    assert latest("depth", "QQQ", url=url).bids[0].price == 400.0
    assert latest("quotes", "AAPL  261218C00200000", url=url).delta == 0.5
    assert latest("bars", "/NQ", url=url).start == _bar("/NQ", 2).start
    from redis.cluster import RedisCluster

    client = RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    try:
        assert client.xlen("live_data:stream:bars:/NQ") == 3
    finally:
        client.close()
