"""Redis Cluster: keys routed by slot, sharded pub/sub, and the demo through `livedata run` (issue 17).

A three-master cluster (``redis-server --cluster-enabled yes``) is started on loopback for the module; skipped,
saying why, on a server older than Redis 7. The `livedata run` scenarios are marked ``slow``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading

import orjson
import pytest
import redis
from redis.cluster import RedisCluster

from livedata_core.errors import ConfigError
from livedata_core.models import Order, Position, Quote
from livedata_core.redis_io.publisher import make_publisher
from livedata_core.redis_io.publisher.cluster import ClusterPublisher
from livedata_core.runner import load_config
from livedata_core.redis_io.subscriber import subscribe


@pytest.mark.parametrize(("redis_table", "message"), [
    ({"sharded": True}, "redis.sharded .* set cluster = true"),
    ({"nodes": ["10.0.0.6:7000"]}, "redis.nodes names cluster seed nodes"),
    ({"cluster": True, "nodes": ["nowhere"]}, "redis.nodes: 'nowhere' must be 'host:port'"),
    ({"cluster": True, "url": "redis://h:7000/3"}, "a cluster has only database 0"),
    ({"cluster": True, "wait_replicas": 1}, "redis.wait_replicas is for one server or sentinels"),
    ({"cluster": "yes"}, "redis.cluster must be true or false"),
])
def test_a_bad_cluster_setting_is_refused_naming_it(redis_table, message):
    with pytest.raises(ConfigError, match=message):
        load_config({"redis": redis_table}, env={})


def _node_of(cluster, key: str) -> int:
    client = RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    try:
        return client.get_node_from_key(key).port
    finally:
        client.close()


def test_the_publisher_writes_every_key_on_the_node_of_its_slot_and_sharded_subscribers_get_it(redis_cluster):
    topology = redis_cluster.topology(sharded=True)
    symbols = [f"S{i}" for i in range(30)]
    received: list = []
    ready = threading.Event()

    def listen() -> None:
        for message in subscribe(*(f"quotes:{s}" for s in symbols), "orders:ACC1", url=topology):
            received.append(message)
            if len(received) >= len(symbols) + 1:
                return

    # The channels are named, so they are subscribed at once (no latest key needed).
    thread = threading.Thread(target=listen, daemon=True)
    thread.start()

    async def go() -> ClusterPublisher:
        publisher = make_publisher(topology)
        assert isinstance(publisher, ClusterPublisher)
        await publisher.start()
        await asyncio.sleep(1.0)  # the listener subscribes
        publisher.expire("demo", 60)
        for symbol in symbols:
            publisher.publish(Quote(broker="t", symbol=symbol, last=1.0))
        publisher.publish(Order(broker="t", account_id="ACC1", order_id="1", status="open"))
        publisher.publish(Position(broker="demo", account_id="ACC2", symbol="AAPL", quantity=5.0))
        assert await publisher.flush(20)
        assert publisher.stats.published == len(symbols) + 2
        await publisher.close()
        return publisher

    asyncio.run(go())
    thread.join(20)
    assert {m.identifier for m in received if m.kind == "quotes"} == set(symbols)
    assert any(m.kind == "orders" and m.data.order_id == "1" for m in received)
    nodes = {}
    for node in redis_cluster.nodes:
        client = redis.Redis(port=node.port)
        nodes[node.port] = {k.decode() for k in client.keys("live_data:*")}
        client.close()
    # Every key is on the node that owns its slot, and the keys are spread over the nodes.
    for port, keys in nodes.items():
        for key in keys:
            assert _node_of(redis_cluster, key) == port
    assert sum(1 for keys in nodes.values() if keys) >= 2
    every = set().union(*nodes.values())
    assert {f"live_data:latest:quotes:{s}" for s in symbols} <= every
    assert {"live_data:stream:orders:ACC1", "live_data:latest:orders:ACC1", "live_data:book:positions:ACC2"} <= every
    client = RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    assert 0 < client.pttl("live_data:book:positions:ACC2") <= 60_000  # the expiry followed the book to its node
    client.close()


def _config(tmp_path, cluster, sharded: bool) -> str:
    topology = cluster.topology()
    path = tmp_path / f"livedata-{sharded}.toml"
    path.write_text(
        "[redis]\n"
        f'url = "{topology.url}"\n'
        "cluster = true\n"
        f"nodes = {json.dumps(list(topology.nodes))}\n"
        f"sharded = {'true' if sharded else 'false'}\n"
        "[brokers.demo]\n"
        'symbols = ["AAPL", "MSFT", "SPY"]\n'
        "quotes_per_second = 100\n"
        "order_every = 0.3\n"
        "poll = { positions = 0.5, balances = 1, orders = 0.2, transactions = 1 }\n"
    )
    return str(path)


def _cli(*args: str, cwd) -> list[str]:
    return [sys.executable, "-m", "livedata_core", *args]


@pytest.mark.slow
def test_livedata_run_publishes_the_demo_to_the_cluster_and_tail_shows_it_sharded(redis_cluster, tmp_path):
    """Done-when: the demo through `livedata run` against three masters publishes quotes, positions and orders, and
    `livedata tail` shows them with sharded = true (SSUBSCRIBE; channels from the latest keys)."""
    config = _config(tmp_path, redis_cluster, sharded=True)
    env = {k: v for k, v in os.environ.items() if k != "LIVEDATA_REDIS_URL"}
    run = subprocess.Popen(_cli("run", "-c", config, "--quiet", cwd=tmp_path), env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    try:
        # tail resolves 'positions:*' and 'orders:*' from latest keys: wait until the demo has written some.
        client = RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
        for _ in range(100):
            if client.exists("live_data:latest:orders:DEMO-1") and client.exists("live_data:latest:positions:DEMO-1"):
                break
            assert run.poll() is None, run.stderr.read().decode()
            threading.Event().wait(0.1)
        client.close()
        tail = subprocess.run(_cli("tail", "-c", config, "--json", "-n", "60", "quotes", "positions", "orders", cwd=tmp_path),
                              env=env, capture_output=True, text=True, timeout=90)
        assert tail.returncode == 0, tail.stderr
        assert "sharded" in tail.stderr
        kinds = {json.loads(line)["channel"].split(":")[1] for line in tail.stdout.splitlines()}
        assert kinds == {"quotes", "positions", "orders"}, tail.stdout[-2000:]
        status = subprocess.run(_cli("status", "-c", config, "--json", cwd=tmp_path), env=env, capture_output=True,
                                text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        assert orjson.loads(status.stdout)["redis"].startswith("cluster via")
    finally:
        run.terminate()
        run.wait(30)


@pytest.mark.slow
def test_the_seeds_plain_redis_py_subscriber_works_with_sharded_off(redis_cluster, tmp_path):
    config = _config(tmp_path, redis_cluster, sharded=False)
    # The README's subscriber, connected to any one node: plain PUBLISH reaches every node of the cluster.
    node = redis.Redis(port=redis_cluster.nodes[2].port)
    pubsub = node.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("live_data:quotes:*")
    env = {k: v for k, v in os.environ.items() if k != "LIVEDATA_REDIS_URL"}
    run = subprocess.Popen(_cli("run", "-c", config, "--quiet", cwd=tmp_path), env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    try:
        quotes = []
        for _ in range(200):
            message = pubsub.get_message(timeout=0.2)
            if message is not None:
                quotes.append(json.loads(message["data"]))
            if len(quotes) >= 5:
                break
            assert run.poll() is None, run.stderr.read().decode()
        assert len(quotes) >= 5 and {q["symbol"] for q in quotes} <= {"AAPL", "MSFT", "SPY"}
    finally:
        run.terminate()
        run.wait(30)
        pubsub.close()
        node.close()


def test_live_data_redis_publishes_to_the_cluster_with_spublish(redis_cluster):
    from livedata_core.redis_io.publisher import sync

    topology = redis_cluster.topology(sharded=True)
    client = RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    pubsub = client.pubsub()
    pubsub.ssubscribe("live_data:orders:SYNC1")
    sync.configure(topology)
    try:
        assert sync.publish_order("SYNC1", {"order_id": "9", "status": "open"}) == 1  # one sharded subscriber
        message = None
        for _ in range(50):
            message = pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                break
        assert message is not None and orjson.loads(message["data"])["order_id"] == "9"
        assert client.xlen("live_data:stream:orders:SYNC1") == 1
    finally:
        sync.configure()
        pubsub.close()
        client.close()


def test_the_runner_checks_its_users_permissions_on_a_cluster_naming_what_is_missing(redis_cluster):
    """The start-up permission check (docs/operations.md#access-control) on a cluster: queued in MULTI on the URL's
    node, where a key of another node's slot is refused with NOPERM before it would be redirected."""
    from livedata_core.channels import status_key
    from livedata_core.runner.permissions import check_permissions

    admins = [redis.Redis(port=node.port) for node in redis_cluster.nodes]
    # The URL names a node that does not serve the status key's slot: its refusal must come from that node's ACL.
    owner = _node_of(redis_cluster, status_key(""))
    elsewhere = next(node.port for node in redis_cluster.nodes if node.port != owner)

    def configure(user: str, secret: str) -> object:
        url = f"redis://{user}:{secret}@127.0.0.1:{elsewhere}/0"
        return load_config({"redis": {"url": url, "cluster": True, "sharded": True}}, env={})

    try:
        for admin in admins:
            admin.execute_command(*"ACL SETUSER nospublish on >s1 resetchannels &* resetkeys ~* +@all -spublish".split())
            admin.execute_command(*"ACL SETUSER narrow on >s2 resetchannels &* resetkeys ~live_data:latest:* +@all".split())
            admin.execute_command(*"ACL SETUSER noslots on >s3 resetchannels &* resetkeys ~* +@all -cluster|slots".split())
        with pytest.raises(ConfigError, match=r"the Redis user 'nospublish' may not run SPUBLISH live_data:quotes:PERMISSION-CHECK "
                                              r"\(needed for publishing quotes and account events\).*Grant it \+spublish"):
            asyncio.run(check_permissions(configure("nospublish", "s1")))
        with pytest.raises(ConfigError, match=r"may not run SET live_data:status \(needed for storing its status\).*"
                                              r"Grant it a key pattern such as ~live_data:\*"):
            asyncio.run(check_permissions(configure("narrow", "s2")))
        # The cluster client's own CLUSTER SLOTS, without which the publisher could not find the nodes.
        with pytest.raises(ConfigError, match=r"may not run CLUSTER SLOTS \(needed for finding the cluster's nodes\).*"
                                              r"Grant it \+cluster\|slots"):
            asyncio.run(check_permissions(configure("noslots", "s3")))
        # Granted everything: the check passes, though most of its keys and channels live on other nodes, and it
        # wrote nothing anywhere.
        for admin in admins:
            admin.execute_command("ACL", "SETUSER", "nospublish", "+spublish")
        before = [admin.dbsize() for admin in admins]
        asyncio.run(check_permissions(configure("nospublish", "s1")))
        assert [admin.dbsize() for admin in admins] == before
    finally:
        for admin in admins:
            admin.execute_command("ACL", "DELUSER", "nospublish", "narrow", "noslots")
            admin.close()
