"""At start, check that the runner's Redis user may run every command the runner will send, on its own keys and
channels (Redis ACLs: docs/operations.md#access-control).

Each command is *queued* inside ``MULTI`` and the transaction is then discarded: Redis checks a queued command's
permissions (the command, its keys and its channels) when it is queued, and runs none of them, so the check
writes nothing and publishes nothing. The first refusal is raised as a :class:`~livedata_core.errors.ConfigError`
naming the command, the key or channel and the ``ACL SETUSER`` rule that grants it. A user who may not even run
``MULTI`` is not checked (a warning says so) and the runner starts as before: a refusal then shows as a publish
error in ``livedata status``.

On a Redis Cluster the check runs on the URL's node (with ``CLUSTER SLOTS``, which the cluster client needs to find
the nodes). A key or channel of a slot that node does not serve is answered ``MOVED`` instead of ``QUEUED``, but
only after the user's permissions for it were checked: Redis refuses with ``NOPERM`` before it redirects. Every node
of a cluster is expected to have the same users (one ACL file, or ``ACL SETUSER`` sent to each). Where the URL's
node cannot be reached, a warning says the check was skipped (the publisher may still start through another seed
node).
"""

from __future__ import annotations

import logging
from typing import Any

from ..aio_tools import within
from ..channels import book_key, channel, control_channel, event_channel, latest_key, status_key, stream_key
from ..errors import ConfigError
from ..redis_io.control import reply_prefix
from ..redis_io.topology import RedisTopology, async_client, async_pubsub_client
from ..redis_io.url import parse_redis_url
from .config import RunnerConfig
from .ha.lease import ha_keys

__all__ = ["check_permissions", "needed_commands"]

log = logging.getLogger("livedata.runner.permissions")

_PROBE = "PERMISSION-CHECK"  # an identifier no broker uses: only its key and channel names matter


def needed_commands(config: RunnerConfig) -> list[tuple[str, tuple[str, ...], str]]:
    """``(command, arguments, what it is for)`` of every kind of command the runner sends with ``config``."""
    redis, prefix = config.redis, config.redis.prefix
    quotes, orders = channel("quotes", _PROBE, prefix), stream_key("orders", _PROBE, prefix)
    publish = "SPUBLISH" if redis.sharded else "PUBLISH"
    out: list[tuple[str, tuple[str, ...], str]] = [
        (publish, (quotes, ""), "publishing quotes and account events"),
        (publish, (event_channel("stale", prefix), ""), "announcing stale symbols"),
        ("SUBSCRIBE", (control_channel(prefix),), "taking control commands"),
        ("PUBLISH", (reply_prefix(prefix) + _PROBE, ""), "answering control commands"),
        ("SET", (status_key(prefix), "", "EX", "5"), "storing its status"),
    ]
    if redis.latest:
        key, book = latest_key("quotes", _PROBE, prefix), book_key("positions", _PROBE, prefix)
        out += [("MSET", (key, ""), "keeping the latest values"),
                ("SET", (key, "", "PX", "1"), "keeping the latest values"),
                ("HSET", (book, _PROBE, ""), "keeping the books of positions and balances"),
                ("HDEL", (book, _PROBE), "keeping the books of positions and balances"),
                ("HGETALL", (book,), "reading a book back at start")]  # fmt: skip
    if redis.streams:
        out += [("XADD", (orders, "MAXLEN", "~", "10", "*", "data", ""), "keeping the orders and transactions streams"),
                ("XREVRANGE", (orders, "+", "-", "COUNT", "1"), "reading the streams back at start")]  # fmt: skip
    if redis.latest or redis.streams:
        out.append(("PEXPIRE", (orders, "1"), "expiring an ephemeral broker's data"))
    if redis.wait_replicas:
        out.append(("WAIT", ("1", "1"), "waiting for replicas (wait_replicas)"))
    if redis.sentinels:
        out.append(("ROLE", (), "checking it writes to the master (Sentinel)"))
    if redis.cluster:
        out.append(("CLUSTER", ("SLOTS",), "finding the cluster's nodes"))
    if config.ha is not None:
        lease, epoch, runners = ha_keys(prefix)
        # Each command the lease scripts run (LEASE_COMMANDS): Redis checks those only when a script runs them.
        out += [("EVAL", ("return 0", "2", lease, epoch), "the hot-standby lease ([ha])"),
                ("GET", (lease,), "checking the lease ([ha])"),
                ("PTTL", (lease,), "checking when the leader's lease lapses ([ha])"),
                ("SET", (lease, "", "PX", "1"), "taking the lease ([ha])"),
                ("INCR", (epoch,), "counting takeovers ([ha])"),
                ("SET", (epoch, "1"), "keeping the epoch above every one seen ([ha])"),
                ("PEXPIRE", (lease, "1"), "renewing the lease ([ha])"),
                ("HSET", (runners, _PROBE, ""), "listing the runners ([ha])"),
                ("HGETALL", (runners,), "listing the runners ([ha])"),
                ("HDEL", (runners, _PROBE), "listing the runners ([ha])"),
                ("GET", (status_key(prefix),), "reading the previous leader's symbols ([ha])")]  # fmt: skip
    return out


