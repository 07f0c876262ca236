"""Account activity end to end: every distinct message of one order survives the parser's repeat filter and the
runner's once-per-state dedupe and reaches Redis; unreadable messages get distinct ids; repeats are dropped.

Real websockets against :class:`FakeStreamer`, the real core dedupe and a real redis-server."""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as aioredis

from livedata_core.runner import Runner, load_config
from livedata_core.runner.changes import OrderEvents
from livedata_core.plugin_kit.streaming import HEARTBEAT, StreamStats
from livedata_core.plugin_kit.tokens import MemoryTokenStore
from livedata_tos import plugin
from livedata_tos.activity import ActivityParser
from livedata_tos.stream import TosStream
from livedata_tos.testing import FakeSchwabClient, FakeStreamer, FakeTokens, activity_item, number

ACCOUNT = "12345678"
OID = "1000000077"


def core_dedupe(orders: list) -> list:
    """What the runner publishes of ``orders``: the core's once-per-state filter, marking each as published."""
    events = OrderEvents()
    out = []
    for o in orders:
        if not events.seen(o):
            events.add(o)
            out.append(o)
    return out


def order_messages(first_seq: int = 1) -> list[dict]:
    """One order's life as Schwab streams it, plus two unreadable messages of the same type and two non-objects."""
    created = {"SchwabOrderID": OID, "AccountNumber": ACCOUNT, "BaseEvent": {"EventType": "OrderCreated",
               "OrderCreatedEventEquityOrder": {"Order": {"OrderTypeCode": "Limit", "LimitPrice": number(10.5),
               "OrderLegs": [{"Quantity": number(3), "BuySellCode": "Buy", "Security": {"Symbol": "AMD"}}]}}}}  # fmt: skip

    def fill(cumulative: float, leaves: float) -> dict:
        return {"SchwabOrderID": OID, "AccountNumber": ACCOUNT, "BaseEvent": {"EventType": "OrderFillCompleted",
                "OrderFillCompletedEventOrderLegQuantityInfo": {"QuantityInfo": {"CumulativeQuantity": number(cumulative),
                "LeavesQuantity": number(leaves), "AveragePrice": number(10.5)}}}}  # fmt: skip

    bare = {"SchwabOrderID": OID, "AccountNumber": ACCOUNT}
    types = [
        ("OrderCreated", created),
        ("OrderAccepted", dict(bare, Status="Open")),
        ("OrderMonitorCreated", bare),
        ("ExecutionRequested", bare),
        ("ExecutionRequestCreated", bare),
        ("ExecutionRequestCompleted", bare),
        ("ExecutionCreated", bare),
        ("OrderFillCompleted", fill(1, 2)),
        ("OrderFillCompleted", fill(3, 0)),
        ("OrderMonitorCompleted", bare),
        # Unreadable: same account and type, different (broken) data. Each is its own order event.
        ("OrderCreated", "{not json"),
        ("OrderCreated", "{still not json"),
        ("BrandNewEvent", None),
    ]
    items: list = [activity_item(first_seq + i, ACCOUNT, t, d) for i, (t, d) in enumerate(types)]
    return items + ["garbage one", ["garbage", 2]]


def test_unreadable_messages_get_distinct_stable_ids_and_keep_the_account():
    stats = StreamStats()
    orders = ActivityParser("tos").apply(order_messages(), 0, 1, stats)
    unreadable = orders[10:]
    assert [o.account_id for o in unreadable] == [ACCOUNT] * 3 + ["unknown"] * 2
    ids = [o.order_id for o in unreadable]
    assert len(set(ids)) == len(ids) and all(i.startswith("unknown-") and len(i) == 24 for i in ids)
    # Stable: the same message gives the same id in another parser (another process, a restart).
    again = ActivityParser("tos").apply(order_messages(), 0, 2, StreamStats())
    assert [o.order_id for o in again[10:]] == ids
    # Every event of the order differs in broker_status, event or state: the core dedupe keeps them all.
    assert core_dedupe(orders) == orders


def test_account_field_that_is_no_identifier_falls_back_to_the_data_account_number():
    (o,) = ActivityParser("tos").apply(
        [activity_item(1, "glob*chars", "OrderAccepted", {"SchwabOrderID": "5", "AccountNumber": ACCOUNT})],
        0, 1, StreamStats())  # fmt: skip
    assert (o.account_id, o.order_id) == (ACCOUNT, "5")


def test_repeat_filter_is_keyed_on_the_whole_message_not_seq():
    stats = StreamStats()
    p = ActivityParser("tos")
    item = activity_item(1, ACCOUNT, "OrderMonitorUpdated", {"SchwabOrderID": OID, "Detail": "first"})
    assert len(p.apply([item], 0, 1, stats)) == 1
    # The same message again (Schwab repeating after a reconnect, even under another subscription key): dropped.
    assert p.apply([dict(item, key="Account Activity")], 0, 1, stats) == []
    assert stats.skipped["account activity repeated (same message after reconnect)"] == 1
    # seq restarted on a new connection: a later, different message of the same order and type is published.
    later = activity_item(1, ACCOUNT, "OrderMonitorUpdated", {"SchwabOrderID": OID, "Detail": "second"})
    assert len(p.apply([later], 0, 1, stats)) == 1
    # Unhashable seq values do not break the filter.
    assert len(p.apply([dict(later, seq=[1, 2])], 0, 1, stats)) == 1


