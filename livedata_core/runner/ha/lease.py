"""One leader among runners of one prefix: a lease in Redis, renewed by its holder, and a fencing epoch.

Keys (under the deployment prefix; the ``{ha}`` hash tag keeps them in one cluster slot):

- ``live_data:{ha}:lease``: ``"<epoch> <identity>"`` of the leader, with a ``PX`` expiry of ``lease`` seconds;
  taken only when absent (in a script that also increments the epoch), renewed by a compare-and-set script
  (``PEXPIRE`` only while the value is still the holder's own), and marked ``released`` by its holder at a clean
  exit (compare-and-set) so that a standby takes over at once, without the wait an absent lease asks for.
- ``live_data:{ha}:epoch``: the fencing epoch, ``INCR``-ed by every takeover, and never below the highest epoch
  the taking runner has seen (a Redis that lost the key does not send it back to 1).
- ``live_data:{ha}:runners``: a hash, one field per runner (its identity), a JSON row of its role, epoch and the
  leader it sees, rewritten at each tick; ``livedata status`` shows the rows seen recently.

The holder counts its lease on its own monotonic clock from the *send* time of its last successful renewal (the
server's expiry starts later, when the renewal arrives), and gives it up :data:`HOLD_FRACTION` of the lease after
that: :meth:`Lease.holds` turns false at that instant, without waiting for any task to run, and the publisher
checks it before every batch it writes (see :attr:`~livedata_core.redis_io.publisher.AsyncPublisher.fence`).
So a leader that was paused (SIGSTOP, a VM freeze) writes nothing once it resumes, even before its renewal task
has run, and a leader cut off from Redis has stopped its streams and polls before the server lets its lease go.

A standby takes an absent lease only once the runner it last saw holding it must have stepped down by its own
clock: at each poll it notes that moment from the key's remaining time to live (``PTTL``). A lease that lapsed
is taken at once; one that *vanished* early (a Redis restarted without persistence, a failover to a replica
that missed it) only ``HOLD_FRACTION`` of a lease later, when the old leader has stopped whatever its renewals
say (they fail from its next one on: the compare-and-set finds the key gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson

import redis

from ...aio_tools import reraise_if_cancelling, within
from ...channels import validate_prefix
from ...errors import ConfigError
from ...redis_io.topology import RedisTopology, async_client

__all__ = ["HOLD_FRACTION", "RENEW_FRACTION", "Lease", "ha_keys", "read_runners"]

log = logging.getLogger("livedata.runner.ha")

RENEW_FRACTION = 1 / 6
"""The leader renews every ``lease / 6`` seconds (a standby tries to take the lease as often)."""
HOLD_FRACTION = 0.6
"""A leader stops ``0.6 * lease`` after the send time of its last successful renewal: two renewals may fail in a
row, and 40 % of the lease is left to close its broker connections before the server lets the lease go."""
SEEN_FOR = 3
"""A runner row older than 3 leases is not shown (the runner is gone) and is removed by the next tick."""
MARGIN = 0.05
"""A standby waits this fraction of a lease more than the old leader's own step-down moment (clock rates)."""

# KEYS: lease, epoch. ARGV: identity, lease ms, "1" if this runner may take an absent lease now, the highest epoch
# it has seen. Returns {1, epoch} (taken), {0, value, pttl} (held: by whom, for how long) or {2} (absent, not taken).
_ACQUIRE = """
local value = redis.call('GET', KEYS[1])
if value and value ~= 'released' then return {0, value, redis.call('PTTL', KEYS[1])} end
if not value and ARGV[3] ~= '1' then return {2} end
local epoch = redis.call('INCR', KEYS[2])
if epoch <= tonumber(ARGV[4]) then
  epoch = tonumber(ARGV[4]) + 1
  redis.call('SET', KEYS[2], epoch)
end
redis.call('SET', KEYS[1], epoch .. ' ' .. ARGV[1], 'PX', ARGV[2])
return {1, epoch}
"""
LEASE_COMMANDS = ("GET", "PTTL", "INCR", "SET", "PEXPIRE")
"""Every command the lease scripts run (the start's permission check queues each of them)."""