def _grant(command: str, args: tuple[str, ...], error: str) -> str:
    if "channel" in error:
        return f"a channel pattern such as &{args[0].rsplit(':', 1)[0]}:*"
    if "key" in error:
        return f"a key pattern such as ~{args[0].split(':', 1)[0]}:*"
    if "|" in error:  # a subcommand ('cluster|slots'): granting it alone is enough
        return f"+{command.lower()}|{args[0].lower()}"
    return f"+{command.lower()}"


async def check_permissions(config: RunnerConfig, timeout: float = 5.0) -> None:
    """Raise :class:`~livedata_core.errors.ConfigError` if the Redis user of ``config.redis`` may not run one of
    :func:`needed_commands`; return quietly when it may (or cannot be checked: ``MULTI`` refused).

    Connection failures are left to the publisher's start (it says why Redis cannot be reached).
    """
    topology: RedisTopology = config.redis.topology
    options = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    # A transaction lives on one node: on a cluster, a plain client of the URL's node (see the module's docstring).
    client = async_pubsub_client(topology, **options) if topology.cluster else async_client(topology, **options)
    try:
        refused = await within(_probe(client, needed_commands(config)), timeout * 2)
    except ConfigError:
        raise
    except Exception as exc:
        # One server down: the publisher's start says so next. A cluster may still be reached through another seed.
        level = logging.WARNING if topology.cluster else logging.DEBUG
        log.log(level, "permission check skipped (the URL's node: %s); a missing permission will show as publish "
                "errors", exc)  # fmt: skip
        return
    finally:
        await client.aclose()
    if refused is None:
        return
    command, args, purpose, error = refused
    user = parse_redis_url(topology.url).username
    who = f"the Redis user {user!r}" if user else "this Redis user"
    raise ConfigError(
        f"{who} may not run {' '.join([command, *args[:1]])} (needed for {purpose}): Redis said "
        f"{error!r}. Grant it {_grant(command, args, error)} (`ACL SETUSER`, see docs/operations.md#access-control)"
    )


async def _probe(client: Any, commands: list[tuple[str, tuple[str, ...], str]]) -> tuple[str, tuple[str, ...], str, str] | None:
    import redis

    connection = await client.connection_pool.get_connection()
    try:
        await connection.send_command("MULTI")
        try:
            await connection.read_response()
        except redis.ResponseError as exc:
            log.warning("cannot check this Redis user's permissions at start (MULTI: %s); grant +multi +discard "
                        "to have them checked", exc)  # fmt: skip
            return None
        refused = None
        try:
            for command, args, purpose in commands:
                await connection.send_command(command, *args)
                try:
                    await connection.read_response()
                except redis.exceptions.NoPermissionError as exc:  # redis-py drops the NOPERM code from the text
                    refused = (command, args, purpose, f"NOPERM {exc}")
                    break
                except (redis.exceptions.AskError, redis.exceptions.ClusterCrossSlotError, redis.exceptions.ClusterDownError,
                        redis.exceptions.TryAgainError):  # fmt: skip
                    pass  # a cluster node's "not here" (MOVED is an AskError): it checked the permissions first
        finally:
            await connection.send_command("DISCARD")
            await connection.read_response()
        return refused
    finally:
        await client.connection_pool.release(connection)
