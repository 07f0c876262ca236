"""Bad payloads get a clear error (the sync API) or a logged, counted skip (a plugin's stream), never a silent
change: order statuses outside the closed set, NaN and infinities, wrong types, unknown keys (issue 11, items 1-3)."""

import asyncio
import json
import logging
import math

import pytest
import redis

from livedata_core import BrokerInfo, BrokerStream, HEARTBEAT, Order, Quote, Transaction, hookimpl, live_data_redis
from livedata_core.errors import InvalidIdentifier
from livedata_core.runner import Runner, load_config
from livedata_core.testing import registered_plugin, running
from livedata_core.plugin_kit.tokens import MemoryTokenStore

FAST = {"initial": 0.05, "max": 0.2, "login_retry": 0.5}


@pytest.fixture
def sync_publisher(redis_url):
    live_data_redis.configure()  # forget clients built for earlier tests' servers
    yield live_data_redis
    live_data_redis.configure()


def _nothing_stored(redis_server):
    return redis.Redis(port=redis_server.port).keys("*") == []


# -- the sync API ---------------------------------------------------------------------------------------------


def test_an_order_status_outside_the_closed_set_is_refused_naming_the_allowed_values(redis_server, sync_publisher):
    with pytest.raises(ValueError) as info:
        sync_publisher.publish_order("A1", {"order_id": "1", "status": "bogus"})
    message = str(info.value)
    assert "status" in message and "'bogus'" in message
    assert "partially_filled" in message and "pending_cancel" in message  # the allowed values are listed
    with pytest.raises(ValueError, match="status"):
        sync_publisher.publish_order("A1", Order(broker="x", account_id="A1", order_id="1", status="Filled"))
    assert _nothing_stored(redis_server)
    sync_publisher.publish_order("A1", {"order_id": "1", "status": "filled"})  # a status of the set goes through
    assert json.loads(redis.Redis(port=redis_server.port).get("live_data:latest:orders:A1"))["status"] == "filled"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities_are_refused_not_published_as_null(redis_server, sync_publisher, value):
    with pytest.raises(ValueError, match=r"bid: .*finite"):
        sync_publisher.publish_quote("AAPL", {"bid": value, "ask": 2.0})
    with pytest.raises(ValueError, match=r"quantity: .*finite"):
        sync_publisher.publish_order("A1", {"order_id": "1", "status": "open", "quantity": value})
    with pytest.raises(ValueError, match=r"last: .*finite"):
        sync_publisher.publish_quote("AAPL", Quote(broker="x", symbol="AAPL", last=value))
    with pytest.raises(ValueError, match=r"extra\.fx: .*finite"):
        sync_publisher.publish_transaction("A1", {"transaction_id": "T1", "type": "fee", "extra": {"fx": value}})
    assert _nothing_stored(redis_server)


@pytest.mark.parametrize(
    ("value", "said"),
    [("1.5", "str"), (True, "bool"), ([1.5], "list"), ({"v": 1}, "dict")],
)
def test_a_value_of_the_wrong_type_is_refused_not_converted(redis_server, sync_publisher, value, said):
    with pytest.raises(ValueError) as info:
        sync_publisher.publish_quote("AAPL", {"bid": value})
    assert "bid" in str(info.value) and said in str(info.value) and "number" in str(info.value)
    assert _nothing_stored(redis_server)


def test_whole_numbers_are_fine_where_a_number_is_expected(redis_server, sync_publisher):
    sync_publisher.publish_quote("AAPL", {"bid": 1, "ask": 2, "last": 1.5, "volume": 10})
    stored = json.loads(redis.Redis(port=redis_server.port).get("live_data:latest:quotes:AAPL"))
    assert (stored["bid"], stored["ask"], stored["last"], stored["volume"]) == (1, 2, 1.5, 10)


def test_a_timestamp_must_be_whole_milliseconds(sync_publisher):
    with pytest.raises(ValueError, match=r"timestamp: .*whole number"):
        sync_publisher.publish_quote("AAPL", {"bid": 1.0, "timestamp": 1732430000123.5})


def test_unknown_keys_are_refused_naming_them_and_the_fields_there_are(redis_server, sync_publisher):
    with pytest.raises(ValueError) as info:
        sync_publisher.publish_quote("AAPL", {"lst": 3})
    message = str(info.value)
    assert "unknown key(s): lst" in message and "last" in message and "extra" in message
    assert _nothing_stored(redis_server)
    # broker-specific values have their place: extra
    sync_publisher.publish_quote("AAPL", {"last": 3, "extra": {"lst": 3}})
    stored = json.loads(redis.Redis(port=redis_server.port).get("live_data:latest:quotes:AAPL"))
    assert stored["last"] == 3 and stored["extra"] == {"lst": 3}


def test_a_missing_required_field_is_named(sync_publisher):
    with pytest.raises(ValueError, match="order_id: required field missing"):
        sync_publisher.publish_order("A1", {"status": "open"})