_highest_epoch: dict[tuple[str, str], int] = {}
"""The highest epoch this process has seen per Redis and lease key: kept across the :class:`Lease` objects of one process
(``livedata run`` makes a new runner after it lost the lease)."""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], 'released', 'PX', ARGV[2]) end
return 0
"""


def ha_keys(prefix: str = "") -> tuple[str, str, str]:
    """The lease, epoch and runners keys of a deployment prefix."""
    root = f"{validate_prefix(prefix)}:live_data" if prefix else "live_data"
    return f"{root}:{{ha}}:lease", f"{root}:{{ha}}:epoch", f"{root}:{{ha}}:runners"


def _identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _refusal(exc: Exception) -> bool:
    """Whether Redis refused a lease command for good (the user lacks a permission), not for now."""
    text = str(exc)
    return isinstance(exc, redis.exceptions.NoPermissionError) or (
        isinstance(exc, redis.exceptions.ResponseError)
        and ("NOPERM" in text or "no permissions" in text.lower() or "can't run this command" in text))


def _refused_error(exc: Exception, what: str) -> ConfigError:
    return ConfigError(
        f"Redis refused {what} ([ha]): {exc}. The runner's Redis user needs +eval and, on the lease keys "
        f"(~live_data:{{ha}}:* under the prefix), {' '.join('+' + c.lower() for c in LEASE_COMMANDS)} "
        "(docs/operations.md#access-control)")


def _holder(value: Any) -> tuple[int | None, str | None]:
    """``(epoch, identity)`` of a lease value, ``(None, None)`` when there is none."""
    if value is None:
        return None, None
    text = value.decode() if isinstance(value, bytes) else str(value)
    epoch, _, identity = text.partition(" ")
    return (int(epoch) if epoch.isdigit() else None), identity or None


class Lease:
    """This runner's part in the election: wait for the lease, hold it, give it back.

    :param topology: the runner's Redis.
    :param prefix: the deployment prefix: runners with the same one elect one leader.
    :param lease: seconds a lease lasts on the server without renewal.
    :param on_lost: called (once) when a held lease is lost: renewal refused, or not confirmed in time.
    :param clock: the monotonic clock (tests).
    """

    def __init__(self, topology: RedisTopology, prefix: str, lease: float, *, on_lost: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.topology = topology
        self.prefix = prefix
        self.lease = lease
        self.lease_ms = str(max(1, round(lease * 1000)))
        self.identity = _identity()
        self.keys = ha_keys(prefix)
        self._epoch_slot = (topology.describe(), self.keys[0])
        self.on_lost = on_lost
        self.clock = clock
        self.role = "standby"
        self.epoch: int | None = None
        """The epoch of this runner's lease while it leads (and after it lost it: the one it had)."""
        self.leader: str | None = None
        self.leader_epoch: int | None = None
        self.since = time.time()
        self.lost_reason: str | None = None
        self.refused: ConfigError | None = None
        """Set when Redis refused a lease command for good (a missing permission): the runner exits with it."""
        self._hold_off = 0.0  # monotonic: until then an absent lease may still be believed held by its last holder
        self._expires = 0.0  # monotonic: when the lease last seen held lapses unless renewed
        self._value = ""
        self._deadline = 0.0  # monotonic: holds() is true before it
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._ticking: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Lease({self.identity!r}, role={self.role!r}, epoch={self.epoch})"

    # -- the fence ---------------------------------------------------------------------------------------------

    def holds(self) -> bool:
        """Whether this runner may write as the leader now: it holds the lease, and its last renewal was sent less
        than ``HOLD_FRACTION * lease`` ago on its own monotonic clock. Cheap (one clock read): checked per batch."""
        return self.clock() < self._deadline

    # -- the election --------------------------------------------------------------------------------------

    def _redis(self) -> Any:
        if self._client is None:
            timeout = max(0.2, self.lease * RENEW_FRACTION)
            self._client = async_client(self.topology, socket_connect_timeout=timeout, socket_timeout=timeout)
        return self._client

    async def acquire(self, stopping: asyncio.Event) -> bool:
        """Wait as a standby until this runner holds the lease (``True``) or ``stopping`` is set (``False``).

        While waiting it connects to no broker and writes nothing but its own row in the runners hash.

        :raises ConfigError: Redis refused the lease script (the user lacks a permission it needs).
        """
        interval = self.lease * RENEW_FRACTION
        logged: tuple[int | None, str | None] | None = None
        failing = waiting = False
        while not stopping.is_set():
            sent = self.clock()
            floor = _highest_epoch.get(self._epoch_slot, 0)
            try:
                reply = await within(self._redis().eval(_ACQUIRE, 2, self.keys[0], self.keys[1], self.identity,
                                                        self.lease_ms, "1" if sent >= self._hold_off else "0",
                                                        str(floor)), interval * 2)  # fmt: skip
                failing = False
            except Exception as exc:
                reraise_if_cancelling()
                if _refusal(exc):
                    raise _refused_error(exc, "the lease script") from None
                if not failing:
                    log.warning("cannot reach Redis to check the lease (%s); still a standby", exc)
                failing = True
            else:
                received = self.clock()
                if reply[0] == 1:
                    self._took(int(reply[1]), sent, sent + self.lease * HOLD_FRACTION)
                    return True
                if reply[0] == 2:  # absent, but its last holder may not have stepped down yet
                    if not waiting and received < self._expires:  # it vanished before it lapsed: wait out its leader
                        self._hold_off = max(self._hold_off, received + self.lease * (HOLD_FRACTION + MARGIN))
                    if not waiting:
                        log.warning("the lease of %s vanished before it lapsed (Redis lost it?): taking it over "
                                    "%.1fs from now, once that leader has stepped down", self.leader,
                                    max(0.0, self._hold_off - received))  # fmt: skip
                    waiting = True
                else:
                    epoch, holder = _holder(reply[1])
                    ttl = int(reply[2]) / 1000 if int(reply[2]) >= 0 else self.lease
                    if holder == self.identity and epoch is not None:
                        # An earlier request of ours timed out here but ran on the server: the lease is ours. The
                        # server's expiry is at least `sent + ttl`; step down as early before it as always.
                        self._took(epoch, sent, sent + ttl - self.lease * (1 - HOLD_FRACTION))
                        return True
                    waiting = False
                    self.leader_epoch, self.leader = epoch, holder
                    self._seen(epoch)
                    self._expires = received + ttl
                    # The holder steps down (1 - HOLD_FRACTION) of a lease before the server's expiry, at the latest.
                    self._hold_off = max(self._hold_off, received + ttl - self.lease * (1 - HOLD_FRACTION - MARGIN))
                    if logged != (self.leader_epoch, self.leader):
                        logged = (self.leader_epoch, self.leader)
                        log.info("standby: %s leads (epoch %s); taking over when its lease of %gs lapses",
                                 self.leader, self.leader_epoch, self.lease)  # fmt: skip
                self._tick_soon()
            wake = sent + interval
            if self._hold_off > self.clock():
                wake = min(wake, self._hold_off)
            with contextlib.suppress(asyncio.TimeoutError):
                await within(stopping.wait(), max(0.0, wake - self.clock()))
        return False

    def _seen(self, epoch: int | None) -> None:
        if epoch is not None and epoch > _highest_epoch.get(self._epoch_slot, 0):
            _highest_epoch[self._epoch_slot] = epoch

    def _tick_soon(self) -> None:
        """Write this runner's row on a task of its own: a slow Redis must not delay an election or a renewal."""
        if self._ticking is None or self._ticking.done():
            self._ticking = asyncio.create_task(self._tick(), name="livedata-lease-row")

    def _took(self, epoch: int, sent: float, deadline: float) -> None:
        self.epoch = self.leader_epoch = epoch
        self._seen(epoch)
        self.leader = self.identity
        self.role = "leader"
        self.since = time.time()
        self._value = f"{epoch} {self.identity}"
        self._deadline = deadline
        log.warning("took the lease: leader with epoch %d (%s; lease %gs)", epoch, self.identity, self.lease)
        self._tick_soon()  # the row says "leader"; renewing starts without waiting for it

    def start_renewing(self) -> None:
        """Keep the lease: renew it every ``lease / 6`` seconds until :meth:`release`, calling ``on_lost`` at the
        instant it can no longer be trusted."""
        self._task = asyncio.create_task(self._renew_loop(), name="livedata-lease")

    async def _renew_loop(self) -> None:
        interval = self.lease * RENEW_FRACTION
        failing = False
        while True:
            now = self.clock()
            if now >= self._deadline:
                self._lose(f"no renewal was confirmed within {self.lease * HOLD_FRACTION:g}s")
                return
            sent = now
            try:
                renewed = await within(self._redis().eval(_RENEW, 1, self.keys[0], self._value, self.lease_ms),
                                       self._deadline - now)  # fmt: skip
            except Exception as exc:
                reraise_if_cancelling()
                if _refusal(exc):
                    self.refused = _refused_error(exc, "the lease renewal")
                    self._lose(f"Redis refused the renewal: {exc}")
                    return
                if not failing:
                    log.warning("could not renew the lease (%s); stepping down %.1fs from now unless a renewal "
                                "succeeds", exc, max(0.0, self._deadline - self.clock()))  # fmt: skip
                failing = True
            else:
                if not renewed:
                    self.leader_epoch, self.leader = None, None
                    self._lose("the lease is no longer this runner's (it lapsed and another runner may hold it)")
                    return
                failing = False
                # Only if no later renewal moved it further: a renewal's deadline counts from when it was sent.
                self._deadline = max(self._deadline, sent + self.lease * HOLD_FRACTION)
                self._tick_soon()
            delay = min(interval, self._deadline - self.clock())
            if delay > 0:
                await asyncio.sleep(delay)

    def _lose(self, why: str) -> None:
        self._deadline = 0.0
        if self.role != "leader":
            return
        self.role = "stepped_down"
        self.lost_reason = why
        log.error("lost the lease (epoch %s): %s; stopping streams and polls now", self.epoch, why)
        self.on_lost(why)

    async def release(self) -> None:
        """Stop renewing; give the lease back if this runner still holds it (a standby takes over at once), and
        remove this runner's row. Call it after the broker connections are closed."""
        held = self.holds()
        self._deadline = 0.0
        for task in (self._task, self._ticking):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = self._ticking = None
        if self._client is None:
            return
        with contextlib.suppress(Exception):
            if held and self._value:
                await within(self._redis().eval(_RELEASE, 1, self.keys[0], self._value, self.lease_ms), 1.0)
                log.info("gave the lease back (epoch %s)", self.epoch)
            await within(self._redis().hdel(self.keys[2], self.identity), 1.0)
        with contextlib.suppress(Exception):
            await self._client.aclose()
        self._client = None

    # -- what status shows ---------------------------------------------------------------------------------

    def row(self) -> dict[str, Any]:
        """This runner's row: identity, role, epoch, the leader it sees (and its epoch), since when, last seen."""
        return {"identity": self.identity, "role": self.role, "epoch": self.epoch, "leader": self.leader,
                "leader_epoch": self.leader_epoch, "lease": self.lease, "since": self.since,
                "seen": time.time()}  # fmt: skip

    async def _tick(self) -> None:
        """Write this runner's row, and drop rows of runners not seen for ``SEEN_FOR`` leases (best effort)."""
        try:
            client = self._redis()
            await within(client.hset(self.keys[2], self.identity, orjson.dumps(self.row())), self.lease)
            rows = await within(client.hgetall(self.keys[2]), self.lease)
            gone = [field for field, raw in rows.items() if _stale(raw)]
            if gone:
                await within(client.hdel(self.keys[2], *gone), self.lease)
        except Exception as exc:
            reraise_if_cancelling()
            log.debug("could not write this runner's row: %s", exc)


def _stale(raw: Any, now: float | None = None) -> bool:
    try:
        row = orjson.loads(raw)
        return (now or time.time()) - float(row["seen"]) > SEEN_FOR * float(row["lease"])
    except Exception:
        return True


def read_runners(client: Any, prefix: str = "") -> list[dict[str, Any]]:
    """The runners seen recently (sync redis-py ``client``), the leader first: each row as :meth:`Lease.row`
    wrote it, with ``leader`` set from the lease itself when one is held."""
    lease_key, _, runners_key = ha_keys(prefix)
    value = client.get(lease_key)
    rows = [orjson.loads(raw) for raw in client.hgetall(runners_key).values() if not _stale(raw)]
    epoch, holder = _holder(value)
    for row in rows:
        row["holds_lease"] = row["identity"] == holder
        if holder is not None:
            row["leader"], row["leader_epoch"] = holder, epoch
    return sorted(rows, key=lambda r: (not r["holds_lease"], r["identity"]))
