"""Redis Sentinel: configuration, WAIT on account events, and a real failover (issue 17).

The failover scenarios start a master, a replica and three sentinels (``redis-server --sentinel``) on loopback and
SIGKILL the master mid-run; they are marked ``slow`` (run with ``-m slow``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import orjson
import pytest
import redis

from livedata_core.redis_io.control import ControlClient
from livedata_core.errors import ConfigError, PublishError
from livedata_core.models import Order, Quote, Transaction, to_dict
from livedata_core.redis_io.publisher import AsyncPublisher
from livedata_core.redis_io.server import RedisServer
from livedata_core.redis_io.topology import RedisTopology
from livedata_core.runner import Runner, load_config
from livedata_core.testing import running
from livedata_core.plugin_kit.tokens import MemoryTokenStore


# -- configuration ---------------------------------------------------------------------------------------------


def test_sentinels_and_service_configure_the_runner_with_wait_on_by_default():
    config = load_config({"redis": {"url": "redis://:masterpw@ignored/2", "service": "mymaster",
                                    "sentinels": ["10.0.0.1:26379", "redis://:sentinelpw@10.0.0.2:26380"]}}, env={})
    topology = config.redis.topology
    assert topology.kind == "sentinel"
    assert topology.sentinel_addresses() == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    assert topology.wait_replicas == 1  # on by default with sentinels
    shown = repr(config.redis) + topology.describe() + repr(Runner(config, token_store=MemoryTokenStore()))
    assert "masterpw" not in shown and "sentinelpw" not in shown
    assert "mymaster" in shown and "10.0.0.2:26380" in shown
    off = load_config({"redis": {"sentinels": ["h:1"], "service": "m", "wait_replicas": 0}}, env={})
    assert off.redis.topology.wait_replicas == 0


@pytest.mark.parametrize(("redis_table", "message"), [
    ({"sentinels": ["10.0.0.1:26379"]}, "sentinels and service go together"),
    ({"service": "mymaster"}, "sentinels and service go together"),
    ({"sentinels": ["10.0.0.1"], "service": "m"}, "redis.sentinels: '10.0.0.1' must be 'host:port'"),
    ({"sentinels": [], "service": "m"}, "redis.sentinels is empty"),
    ({"sentinels": "h:1", "service": 3}, "redis.service must be the name"),
    ({"sentinels": ["h:1"], "service": "m", "cluster": True}, "cannot be used together"),
    ({"sentinels": ["h:1"], "service": "m", "wait_replicas": -1}, "redis.wait_replicas"),
    ({"sentinels": ["h:1"], "service": "m", "wait_timeout": 60}, "redis.wait_timeout"),
    ({"sentinels": ["redis://:pw@h:1?bogus=1"], "service": "m"}, "unknown query argument"),
])
def test_a_bad_sentinel_setting_is_refused_naming_it(redis_table, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_config({"redis": redis_table}, env={})
    assert "pw@" not in str(caught.value)


# -- WAIT: an account event counts as published once a replica has it -----------------------------------------


def test_account_events_count_as_published_only_once_a_replica_has_them(private_redis):
    asyncio.run(_published_once_a_replica_has_them(private_redis))


async def _published_once_a_replica_has_them(private_redis):
    replica = RedisServer().start()
    try:
        publisher = AsyncPublisher(RedisTopology(private_redis.url, wait_replicas=1, wait_timeout=0.05))
        await publisher.start()
        publisher.publish(Order(broker="t", account_id="A1", order_id="1", status="open"))
        publisher.publish(Quote(broker="t", symbol="AAPL", last=1.0))
        # No replica yet: the order is on the master, but not published as far as the publisher is concerned.
        assert not await publisher.flush(0.5)
        assert publisher.stats.unreplicated >= 1
        assert publisher.pending >= 1
        client = redis.Redis(port=replica.port)
        client.replicaof("127.0.0.1", private_redis.port)
        assert await publisher.flush(15)
        assert publisher.stats.published == 2
        assert publisher.pending == 0
        # Asked about again, not written again: the stream holds the order once, on the master and the replica.
        assert redis.Redis(port=private_redis.port).xlen("live_data:stream:orders:A1") == 1
        assert client.xlen("live_data:stream:orders:A1") == 1
        await publisher.close()
        client.close()
    finally:
        replica.close()


def test_while_replicas_lag_quotes_do_not_queue_behind_a_wait_on_every_event_batch(private_redis):
    """Redis runs nothing after a WAIT on its connection until WAIT returns: with no replica, a WAIT on every batch
    of account events held every quote for wait_timeout. While replicas lag, only the paced WAIT goes out, and the
    held events are still counted once a replica has them (the test above)."""
    asyncio.run(_few_waits_while_replicas_lag(private_redis))


async def _few_waits_while_replicas_lag(private_redis):
    admin = redis.Redis(port=private_redis.port)
    admin.config_resetstat()
    publisher = AsyncPublisher(RedisTopology(private_redis.url, wait_replicas=1, wait_timeout=0.2))
    await publisher.start()
    for i in range(40):
        publisher.publish(Transaction(broker="t", account_id="A1", transaction_id=f"t{i}", type="TRADE"))
        publisher.publish(Quote(broker="t", symbol="AAPL", last=float(i)))
        await asyncio.sleep(0.05)
    await publisher.flush(0.5)
    waits = admin.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)
    assert redis.Redis(port=private_redis.port).xlen("live_data:stream:transactions:A1") == 40  # all on the master
    assert publisher.pending >= 40  # none counted as published: no replica has them
    assert 1 <= waits <= 8, waits  # paced (0.2, 0.4, 0.8, 1.6 s...), not one per batch of events (40)
    await publisher.close()
    admin.close()


def test_live_data_redis_raises_when_an_order_reaches_no_replica(private_redis):
    from livedata_core.redis_io.publisher import sync

    sync.configure(RedisTopology(private_redis.url, wait_replicas=1, wait_timeout=0.05))
    try:
        assert sync.publish_quote("AAPL", {"last": 1.0}) == 0  # quotes do not wait
        with pytest.raises(PublishError, match=r"only 0 of 1 replica\(s\).*publish it again"):
            sync.publish_order("A1", {"order_id": "1", "status": "open"})
    finally:
        sync.configure()


# -- a real failover --------------------------------------------------------------------------------------------


def _event_key(kind: str, data: dict) -> tuple:
    ident = data.get("order_id") if kind == "orders" else data.get("transaction_id")
    return kind, ident, data.get("status"), data.get("timestamp")


@pytest.mark.slow
def test_sigkill_of_the_master_loses_no_order_or_transaction(sentinel_set):
    """Done-when of issue 17: orders at ~150 events/s, a consumer reading the streams, SIGKILL of the master: the
    runner survives, quotes resume within 5 s of the promotion, and every order and transaction event the demo
    produced is in the new master's streams or was seen by the consumer."""
    asyncio.run(_failover_scenario(sentinel_set))


