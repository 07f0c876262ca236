"""A long-running runner stays flat in memory: what it remembers and queues is bounded, without losing an order.

The figures over time (RSS at ~150 order events/s with Redis killed and restarted) are in
benchmarks/bench_memory.py; these tests check each bound and that it costs no order.
"""

import asyncio
import json
import tracemalloc

import redis

from livedata_core import BrokerInfo, Order, hookimpl
from livedata_core.default_plugins import demo
from livedata_core.models import to_dict
from livedata_core.redis_io.publisher import AsyncPublisher
from livedata_core.redis_io.publisher.encoding import dumps
from livedata_core.runner import Runner, load_config
from livedata_core.runner.changes import DEDUPE_SLACK, OrderEvents
from livedata_core.testing import PublishedCollector, registered_plugin, running
from livedata_core.plugin_kit.tokens import MemoryTokenStore


def order(order_id, status="filled", account="A1", **fields):
    return Order(broker="test", account_id=account, order_id=str(order_id), status=status, quantity=10.0,
                 filled_quantity=10.0 if status == "filled" else 0.0, price=1.5, **fields)  # fmt: skip


def test_an_order_state_the_broker_keeps_reporting_is_never_published_twice_however_many_states_follow():
    events = OrderEvents()
    still_open = order("old", status="open")
    events.add(still_open)
    # A busy day: more new states than the dedupe keeps room for. Every poll (here every 500 states) reports the
    # old order again, still open, as a broker's orders endpoint does for the whole day.
    for i in range(DEDUPE_SLACK + 2_000):
        state = order(i)
        if not events.seen(state):
            events.add(state)
        if i % 500 == 0:
            assert events.seen(still_open), f"the open order would be published again after {i} newer states"
    assert events.seen(still_open)
    assert len(events) <= DEDUPE_SLACK  # and what nothing reports again is forgotten: memory stays bounded


class BusyBroker:
    """An account whose window holds more order states than the dedupe's slack; every poll reports them all,
    plus one new order."""

    __name__ = "busy"
    DAY = 12_000

    def __init__(self):
        self.day = [order(i, account="B1") for i in range(self.DAY)]
        self.polls = 0

    @hookimpl
    def broker_info(self):
        return BrokerInfo(name="busy", capabilities={"fetch_orders"})

    @hookimpl
    def fetch_orders(self, ctx, account_id, since):
        self.polls += 1
        return [*self.day, order("fresh", status="open", account="B1")]


def test_a_restart_of_a_busy_account_publishes_none_of_its_earlier_states_again(redis_server):
    assert BusyBroker.DAY > DEDUPE_SLACK
    r = redis.Redis(port=redis_server.port)
    broker = BusyBroker()
    # An earlier run published the whole day (the stream holds it: stream_maxlen is above the day's count).
    with r.pipeline(transaction=False) as pipe:
        for state in broker.day:
            pipe.xadd("live_data:stream:orders:B1", {"data": json.dumps(dict(to_dict(state), received_at=1))})
        pipe.execute()
    config = load_config({"redis": {"url": redis_server.url, "stream_maxlen": 20_000},
                          "brokers": {"busy": {"accounts": ["B1"], "poll": {"orders": 0.05}}}}, env={})  # fmt: skip

    async def go(collector):
        async with running(Runner(config, token_store=MemoryTokenStore())):
            await collector.wait_for_async("orders", "B1", where=lambda o: o.order_id == "fresh")
            start = broker.polls
            while broker.polls < start + 4:  # more polls, each reporting the whole day again
                await asyncio.sleep(0.05)

    with registered_plugin(broker, "busy"), PublishedCollector(redis_server.url) as collector:
        asyncio.run(go(collector))
        published = [o.order_id for o in collector.of("orders", "B1")]
    assert published == ["fresh"]


def test_orders_queued_while_redis_is_down_cost_about_their_json_and_all_arrive(private_redis):
    orders = [order(i, status="open", symbol="AAPL", side="buy", order_type="limit") for i in range(2_000)]

    async def go():
        publisher = AsyncPublisher(private_redis.url)
        await publisher.start()
        private_redis.kill()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for o in orders:
                publisher.publish(o)
            per_order = (tracemalloc.get_traced_memory()[0] - before) / len(orders)
        finally:
            tracemalloc.stop()
        private_redis.start()
        flushed = await publisher.flush(20)
        await publisher.close()
        return per_order, flushed

    per_order, flushed = asyncio.run(go())
    payload = len(dumps(to_dict(orders[0])))
    # Its JSON, the keys it goes to, and the queue entry: about 1 KB (an encoder buffer kept whole was 8 KB).
    assert per_order < 2 * 1024, f"each queued order holds {per_order:.0f} bytes for a {payload}-byte payload"
    assert flushed
    stored = redis.Redis(port=private_redis.port).xrange("live_data:stream:orders:A1")
    assert sorted({json.loads(f[b"data"])["order_id"] for _, f in stored}, key=int) == [o.order_id for o in orders]


def test_the_demo_account_keeps_a_bounded_history_of_transactions():
    account = demo.DemoAccount(demo.DemoMarket(seed=1), order_every=1e-9)
    for _ in range(3 * (demo.TRANSACTION_HISTORY + 300)):  # each order: placed, accepted, filled (a transaction)
        account.advance()
    kept = account.transactions
    assert len(kept) == demo.TRANSACTION_HISTORY
    newest = max(int(o.order_id[1:]) for o in account.orders.values() if o.status == "filled")
    assert kept[-1].transaction_id == f"T{newest:06d}"  # the newest are the ones kept