def test_every_message_of_one_order_goes_through_tos_stream_and_core_dedupe():
    async def main():
        async with FakeStreamer() as fake:
            stream = TosStream(fake.info(), FakeTokens().source(), command_timeout=2, login_timeout=2)
            await stream.connect()
            events = stream.events()
            await fake.send_activity(order_messages())
            got = []
            while len(got) < 15:
                ev = await asyncio.wait_for(events.__anext__(), 2)
                if ev is not HEARTBEAT:
                    got.extend(ev)
            await stream.close()
        published = core_dedupe(got)
        assert len(published) == 15
        assert [o.broker_status for o in published[:10]] == [
            "OrderCreated", "OrderAccepted", "OrderMonitorCreated", "ExecutionRequested", "ExecutionRequestCreated",
            "ExecutionRequestCompleted", "ExecutionCreated", "OrderFillCompleted", "OrderFillCompleted",
            "OrderMonitorCompleted"]  # fmt: skip
        assert [o.status for o in published[7:9]] == ["partially_filled", "filled"]

    asyncio.run(asyncio.wait_for(main(), 20))


def test_runner_publishes_every_distinct_activity_message_once_across_a_reconnect(redis_server, monkeypatch):
    async def main():
        async with FakeStreamer() as fake:
            monkeypatch.setattr(plugin, "make_client", lambda settings, store, log, status=None: FakeSchwabClient(fake))
            r = aioredis.Redis(port=redis_server.port)
            pubsub = r.pubsub()
            await pubsub.subscribe(f"live_data:orders:{ACCOUNT}", "live_data:orders:unknown")
            config = load_config({
                "redis": {"url": redis_server.url}, "backoff": {"initial": 0.02, "max": 0.1},
                "brokers": {"tos": {"symbols": ["AAPL"], "streamer_url": fake.url, "login_timeout": 2.0,
                                    "command_timeout": 2.0, "heartbeat_timeout": 5.0}}})  # fmt: skip
            runner = Runner(config, token_store=MemoryTokenStore())
            task = asyncio.create_task(runner.run())
            await fake.wait_for(lambda: fake.subscriptions.get("LEVELONE_EQUITIES") == {"AAPL"})
            messages = order_messages()
            await fake.send_activity(messages[:8])
            await fake.send_activity(messages[8:])
            got = await read(pubsub, 15)
            # Reconnect: Schwab repeats the last messages with the same seq (dropped), then restarts seq at 1
            # with a new event of the same order (published).
            await fake.drop()
            await fake.wait_for(lambda: fake.connected_total == 2 and fake.subscriptions.get("LEVELONE_EQUITIES") == {"AAPL"})
            replaced = {"SchwabOrderID": OID, "AccountNumber": ACCOUNT, "Status": "Replaced"}
            await fake.send_activity(messages[7:10] + [activity_item(1, ACCOUNT, "OrderMonitorUpdated", replaced)])
            got += await read(pubsub, 1)
            runner.stop()
            await asyncio.wait_for(task, 10)
            assert await r.xlen(f"live_data:stream:orders:{ACCOUNT}") == 14
            await pubsub.aclose()
            await r.aclose()
        assert len(got) == 16
        channels = [c for c, _ in got]
        assert channels.count("live_data:orders:unknown") == 2
        ids = [o["order_id"] for _, o in got]
        assert ids.count(OID) == 11 and len(set(ids[10:15])) == 5
        assert (got[-1][1]["broker_status"], got[-1][1]["status"]) == ("OrderMonitorUpdated", "replaced")

    asyncio.run(main())


async def read(pubsub, n: int, timeout: float = 3.0, grace: float = 0.3) -> list[tuple[str, dict]]:
    """Published messages: until ``n`` arrived (or ``timeout``), then ``grace`` seconds more to catch extras."""
    out = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        m = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
        if m is not None:
            out.append((m["channel"].decode(), json.loads(m["data"])))
            if len(out) == n:
                deadline = min(deadline, loop.time() + grace)
    return out



def test_two_same_type_events_that_differ_only_in_execution_details_are_both_published():
    orders = ActivityParser("tos").apply([
        activity_item(1, ACCOUNT, "ExecutionCreated", {"SchwabOrderID": OID, "ExecutionID": "E1",
                                                       "DateTimeString": "2025-03-20 13:43:45.620"}),
        activity_item(2, ACCOUNT, "ExecutionCreated", {"SchwabOrderID": OID, "ExecutionID": "E2",
                                                       "DateTimeString": "2025-03-20 13:43:46.100"})],
        0, 1, StreamStats())  # fmt: skip
    assert len(orders) == 2
    assert len(core_dedupe(orders)) == 2