async def _failover_scenario(sentinel_set):
    topology = sentinel_set.topology()
    config = load_config({
        "status_interval": 0.2,
        "redis": {"url": topology.url, "sentinels": list(topology.sentinels), "service": topology.service,
                  "stream_maxlen": 1_000_000},
        "brokers": {"demo": {"symbols": ["AAPL", "MSFT", "SPY"], "quotes_per_second": 300, "order_every": 0.02,
                             "expire_after": 3600,
                             "poll": {"positions": 0, "balances": 0, "orders": 0.02, "transactions": 0.05}}},
    }, env={})
    assert config.redis.wait_replicas == 1
    runner = Runner(config, token_store=MemoryTokenStore())
    produced: dict[tuple, dict] = {}
    publish = runner.publisher.publish

    def recording(model):  # observes what the demo hands the publisher; publishing is untouched
        if isinstance(model, (Order, Transaction)):
            data = to_dict(model)
            produced[_event_key(model.TYPE, data)] = data
        publish(model)

    runner.publisher.publish = recording
    seen: dict[tuple, dict] = {}
    consumer_errors = []

    async def consume_streams() -> None:
        """A consumer reading the streams through the sentinels (XREAD from the last id it saw)."""
        from livedata_core.redis_io.topology import async_client

        last = {"live_data:stream:orders:DEMO-1": "0-0", "live_data:stream:transactions:DEMO-1": "0-0"}
        client = async_client(topology, socket_timeout=2, socket_connect_timeout=1)
        while True:
            try:
                for stream, entries in await client.xread(last, block=200) or []:
                    stream = stream.decode()
                    for entry_id, fields in entries:
                        last[stream] = entry_id.decode()
                        data = orjson.loads(fields[b"data"])
                        seen[_event_key(stream.split(":")[2], data)] = data
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError) as exc:
                consumer_errors.append(exc)
                await asyncio.sleep(0.1)

    consumer = asyncio.create_task(consume_streams())
    try:
        async with running(runner):
            await asyncio.sleep(3)
            before = len(produced)
            assert before > 100, f"the demo produced only {before} order/transaction events in 3 s"
            old_port = sentinel_set.kill_master()
            promoted_port = await asyncio.to_thread(sentinel_set.wait_for_promotion, old_port)
            promoted_at = time.monotonic()
            new_master = redis.Redis(port=promoted_port)
            pubsub = new_master.pubsub(ignore_subscribe_messages=True)
            pubsub.psubscribe("live_data:quotes:*")
            quote = None
            while quote is None and time.monotonic() - promoted_at < 5:
                quote = await asyncio.to_thread(pubsub.get_message, True, 0.2)
            resumed_after = time.monotonic() - promoted_at
            pubsub.close()
            assert quote is not None, "no quote reached the new master within 5 s of the promotion"
            print(f"quotes resumed {resumed_after:.2f}s after the promotion")
            await asyncio.sleep(3)  # orders keep flowing to the new master
            # Live control follows the master too: the runner listens there again and answers.
            status = None
            for _ in range(50):
                try:
                    status = await asyncio.to_thread(ControlClient(topology, timeout=1).status)
                    if not status.get("stale"):
                        break
                except Exception:
                    pass
                await asyncio.sleep(0.2)
            assert status is not None and not status.get("stale")
            assert status["publisher"]["connected"]
            assert not runner._stop.is_set()  # the runner survived
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
    assert runner.publisher.stats.reconnects >= 1
    assert len(produced) > before, "no order or transaction was produced after the failover"
    in_streams: dict[tuple, dict] = {}
    for kind in ("orders", "transactions"):
        for _, fields in new_master.xrange(f"live_data:stream:{kind}:DEMO-1"):
            data = orjson.loads(fields[b"data"])
            in_streams[_event_key(kind, data)] = data
    lost = [key for key in produced if key not in in_streams and key not in seen]
    assert not lost, f"{len(lost)} of {len(produced)} events lost, e.g. {lost[:3]}"
    new_master.close()


@pytest.mark.slow
def test_tail_and_status_read_the_master_the_config_file_names(sentinel_set, tmp_path):
    """`livedata tail` and `livedata status` with [redis] sentinels/service in livedata.toml."""
    topology = sentinel_set.topology()
    (tmp_path / "livedata.toml").write_text(
        "[redis]\n"
        f"sentinels = {list(topology.sentinels)!r}\n".replace("'", '"')
        + 'service = "mymaster"\n'
        "[brokers.demo]\n"
        'symbols = ["AAPL"]\n'
        "quotes_per_second = 50\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LIVEDATA_REDIS_URL", None)
    run = subprocess.Popen([sys.executable, "-m", "livedata_core", "run", "--quiet"], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        tail = subprocess.run([sys.executable, "-m", "livedata_core", "tail", "quotes:AAPL", "-n", "3"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=60)
        assert tail.returncode == 0, tail.stderr
        assert tail.stdout.count("quotes:AAPL") == 3
        assert "sentinel service 'mymaster'" in tail.stderr
        status = subprocess.run([sys.executable, "-m", "livedata_core", "status", "--json"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        assert "sentinel service 'mymaster'" in orjson.loads(status.stdout)["redis"]
    finally:
        run.terminate()
        run.wait(30)
