"""The publishers against a real redis-server: the seed API, latest keys, streams, outages."""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading

import pytest
import redis

from livedata_core import live_data_redis
from livedata_core.errors import PublishError
from livedata_core.models import Balance, Order, Position, Quote, Transaction
from livedata_core.redis_io.publisher import AsyncPublisher
from livedata_core.redis_io.publisher import aio as publisher_aio
from livedata_core.redis_io.url import mask_url, parse_redis_url


@pytest.fixture
def sync_publisher(redis_url):
    live_data_redis.configure()  # forget clients built for earlier tests' servers
    yield live_data_redis
    live_data_redis.configure()


def _listen(port, channel, ready, out, count=1):
    # The seed design's consumer, verbatim apart from the port.
    r = redis.Redis(port=port)
    p = r.pubsub()
    p.subscribe(channel)
    ready.set()
    for message in p.listen():
        if message["type"] == "message":
            out.append(json.loads(message["data"]))
            if len(out) >= count:
                break
    p.close()


def test_seed_api_reaches_a_plain_redis_py_subscriber(redis_server, sync_publisher):
    ready, out = threading.Event(), []
    t = threading.Thread(target=_listen, args=(redis_server.port, "live_data:quotes:AAPL", ready, out))
    t.start()
    ready.wait(5)
    receivers = sync_publisher.publish_quote("AAPL", {"bid": 1, "ask": 2, "last": 1.5, "volume": 10})
    t.join(5)
    assert receivers == 1
    assert out[0]["symbol"] == "AAPL"
    assert (out[0]["bid"], out[0]["ask"], out[0]["last"], out[0]["volume"]) == (1, 2, 1.5, 10)