@pytest.mark.parametrize("identifier", [["AAPL"], None, 7, b"AAPL"])
def test_an_identifier_that_is_not_a_string_is_an_invalid_identifier(sync_publisher, identifier):
    with pytest.raises(InvalidIdentifier, match="must be a string"):
        sync_publisher.publish_quote(identifier, {"bid": 1.0})
    with pytest.raises(InvalidIdentifier, match="must be a string"):
        sync_publisher.publish_order(identifier, {"order_id": "1"})


def test_every_problem_of_a_payload_is_named_at_once(sync_publisher):
    with pytest.raises(ValueError) as info:
        sync_publisher.publish_order("A1", {"order_id": 5, "status": "bogus", "price": math.nan, "qty": 1})
    message = str(info.value)
    for part in ("order_id", "status", "price", "qty"):
        assert part in message


# -- a plugin's stream and polls: counted skips, the payload logged ----------------------------------------------


class BadDataBroker:
    """Streams a frame with good and bad items, then quotes with a NaN bid forever; polls one bad order."""

    def __init__(self):
        self.polls = 0

    @hookimpl
    def broker_info(self):
        return BrokerInfo(name="baddata", capabilities={"stream", "fetch_orders"})

    @hookimpl
    def stream(self, ctx):
        return BadDataStream()

    @hookimpl
    def fetch_orders(self, ctx, account_id, since):
        self.polls += 1
        return [Order(broker="baddata", account_id=account_id, order_id="P1", status="bogus-polled")]


class BadDataStream(BrokerStream):
    heartbeat_timeout = None

    async def connect(self):
        pass

    async def subscribe(self, symbols):
        pass

    async def events(self):
        yield [
            Order(broker="baddata", account_id="A1", order_id="1", status="open"),
            Order(broker="baddata", account_id="A1", order_id="2", status="bogus"),
            Order(broker="baddata", account_id="A1", order_id="3", status="open", quantity=math.inf),
            Transaction(broker="baddata", account_id="A1", transaction_id="T1", type="fee", amount=math.nan),
            Order(broker="baddata", account_id="A1", order_id="4", status="filled"),
            Quote(broker="baddata", symbol="AAPL", bid=math.nan, ask=1.0),
            Quote(broker="baddata", symbol="MSFT", bid=1.0, ask=1.1),
        ]
        for _ in range(300):
            yield [Quote(broker="baddata", symbol="AAPL", bid=-math.inf, ask=1.0)]
            await asyncio.sleep(0)
        while True:
            await asyncio.sleep(0.05)
            yield HEARTBEAT


def _bad_data_config(url):
    table = {"symbols": ["AAPL", "MSFT"], "accounts": ["A1"], "poll": {"orders": 0.05}}
    return load_config({"redis": {"url": url}, "backoff": FAST, "status_interval": 0.1, "brokers": {"baddata": table}})


def test_bad_items_from_a_plugin_are_counted_skips_with_the_payload_logged(redis_server, caplog):
    caplog.set_level(logging.INFO)
    plugin = BadDataBroker()

    async def go():
        with registered_plugin(plugin):
            async with running(Runner(_bad_data_config(redis_server.url), token_store=MemoryTokenStore())) as runner:
                r = redis.asyncio.Redis(port=redis_server.port)
                for _ in range(200):
                    done = plugin.polls >= 10 and runner.status()["brokers"]["baddata"]["skipped"].get("quote refused", 0) >= 301
                    if done:
                        break
                    await asyncio.sleep(0.05)
                await r.aclose()
                await runner.publisher.flush(5)
                return runner.status()["brokers"]["baddata"]

    status = asyncio.run(go())
    r = redis.Redis(port=redis_server.port)
    ids = [json.loads(e[1][b"data"])["order_id"] for e in r.xrange("live_data:stream:orders:A1")]
    assert ids == ["1", "4"]  # the good ones of the frame, in order
    assert r.get("live_data:latest:quotes:MSFT") and not r.get("live_data:latest:quotes:AAPL")
    assert not r.exists("live_data:stream:transactions:A1")
    # Counted, shown in status, the broker kept streaming.
    assert status["state"] == "streaming" and status["reconnects"] == 0
    assert status["skipped"]["orders refused"] == 3  # two streamed, one polled (once, however often it is polled)
    assert status["skipped"]["transactions refused"] == 1
    assert status["skipped"]["quote refused"] == 301
    # Every refused order and transaction is logged with its payload and what is wrong...
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    text = "\n".join(r.getMessage() for r in errors)
    assert "order_id='2'" in text and "'bogus'" in text and "partially_filled" in text
    assert "order_id='3'" in text and "quantity: inf is not a finite number" in text
    assert "transaction_id='T1'" in text and "amount: nan is not a finite number" in text
    # ...a bad order the broker reports on every poll once, and a recurring bad quote not at error level for ever.
    assert sum("order_id='P1'" in r.getMessage() for r in errors) == 1
    assert sum("quote refused" in r.getMessage() for r in errors) <= 5
