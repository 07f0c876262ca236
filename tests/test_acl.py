"""The three Redis users docs/operations.md recommends (issue 18), on a real private redis-server, driven through
the real `livedata` commands: the runner (with a hot standby lease) as `livedata`, `livedata tail` as `consumer`,
`livedata subscribe` / `status` as `operator` (and refused as `consumer`), and a runner that may not publish
refusing to start with a message naming the missing permission."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from livedata_core.channels import CHANNEL_TYPES
from livedata_core.errors import ConfigError
from livedata_core.redis_io.server import RedisServer
from livedata_core.redis_io.subscriber import book, latest
from livedata_core.runner import Runner, load_config
from livedata_core.runner.permissions import check_permissions, needed_commands

DOCS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
LIVEDATA = [sys.executable, "-m", "livedata_core.cli"]


def documented_acls() -> list[str]:
    section = DOCS.read_text().split("## Access control", 1)[1]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.startswith("ACL SETUSER")]


@pytest.fixture(scope="module")
def acl_redis():
    with RedisServer() as server:
        admin = redis.Redis(port=server.port)
        for line in documented_acls():
            admin.execute_command(*line.split())
        # The runner's user without PUBLISH: the runner must refuse to start, naming it.
        livedata = next(line for line in documented_acls() if line.startswith("ACL SETUSER livedata "))
        admin.execute_command(*livedata.replace("SETUSER livedata", "SETUSER mute").replace(">runner-secret", ">mute-secret").split(), "-publish")
        yield server, admin
        admin.close()


def url(server: RedisServer, user: str, secret: str) -> str:
    return f"redis://{user}:{secret}@127.0.0.1:{server.port}/0"


def livedata(*args: str, user: tuple[str, str], server: RedisServer, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "LIVEDATA_REDIS_URL": url(server, *user)}
    return subprocess.run([*LIVEDATA, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_the_documented_users_are_three_and_default_is_off():
    names = [line.split()[2] for line in documented_acls()]
    assert names == ["livedata", "operator", "consumer", "default"] and documented_acls()[-1] == "ACL SETUSER default off"
    # A consumer may subscribe to every data channel type (a new type needs its pattern in the consumer's line).
    consumer = documented_acls()[2].split()
    assert {f"&live_data:{kind}:*" for kind in CHANNEL_TYPES} | {"&live_data:events:*"} == {
        word for word in consumer if word.startswith("&")}


def test_the_runner_consumer_and_operator_each_do_their_part_and_no_more(acl_redis, tmp_path):
    server, admin = acl_redis
    config = tmp_path / "livedata.toml"
    config.write_text('[ha]\nlease = 2\n\n[brokers.demo]\nsymbols = ["AAPL", "MSFT"]\n')
    env = {**os.environ, "LIVEDATA_REDIS_URL": url(server, "livedata", "runner-secret")}
    runner = subprocess.Popen([*LIVEDATA, "run", "-c", str(config), "--no-embedded"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        consumer = ("consumer", "consumer-secret")
        # `livedata tail` as consumer: the demo's quotes arrive (the runner took its lease and publishes).
        tail = livedata("tail", "quotes:*", "-n", "3", "--json", user=consumer, server=server)
        assert tail.returncode == 0, tail.stderr
        lines = [json.loads(line) for line in tail.stdout.splitlines()]
        assert len(lines) == 3 and {line["channel"] for line in lines} <= {"live_data:quotes:AAPL", "live_data:quotes:MSFT"}

        operator = ("operator", "operator-secret")
        added = livedata("subscribe", "demo", "NVDA", user=operator, server=server)
        assert added.returncode == 0 and "NVDA" in added.stdout + added.stderr, added.stderr
        status = livedata("status", "--json", user=operator, server=server)
        assert status.returncode == 0, status.stderr
        shown = json.loads(status.stdout)
        assert "NVDA" in shown["brokers"]["demo"]["symbols"] and shown["ha"]["role"] == "leader"
        assert [r["role"] for r in shown["runners"]] == ["leader"]

        # As consumer, the same command is refused by Redis: a consumer cannot publish on the control channel.
        refused = livedata("subscribe", "demo", "TSLA", user=consumer, server=server)
        assert refused.returncode != 0 and "NOPERM" in refused.stderr, refused.stderr
        client = redis.Redis.from_url(url(server, *consumer))
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.publish("live_data:control", b'{"command": "ping"}')
        for forbidden in (("SELECT", "1"), ("SCAN", "0"), ("RANDOMKEY",)):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*forbidden)
        client.close()
        # The subscriber's readers, as a consumer: the latest quote and the demo account's book.
        quote = latest("quotes", "AAPL", url=url(server, *consumer))
        assert quote is not None and quote.symbol == "AAPL"
        deadline = time.monotonic() + 20
        while not book("positions", "DEMO-1", url=url(server, *consumer)):
            assert time.monotonic() < deadline, "the demo account's positions never reached its book"
            time.sleep(0.1)
        # The runner's own user: its keys and channels, nothing else.
        runner_client = redis.Redis.from_url(url(server, "livedata", "runner-secret"))
        for forbidden in (("KEYS", "*"), ("CONFIG", "GET", "maxmemory"), ("FLUSHALL",), ("SET", "other", "1"),
                          ("SELECT", "1"), ("MOVE", "live_data:status", "1"), ("SCAN", "0"), ("RANDOMKEY",),
                          ("PUBSUB", "CHANNELS")):  # fmt: skip
            with pytest.raises(redis.exceptions.NoPermissionError):
                runner_client.execute_command(*forbidden)
        runner_client.close()
    finally:
        runner.terminate()
        out, err = runner.communicate(timeout=30)
    assert runner.returncode == 0, err
    assert "cannot check" not in err  # its permissions were checked (MULTI allowed), and found complete


def test_a_runner_that_may_not_publish_refuses_to_start_naming_the_permission(acl_redis):
    server, _ = acl_redis
    started = time.monotonic()
    out = livedata("run", "--no-embedded", user=("mute", "mute-secret"), server=server)
    assert out.returncode == 2, out.stderr
    assert "the Redis user 'mute' may not run PUBLISH live_data:quotes:" in out.stderr
    assert "NOPERM" in out.stderr and "Grant it +publish" in out.stderr and "docs/operations.md#access-control" in out.stderr
    assert "mute-secret" not in out.stderr
    assert time.monotonic() - started < 30


def test_the_check_names_a_key_or_channel_outside_the_users_patterns(acl_redis):
    """A user whose key patterns miss the deployment prefix: the check names the key and the pattern to grant."""
    server, admin = acl_redis
    admin.execute_command("ACL", "SETUSER", "narrow", "on", ">narrow-secret", "resetchannels", "&*", "resetkeys",
                          "~live_data:*", "+@all")  # fmt: skip
    config = load_config({"redis": {"url": url(server, "narrow", "narrow-secret"), "prefix": "prod"}})
    with pytest.raises(ConfigError, match=r"may not run SET prod:live_data:status \(needed for storing its status\).*keys used as arguments.*"
                                          r"Grant it a key pattern such as ~prod:\*"):
        asyncio.run(check_permissions(config))
    # With every permission it needs, the check passes, and it wrote nothing.
    config = load_config({"redis": {"url": url(server, "livedata", "runner-secret")}, "ha": {"lease": 2}})
    before = admin.dbsize()
    asyncio.run(check_permissions(config))
    assert admin.dbsize() == before
    assert Runner(config).ha is not None
    # With sentinels the runner also asks ROLE (is this the master?): it is checked too (the docs say to grant +role).
    sentinel = load_config({"redis": {"url": url(server, "livedata", "runner-secret"), "sentinels": [f"127.0.0.1:{server.port}"],
                                      "service": "mymaster", "wait_replicas": 0}})
    assert ("ROLE", (), "checking it writes to the master (Sentinel)") in needed_commands(sentinel)


def test_a_runner_whose_user_may_not_run_a_lease_command_is_told_which_not_left_standing_by(acl_redis):
    """Every command of the lease scripts is checked at start; and a refusal inside the script itself (a user the
    start could not check) stops the election with the same kind of message instead of a standby forever."""
    server, admin = acl_redis
    livedata_line = next(line for line in documented_acls() if line.startswith("ACL SETUSER livedata "))
    admin.execute_command(*livedata_line.replace("SETUSER livedata", "SETUSER nopttl").replace(">runner-secret",
                                                                                           ">nopttl-secret").split(), "-pttl")  # fmt: skip
    config = load_config({"redis": {"url": url(server, "nopttl", "nopttl-secret")}, "ha": {"lease": 2}})
    with pytest.raises(ConfigError, match=r"may not run PTTL live_data:\{ha\}:lease \(needed for checking when the "
                                          r"leader's lease lapses"):  # fmt: skip
        asyncio.run(check_permissions(config))
    admin.set("live_data:{ha}:lease", b"7 another-runner", px=10_000)  # a leader: the script runs PTTL
    try:
        lease = Runner(config).ha

        async def elect():
            try:
                return await asyncio.wait_for(lease.acquire(asyncio.Event()), 10)
            finally:
                await lease.release()

        with pytest.raises(ConfigError, match=r"Redis refused the lease script \(\[ha\]\).*\+pttl.*access-control"):
            asyncio.run(elect())
    finally:
        admin.delete("live_data:{ha}:lease", "live_data:{ha}:runners")