def test_the_done_when_command_works_after_pip_install(redis_url, redis_server):
    ready, out = threading.Event(), []
    t = threading.Thread(target=_listen, args=(redis_server.port, "live_data:quotes:AAPL", ready, out))
    t.start()
    ready.wait(5)
    code = (
        "from livedata_core import live_data_redis; "
        "live_data_redis.publish_quote('AAPL', {'bid': 1, 'ask': 2, 'last': 1.5, 'volume': 10})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    t.join(5)
    assert out and out[0]["last"] == 1.5


def test_latest_value_and_order_stream(redis_server, sync_publisher):
    sync_publisher.publish_position("12345", {"symbol": "BRK.B", "quantity": 3, "market_value": 1200.5})
    sync_publisher.publish_balance("12345", {"cash": 10, "buying_power": 20, "account_value": 30})
    sync_publisher.publish_order("12345", {"order_id": "1", "symbol": "AAPL", "status": "open"})
    sync_publisher.publish_transaction("12345", {"transaction_id": "t1", "type": "trade", "amount": -5})
    r = redis.Redis(port=redis_server.port)
    assert json.loads(r.get("live_data:latest:positions:12345"))["symbol"] == "BRK.B"
    assert json.loads(r.get("live_data:latest:balances:12345"))["buying_power"] == 20
    entries = r.xrange("live_data:stream:orders:12345")
    assert [json.loads(e[1][b"data"])["order_id"] for e in entries] == ["1"]
    assert r.xlen("live_data:stream:transactions:12345") == 1


def test_the_book_holds_every_open_position_and_a_balance_per_currency(redis_server, sync_publisher):
    from livedata_core.redis_io.subscriber import book

    sync_publisher.publish_position("B1", {"symbol": "AAPL", "quantity": 3})
    sync_publisher.publish_position("B1", {"symbol": "MSFT", "quantity": -5})
    sync_publisher.publish_position("B1", {"symbol": "AAPL", "quantity": 4})
    sync_publisher.publish_balance("B1", {"currency": "USD", "cash": 10})
    sync_publisher.publish_balance("B1", {"currency": "EUR", "cash": 7})
    r = redis.Redis(port=redis_server.port)
    # A plain redis-py consumer reads the whole book with one HGETALL; the latest key has only the last one.
    raw = {k.decode(): json.loads(v)["quantity"] for k, v in r.hgetall("live_data:book:positions:B1").items()}
    assert raw == {"AAPL": 4.0, "MSFT": -5.0}
    assert json.loads(r.get("live_data:latest:positions:B1"))["symbol"] == "AAPL"
    assert sorted(book("balances", "B1", url=redis_server.url)) == ["EUR", "USD"]

    sync_publisher.publish_position("B1", {"symbol": "AAPL", "quantity": 0})  # closed: leaves the book
    held = book("positions", "B1", url=redis_server.url)
    assert list(held) == ["MSFT"] and isinstance(held["MSFT"], Position) and held["MSFT"].quantity == -5.0
    assert book("positions", "NOBODY", url=redis_server.url) == {}
    with pytest.raises(ValueError, match="no book for 'orders'"):
        book("orders", "B1", url=redis_server.url)


def test_async_publisher_keeps_the_book_like_the_sync_one(redis_server):
    from livedata_core.redis_io.subscriber import book

    async def go():
        pub = AsyncPublisher(redis_server.url, prefix="ab")
        await pub.start()
        pub.publish(Position(broker="t", account_id="B2", symbol="/ESZ24", quantity=2))
        pub.publish(Position(broker="t", account_id="B2", symbol="SPY", quantity=100))
        pub.publish(Balance(broker="t", account_id="B2", currency="USD", cash=5.0))
        pub.publish(Position(broker="t", account_id="B2", symbol="SPY", quantity=0))
        assert await pub.flush(5)
        await pub.close()

    asyncio.run(go())
    held = book("positions", "B2", url=redis_server.url, prefix="ab", models=False)
    assert list(held) == ["/ESZ24"] and held["/ESZ24"]["quantity"] == 2.0
    assert book("balances", "B2", url=redis_server.url, prefix="ab")["USD"].cash == 5.0


def test_latest_and_streams_can_be_turned_off(redis_server, sync_publisher):
    sync_publisher.configure(redis_server.url, prefix="p2", latest=False, streams=False)
    sync_publisher.publish_order("1", {"order_id": "1"})
    sync_publisher.publish_position("1", {"symbol": "AAPL", "quantity": 1})
    r = redis.Redis(port=redis_server.port)
    assert r.keys("*") == []


def test_bad_payload_names_the_field(sync_publisher):
    with pytest.raises(ValueError, match="bid"):
        sync_publisher.publish_quote("AAPL", {"bid": "one dollar"})
    with pytest.raises(ValueError, match="symbol"):
        sync_publisher.publish_quote("AAPL", Quote(broker="x", symbol="MSFT"))


def test_unreachable_redis_error_masks_the_password(monkeypatch):
    live_data_redis.configure("redis://user:hunter2@127.0.0.1:1/0")
    try:
        with pytest.raises(PublishError) as info:
            live_data_redis.publish_quote("AAPL", {"bid": 1})
    finally:
        live_data_redis.configure()
    assert "hunter2" not in str(info.value)
    assert "***" in str(info.value)


def test_urls_are_masked_everywhere():
    url = "rediss://default:s3cret@cache.example:6380/2"
    target = parse_redis_url(url)
    assert (target.host, target.port, target.db, target.tls, target.password) == ("cache.example", 6380, 2, True, "s3cret")
    assert "s3cret" not in repr(target) and "s3cret" not in mask_url(url)
    assert "s3cret" not in repr(AsyncPublisher(url))


@pytest.mark.parametrize("url", ["redis://:s3cr/et@host:6379/0", "redis//:s3cret@host:6379/0",
                                 "redis:/:s3cret@host:6379", "rediss://u:s3c@ret@host/x"])  # fmt: skip
def test_bad_urls_are_refused_without_quoting_the_password(url):
    from livedata_core.errors import ConfigError
    from livedata_core.runner import load_config

    with pytest.raises(ConfigError) as error:
        load_config({"redis": {"url": url}})
    assert "s3c" not in str(error.value) and "et@" not in str(error.value)


def test_a_bad_db_in_a_unix_socket_url_is_a_config_error():
    from livedata_core.errors import ConfigError

    with pytest.raises(ConfigError, match="db='x' is not a number"):
        parse_redis_url("unix:///tmp/redis.sock?db=x")


def test_password_protected_redis(private_redis_with_password):
    server = private_redis_with_password

    async def go():
        pub = AsyncPublisher(server.url)
        await pub.start()
        pub.publish(Quote(broker="t", symbol="AAPL", bid=1.0))
        await pub.flush(5)
        await pub.close()

    asyncio.run(go())
    r = redis.Redis(port=server.port, password="pw")
    assert json.loads(r.get("live_data:latest:quotes:AAPL"))["bid"] == 1.0


@pytest.fixture
def private_redis_with_password():
    from livedata_core.redis_io.server import RedisServer

    server = RedisServer(password="pw").start()
    yield server
    server.close()


def _order(i):
    return Order(broker="t", account_id="A1", order_id=str(i), status="open")


def test_async_publisher_conflates_quotes_but_keeps_every_order_in_order(redis_server):
    async def go():
        pub = AsyncPublisher(redis_server.url)
        await pub.start()
        r = redis.asyncio.Redis(port=redis_server.port)
        ps = r.pubsub()
        await ps.psubscribe("live_data:*")
        await asyncio.sleep(0.05)
        for i in range(1000):
            pub.publish(Quote(broker="t", symbol="AAPL", last=float(i)))
            pub.publish(_order(i))
        await pub.flush(5)
        got_quotes, got_orders = [], []
        while len(got_orders) < 1000:
            m = await ps.get_message(timeout=2)
            if m is None:
                break
            if m["type"] != "pmessage":
                continue
            data = json.loads(m["data"])
            (got_quotes if m["channel"].endswith(b"AAPL") else got_orders).append(data)
        await pub.close()
        await r.aclose()
        return got_quotes, got_orders, pub.stats

    quotes, orders, stats = asyncio.run(go())
    assert [o["order_id"] for o in orders] == [str(i) for i in range(1000)]
    assert quotes[-1]["last"] == 999.0  # conflated to the latest, never stale
    assert len(quotes) + stats.conflated == 1000


def test_orders_survive_a_redis_outage(private_redis):
    """Kill redis-server, publish, restart it: every order arrives, in order."""

    async def go():
        pub = AsyncPublisher(private_redis.url)
        await pub.start()
        pub.publish(_order(0))
        await pub.flush(5)
        private_redis.kill()
        for i in range(1, 50):
            pub.publish(_order(i))
            pub.publish(Quote(broker="t", symbol="AAPL", last=float(i)))
        await asyncio.sleep(0.3)
        assert not pub.stats.connected
        assert pub.pending >= 49
        private_redis.start()
        assert await pub.flush(15)
        await pub.close()
        return pub.stats

    stats = asyncio.run(go())
    r = redis.Redis(port=private_redis.port)
    ids = [json.loads(e[1][b"data"])["order_id"] for e in r.xrange("live_data:stream:orders:A1")]
    assert ids == [str(i) for i in range(1, 50)]  # the restarted server kept nothing from before
    assert json.loads(r.get("live_data:latest:quotes:AAPL"))["last"] == 49.0
    assert stats.reconnects >= 1


def test_close_reports_what_could_not_be_published(private_redis, caplog):
    async def go():
        pub = AsyncPublisher(private_redis.url)
        await pub.start()
        private_redis.kill()
        pub.publish(Transaction(broker="t", account_id="A1", transaction_id="T9", type="trade"))
        return await pub.close(timeout=0.5)

    assert asyncio.run(go()) == 1
    assert "T9" in caplog.text  # logged in full, not silently dropped


def test_a_server_that_wants_a_password_fails_at_start_not_on_every_event(private_redis_with_password):
    async def go():
        await AsyncPublisher(f"redis://127.0.0.1:{private_redis_with_password.port}/0").start()

    with pytest.raises(PublishError, match="NOAUTH|Authentication required"):
        asyncio.run(go())


def test_start_fails_clearly_when_redis_is_down():
    async def go():
        await AsyncPublisher("redis://:pw@127.0.0.1:1/0").start()

    with pytest.raises(PublishError, match="cannot connect") as info:
        asyncio.run(go())
    assert "pw@" not in str(info.value)


def test_batches_in_flight_when_redis_dies_are_sent_again_in_order(private_redis):
    """Redis stops answering with several pipelines unanswered, then dies: every order arrives, in order."""

    async def go():
        pub = AsyncPublisher(private_redis.url, max_batch=10)
        await pub.start()
        os.kill(private_redis.proc.pid, signal.SIGSTOP)
        for i in range(200):
            pub.publish(_order(i))
            if i % 7 == 0:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        in_flight = len(pub._in_flight)
        private_redis.kill()  # SIGKILL while stopped: nothing sent was executed, nothing was answered
        await asyncio.sleep(0.3)
        private_redis.start()
        assert await pub.flush(15)
        await pub.close()
        return in_flight

    in_flight = asyncio.run(go())
    assert in_flight >= 1  # the case under test: account events sent and unanswered when Redis died
    r = redis.Redis(port=private_redis.port)
    ids = [int(json.loads(e[1][b"data"])["order_id"]) for e in r.xrange("live_data:stream:orders:A1")]
    assert sorted(set(ids)) == list(range(200))
    assert ids == sorted(ids)


def test_a_redis_that_stops_answering_is_given_up_after_the_reply_timeout(private_redis, monkeypatch):
    """Redis stops answering (SIGSTOP) with orders unanswered: after REPLY_TIMEOUT the publisher drops the connection
    and says why; once Redis answers again every order is in its stream, in order (sent again: at least once)."""
    monkeypatch.setattr(publisher_aio, "REPLY_TIMEOUT", 0.5)

    async def go():
        pub = AsyncPublisher(private_redis.url)
        await pub.start()
        os.kill(private_redis.proc.pid, signal.SIGSTOP)
        try:
            for i in range(20):
                pub.publish(_order(i))
            await asyncio.sleep(1.6)
            seen = (pub.stats.last_error, pub.stats.connected, pub.stats.reconnects)
        finally:
            os.kill(private_redis.proc.pid, signal.SIGCONT)
        assert await pub.flush(15)
        await pub.close()
        return seen

    last_error, connected, reconnects = asyncio.run(go())
    assert "Redis did not answer within 0.5s" in last_error and not connected and reconnects == 1
    r = redis.Redis(port=private_redis.port)
    ids = [int(json.loads(e[1][b"data"])["order_id"]) for e in r.xrange("live_data:stream:orders:A1")]
    assert sorted(set(ids)) == list(range(20))
    first_seen = list(dict.fromkeys(ids))
    assert first_seen == list(range(20))


def test_a_big_batch_on_a_slow_link_is_not_given_up_while_redis_answers_it(redis_server, monkeypatch):
    """A batch that takes longer than REPLY_TIMEOUT to cross a slow link is answered as it arrives: the publisher
    waits for it (a connection is given up after REPLY_TIMEOUT of silence, not REPLY_TIMEOUT after sending), so each
    order is written once, not sent again and again on new connections."""
    monkeypatch.setattr(publisher_aio, "REPLY_TIMEOUT", 0.5)
    rate = 250_000  # bytes a second towards Redis: 40 orders of 20 KB take ~3.2 s; replies come back freely

    async def pipe(reader, writer, throttled: bool) -> None:
        try:
            while data := await reader.read(8192):
                writer.write(data)
                await writer.drain()
                if throttled:
                    await asyncio.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            writer.close()

    async def link(client_reader, client_writer) -> None:
        redis_reader, redis_writer = await asyncio.open_connection("127.0.0.1", redis_server.port)
        await asyncio.gather(pipe(client_reader, redis_writer, True), pipe(redis_reader, client_writer, False))

    async def go():
        proxy = await asyncio.start_server(link, "127.0.0.1", 0)
        port = proxy.sockets[0].getsockname()[1]
        pub = AsyncPublisher(f"redis://127.0.0.1:{port}/0", prefix="slow", latest=False)
        await pub.start()
        for i in range(40):
            pub.publish(Order(broker="t", account_id="A1", order_id=str(i), status="open", extra={"pad": "x" * 20_000}))
        flushed = await pub.flush(30)
        stats = (pub.stats.reconnects, pub.stats.last_error)
        await pub.close()
        proxy.close()
        return flushed, stats

    flushed, (reconnects, last_error) = asyncio.run(go())
    assert flushed and reconnects == 0 and last_error is None, (reconnects, last_error)
    r = redis.Redis(port=redis_server.port)
    ids = [int(json.loads(e[1][b"data"])["order_id"]) for e in r.xrange("slow:live_data:stream:orders:A1")]
    assert ids == list(range(40))


def test_redis_saying_not_now_keeps_orders_until_it_can(redis_server):
    """NOREPLICAS (like LOADING or READONLY) refuses writes: only the refused commands are sent again, after a
    pause, in order; subscribers, whose PUBLISH went through, get each order once."""
    r = redis.Redis(port=redis_server.port)

    async def go():
        pub = AsyncPublisher(redis_server.url)
        await pub.start()
        listener = redis.asyncio.Redis(port=redis_server.port).pubsub()
        await listener.subscribe("live_data:orders:A1")
        r.config_set("min-replicas-to-write", 1)
        try:
            for i in range(3):
                pub.publish(_order(i))
            assert not await pub.flush(1.5)  # not confirmed while Redis refuses (several retries happen)
            assert r.xlen("live_data:stream:orders:A1") == 0
        finally:
            r.config_set("min-replicas-to-write", 0)
        assert await pub.flush(10)
        pub.publish(_order(3))
        assert await pub.flush(5)
        received = []
        deadline = asyncio.get_running_loop().time() + 0.5
        while asyncio.get_running_loop().time() < deadline:
            m = await listener.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if m is not None:
                received.append(json.loads(m["data"])["order_id"])
        await listener.aclose()
        return await pub.close(), received, pub.stats

    lost, received, stats = asyncio.run(go())
    assert lost == 0
    assert received == ["0", "1", "2", "3"]  # once each, although the stream writes were retried
    ids = [json.loads(e[1][b"data"])["order_id"] for e in r.xrange("live_data:stream:orders:A1")]
    assert ids == ["0", "1", "2", "3"]
    assert json.loads(r.get("live_data:latest:orders:A1"))["order_id"] == "3"
    assert stats.published == 4 and stats.reconnects == 0


@contextlib.asynccontextmanager
async def quotes_flowing(pub: AsyncPublisher, symbols: int):
    """Republish a quote for each of ``symbols`` symbols, over and over, for the length of the block."""
    stop = asyncio.Event()

    async def flow():
        i = 0
        while not stop.is_set():
            for n in range(symbols):
                pub.publish(Quote(broker="t", symbol=f"S{n}", last=float(i)))
            i += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(flow())
    await asyncio.sleep(0.05)
    try:
        yield
    finally:
        stop.set()
        await task


def test_flush_returns_once_what_was_published_before_it_is_confirmed_while_quotes_keep_coming(redis_server):
    r = redis.Redis(port=redis_server.port)

    async def go():
        pub = AsyncPublisher(redis_server.url, prefix="fl")
        await pub.start()
        async with quotes_flowing(pub, 50):
            pub.publish(_order(1))
            started = asyncio.get_running_loop().time()
            flushed = await pub.flush(3)
            took = asyncio.get_running_loop().time() - started
            in_redis = r.xlen("fl:live_data:stream:orders:A1")
        await pub.close()
        return flushed, took, in_redis

    flushed, took, in_redis = asyncio.run(go())
    assert flushed and took < 1.0  # it used to wait for a moment with nothing queued: here, its timeout
    assert in_redis == 1


def test_flush_waits_for_an_unanswered_order_even_when_a_later_batch_had_nothing_to_send(redis_server):
    r = redis.Redis(port=redis_server.port)

    async def go():
        pub = AsyncPublisher(redis_server.url, prefix="fu")
        await pub.start()
        r.execute_command("CLIENT", "PAUSE", 700, "ALL")  # Redis takes the order but answers later
        pub.publish(_order(1))
        await asyncio.sleep(0.05)
        pub.publish(Quote(broker="t", symbol="BAD", extra={"raw": b"\x00"}))  # refused when encoded: an empty batch
        early = await pub.flush(0.3)
        later = await pub.flush(5)
        await pub.close()
        return early, later

    early, later = asyncio.run(go())
    assert (early, later) == (False, True)
    assert r.xlen("fu:live_data:stream:orders:A1") == 1


def test_flush_returns_under_a_steady_flow_of_more_symbols_than_one_batch_holds(redis_server):
    async def go():
        pub = AsyncPublisher(redis_server.url, prefix="fm", max_batch=100)
        await pub.start()
        async with quotes_flowing(pub, 500):
            pub.publish(_order(1))
            flushed = await pub.flush(3)
        await pub.close()
        return flushed

    assert asyncio.run(go())


def test_a_refused_book_write_is_replayed_before_the_later_write_of_the_same_position(redis_server):
    """Out of memory, Redis refuses HSET but not HDEL: the retry must not put a closed position back."""
    from livedata_core.redis_io.subscriber import book

    r = redis.Redis(port=redis_server.port)

    async def go():
        pub = AsyncPublisher(redis_server.url, prefix="oom")
        await pub.start()
        r.config_set("maxmemory", 1)
        try:
            pub.publish(Position(broker="t", account_id="B9", symbol="AAPL", quantity=10))
            pub.publish(Position(broker="t", account_id="B9", symbol="AAPL", quantity=0))  # closed, same batch
            assert not await pub.flush(0.5)
        finally:
            r.config_set("maxmemory", 0)
        assert await pub.flush(10)
        await pub.close()

    asyncio.run(go())
    assert book("positions", "B9", url=redis_server.url, prefix="oom") == {}
    assert json.loads(r.get("oom:live_data:latest:positions:B9"))["quantity"] == 0.0


def test_batches_failing_one_after_another_keep_every_order(redis_server):
    r = redis.Redis(port=redis_server.port)

    async def go():
        pub = AsyncPublisher(redis_server.url, prefix="ro")
        await pub.start()
        r.execute_command("REPLICAOF", "127.0.0.1", "1")  # every write is refused with READONLY
        try:
            pub.publish(_order(1))
            for i in range(200):  # quote batches sent while the order's retry waits, failing too
                pub.publish(Quote(broker="t", symbol=f"Q{i % 20}", last=float(i)))
                await asyncio.sleep(0.002)
        finally:
            r.execute_command("REPLICAOF", "NO", "ONE")
        flushed = await pub.flush(10)
        lost = await pub.close()
        return flushed, lost

    flushed, lost = asyncio.run(go())
    assert flushed and lost == 0
    assert r.xlen("ro:live_data:stream:orders:A1") == 1
    assert json.loads(r.get("ro:live_data:latest:orders:A1"))["order_id"] == "1"


def test_an_event_redis_refuses_for_good_is_counted_as_refused_not_published(redis_server, caplog):
    r = redis.Redis(port=redis_server.port)
    r.set("wt:live_data:stream:orders:A1", "a foreign key of the wrong type")

    async def go():
        pub = AsyncPublisher(redis_server.url, prefix="wt")
        await pub.start()
        pub.publish(_order(1))  # PUBLISH goes through, XADD meets WRONGTYPE
        pub.publish(Order(broker="t", account_id="A2", order_id="2", status="open"))
        assert await pub.flush(5)
        await pub.close()
        return pub.stats

    stats = asyncio.run(go())
    assert (stats.refused, stats.published) == (1, 1)
    assert "Redis refused orders on wt:live_data:orders:A1 (WRONGTYPE" in caplog.text and '"order_id":"1"' in caplog.text


def test_a_payload_that_cannot_be_encoded_is_refused_and_publishing_goes_on(redis_server, caplog):
    async def go():
        pub = AsyncPublisher(redis_server.url)
        await pub.start()
        pub.publish(_order(1))
        with pytest.raises(TypeError):
            pub.publish(Order(broker="t", account_id="A1", order_id="bad", extra={"raw": b"\x01"}))
        with pytest.raises(TypeError, match="not a livedata model"):
            pub.publish({"order_id": "x"})
        pub.publish(Quote(broker="t", symbol="BAD", extra={"raw": b"\x01"}))  # quotes are encoded in the writer
        pub.publish(Quote(broker="t", symbol="AAPL", last=1.0))
        pub.publish(_order(2))
        assert await pub.flush(5)
        return await pub.close(), pub.stats

    lost, stats = asyncio.run(go())
    r = redis.Redis(port=redis_server.port)
    assert [json.loads(e[1][b"data"])["order_id"] for e in r.xrange("live_data:stream:orders:A1")] == ["1", "2"]
    assert r.get("live_data:latest:quotes:AAPL") and not r.get("live_data:latest:quotes:BAD")
    assert lost == 0 and stats.skipped == 1
    assert "cannot be encoded" in caplog.text


def test_publish_after_close_is_logged_not_silent(redis_server, caplog):
    async def go():
        pub = AsyncPublisher(redis_server.url)
        await pub.start()
        await pub.close()
        pub.publish(_order(77))

    asyncio.run(go())
    assert "published after the publisher closed" in caplog.text and '"order_id":"77"' in caplog.text


def test_the_async_publisher_refuses_bad_fields_at_once_and_publishing_goes_on(redis_server):
    import math

    async def go():
        pub = AsyncPublisher(redis_server.url)
        await pub.start()
        pub.publish(_order(1))
        with pytest.raises(ValueError, match="status: 'bogus' is not an order status"):
            pub.publish(Order(broker="t", account_id="A1", order_id="bad", status="bogus"))
        with pytest.raises(ValueError, match="quantity: nan is not a finite number"):
            pub.publish(Position(broker="t", account_id="A1", symbol="AAPL", quantity=math.nan))
        with pytest.raises(ValueError, match="bid: inf is not a finite number"):
            pub.publish(Quote(broker="t", symbol="AAPL", bid=math.inf))
        with pytest.raises(ValueError, match="last: must be a number, was str"):
            pub.publish(Quote(broker="t", symbol="AAPL", last="1.5"))
        pub.publish(Quote(broker="t", symbol="MSFT", bid=1, ask=1.5))
        pub.publish(_order(2))
        assert await pub.flush(5)
        return await pub.close(), pub.stats

    lost, stats = asyncio.run(go())
    r = redis.Redis(port=redis_server.port)
    assert [json.loads(e[1][b"data"])["order_id"] for e in r.xrange("live_data:stream:orders:A1")] == ["1", "2"]
    assert r.get("live_data:latest:quotes:MSFT") and not r.get("live_data:latest:quotes:AAPL")
    assert not r.exists("live_data:book:positions:A1")
    assert lost == 0 and stats.published == 3
