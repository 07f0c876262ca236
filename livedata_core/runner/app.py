"""The runner: drives every configured broker and keeps data flowing into Redis until stopped."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from .ops.health import OpsServer
from .ops.staleness import StalenessWatch
from ..redis_io.publisher import make_publisher
from ..plugin_kit.tokens import TokenStore, resolve_token_store
from .broker_runtime import CLOSE_TIMEOUT, DRAIN_TIMEOUT, BrokerRuntime
from .config import RunnerConfig
from .event_loop import running_loop_name
from .control_server import ControlServer
from .ha import Lease
from .ha.handover import adopt_symbols
from .instances import Instance, make_contexts, plan_instances
from .owners import AccountOwners
from .permissions import check_permissions
from .poller import AccountPoller
from ..aio_tools import within

__all__ = ["EXPIRE_SETTING", "Runner"]

log = logging.getLogger("livedata.runner")

EXPIRE_SETTING = "expire_after"
"""A field of a broker's settings class by which the broker declares its data ephemeral (the demo does): every
latest key, book hash and stream written for it expires that many seconds after its last write."""


class Runner:
    """Run broker instances into Redis.

    Each ``[brokers.NAME]`` table is an *instance* of a plugin (several may be of one plugin: two Schwab logins),
    with its own context, tokens, stream, polls and status row, addressed by its name. Building a ``Runner`` checks
    the configuration against the installed plugins (unknown plugin, bad symbol, bad setting, a login link to no
    such instance, more instances than a plugin allows, one account configured for two logins: see
    :func:`~livedata_core.runner.instances.plan_instances`; :class:`~livedata_core.errors.ConfigError`).
    :meth:`run` returns after :meth:`stop`, once queued data is flushed and broker connections are closed.

    A broker whose settings have an ``expire_after`` field (:data:`EXPIRE_SETTING`) declares its data
    ephemeral: what the runner writes to Redis for it expires that many seconds after its last write
    (:meth:`AsyncPublisher.expire <livedata_core.redis_io.publisher.AsyncPublisher.expire>`), so a demo price never stays
    behind as a symbol's current value. Messages on the channels are the same.

    :param token_store: one store for every instance (tests, applications; each instance keeps its tokens under
        its own key, ``ctx.token_key``); by default each instance gets the store
        :func:`livedata_core.plugin_kit.tokens.resolve_token_store` picks for it.
    :param clock: the wall clock that decides whether a symbol's market is open (default ``time.time``; tests set
        the day and hour). With ``config.metrics``, :attr:`ops` serves ``/metrics``, ``/healthz`` and ``/readyz``
        while :meth:`run` runs (docs/operations.md).
    """

    def __init__(
        self, config: RunnerConfig, *, token_store: TokenStore | None = None, clock: Callable[[], float] | None = None
    ) -> None:
        self.config = config
        self.publisher = make_publisher(
            config.redis.topology,
            prefix=config.redis.prefix,
            latest=config.redis.latest,
            streams=config.redis.streams,
            stream_maxlen=config.redis.stream_maxlen,
            bars_maxlen=config.redis.bars_maxlen,
        )
        self.instances = plan_instances(config.brokers)
        # Configured accounts are owned by their instance's login from the start (plan_instances refused overlaps).
        self.owners = AccountOwners()
        for instance in self.instances.values():
            for account in instance.config.accounts or ():
                self.owners.claim(account, instance.login_name, instance.name)

        def tokens_for(instance: Instance) -> TokenStore:
            if token_store is not None:
                return token_store
            return resolve_token_store(instance.name, plugin=instance.broker.name)

        contexts = make_contexts(self.instances, tokens_for)
        self.runtimes: dict[str, BrokerRuntime] = {}
        bar_owners: dict[str, str] = {}  # one instance per bars symbol, configured or subscribed live
        for name, instance in self.instances.items():
            self.runtimes[name] = BrokerRuntime(
                instance.broker, instance.config, self.publisher, config.backoff, ctx=contexts[name], owners=self.owners,
                bar_owners=bar_owners,
            )
            expire_after = getattr(self.runtimes[name].ctx.settings, EXPIRE_SETTING, None)
            if expire_after is not None:
                try:
                    self.publisher.expire(name, expire_after)
                except ValueError as exc:
                    raise ConfigError(f"brokers.{name}.{EXPIRE_SETTING}: {exc}") from None
        self.pollers = {name: AccountPoller(rt) for name, rt in self.runtimes.items()}
        self.control = ControlServer(
            config.redis.topology, config.redis.prefix, self._handle_command, self.status, config.status_interval
        )
        # Per-symbol staleness (checks each instance's market_hours against the session classes: ConfigError).
        self.staleness = StalenessWatch(self.runtimes, config.market_hours, self._announce, config.redis.prefix,
                                        clock=clock or time.time)  # fmt: skip
        self.ops = OpsServer(self, config.metrics.host, config.metrics.port) if config.metrics is not None else None
        self.recorder = None
        if config.record_dir is not None:
            from ..recording.writer import Recorder

            self.recorder = Recorder(config.record_dir)
            for name, rt in self.runtimes.items():
                rt.recorder = self.recorder.instance(name, rt.broker.name, _plugin_redaction(rt.broker),
                                                     settings=_jsonable(rt.config.settings))
        self._stop = asyncio.Event()
        self.started_at: float | None = None
        self.event_loop: str | None = None
        """``"uvloop"`` or ``"asyncio"``: the loop :meth:`run` runs on (``None`` before it runs)."""
        self.ready = asyncio.Event()
        self.lost_lease: str | None = None
        """Why this runner stopped leading (``[ha]``): it lost its lease, and :meth:`run` returned without being
        stopped; ``livedata run`` then starts again as a standby."""
        self.ha = (Lease(config.redis.topology, config.redis.prefix, config.ha.lease, on_lost=self._lose_lease)
                   if config.ha is not None else None)  # fmt: skip
        if config.ha is not None:
            self.control.status_ttl = 3 * config.ha.lease  # a standby reads the symbols in it when it takes over

    def __repr__(self) -> str:
        return f"Runner(brokers={sorted(self.runtimes)}, redis={self.config.redis.topology.describe()!r})"

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start publishing, every broker's stream and polls, and live control; return after :meth:`stop`.

        With ``[ha]``, it first waits as a standby until it holds the lease (connecting to no broker and
        publishing nothing), and returns when it loses the lease (:attr:`lost_lease` says why).

        :raises PublishError: Redis is not reachable at start (later outages are ridden out).
        :raises ConfigError: the metrics port cannot be listened on, or the Redis user lacks a permission the
            runner needs (named: :func:`~livedata_core.runner.permissions.check_permissions`).
        """
        if self.ops is not None:
            await self.ops.start()  # first: /healthz answers (503) while Redis is still awaited
        try:
            await check_permissions(self.config)
            if self.ha is not None:
                if not await self.ha.acquire(self._stop):
                    await self.ha.release()
                    if self.ops is not None:
                        await self.ops.close()
                    return
                # The fence: nothing is written once the lease can no longer be trusted (lease.py).
                self.publisher.fence = self.control.fence = self.ha.holds
                self.publisher.set_epoch(self.ha.epoch or 0)
                self.ha.start_renewing()
                await adopt_symbols(self.control.redis, self.config.redis.prefix, self.runtimes)
            await self.publisher.start()
        except BaseException:
            if self.ops is not None:
                await self.ops.close()
            if self.ha is not None:
                await self.ha.release()
            raise
        self.started_at = time.time()
        self.event_loop = running_loop_name()
        if self.recorder is not None:
            self.recorder.start()
            log.info("recording every instance's frames and REST answers into %s", self.recorder.directory)
        log.info("publishing to %s (prefix %r)", self.config.redis.topology.describe(), self.config.redis.prefix)
        tasks: list[asyncio.Task[Any]] = []
        for name, rt in self.runtimes.items():
            if rt.broker.has("stream"):
                tasks.append(asyncio.create_task(rt.run_stream(), name=f"stream-{name}"))
            tasks.append(asyncio.create_task(self._run_poller(name), name=f"poll-{name}"))
        tasks.append(asyncio.create_task(self.control.run(), name="control"))
        tasks.append(asyncio.create_task(self.staleness.run(), name="staleness"))
        self.ready.set()
        try:
            await self._stop.wait()
        finally:
            await self._shutdown(tasks)
        if self.ha is not None and self.ha.refused is not None:
            raise self.ha.refused  # a renewal Redis refuses for good (a permission): not a lease to wait for again

    async def _run_poller(self, name: str) -> None:
        try:
            await self.pollers[name].run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("account polling of %s stopped", name)

    async def _announce(self, channel: str, payload: bytes) -> None:
        if self.control.may_write():
            await self.control.redis.publish(channel, payload)

    def stop(self) -> None:
        """Ask :meth:`run` to flush, close connections and return. Safe to call from a signal handler."""
        self._stop.set()
        for rt in self.runtimes.values():
            rt.stop()

    def _lose_lease(self, why: str) -> None:
        # The publisher and the control server are fenced already (Lease.holds is false): stop reading too, and
        # drop the broker connections now (a standby may log in 0.4 lease from now), and the publisher's socket
        # with whatever asyncio still buffers for Redis (written before the fence, it must not arrive later).
        self.lost_lease = why
        self._stop.set()
        for rt in self.runtimes.values():
            rt.abort()
        self.publisher.abort()

    async def _shutdown(self, tasks: list[asyncio.Task[Any]]) -> None:
        deadline = self.config.shutdown_timeout
        for task in tasks:
            task.cancel()
        # Streams close politely (LOGOUT) and hand over buffered account events in their own finally blocks
        # while being cancelled; that has its own bounds (CLOSE_TIMEOUT + DRAIN_TIMEOUT), which this wait
        # covers. asyncio.wait (not wait_for) so a task that ignores cancellation cannot hold up the exit.
        wait = max(deadline * 0.6, CLOSE_TIMEOUT + DRAIN_TIMEOUT + 0.5)
        _, stuck = await asyncio.wait(tasks, timeout=wait)
        for task in stuck:
            where = io.StringIO()
            task.print_stack(limit=8, file=where)
            log.warning("task %s did not stop within %.1fs; whatever it publishes later is logged, not sent. %s",
                        task.get_name(), wait, where.getvalue())
        for name, rt in self.runtimes.items():
            if rt.broker.has_hook("shutdown"):
                try:
                    await within(rt.broker.call("shutdown", ctx=rt.ctx), 2.0)
                except Exception as exc:
                    log.warning("shutdown of %s failed: %s", name, exc)
        # A runner that lost its lease sends nothing more (fenced): its flush would only wait for the timeout.
        lost = await self.publisher.close(timeout=0.1 if self.lost_lease else max(deadline - wait, 1.0))
        await self.control.close(self.status())
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.close)
        if self.ha is not None:
            await self.ha.release()  # after the broker connections are closed: a standby takes over now
        if self.ops is not None:
            await self.ops.close()
        if lost:
            log.error("%d account events could not be published before exit (logged above)", lost)
        log.info("stopped")

    # -- live control --------------------------------------------------------------------------------------

    def _runtime(self, instance: str) -> BrokerRuntime:
        try:
            return self.runtimes[instance]
        except KeyError:
            raise ConfigError(
                f"instance {instance!r} is not running here; running: {', '.join(sorted(self.runtimes))}"
            ) from None

    async def subscribe(self, instance: str, symbols: list[str], kind: str = "quotes") -> dict[str, list[str]]:
        """Stream more symbols (their quotes, or their ``bars`` or ``depth``) from a running instance (its
        ``[brokers.NAME]`` name)."""
        return await self._runtime(instance).subscribe(symbols, kind)

    async def unsubscribe(self, instance: str, symbols: list[str], kind: str = "quotes") -> dict[str, list[str]]:
        """Stop streaming symbols (of ``kind``) from a running instance."""
        return await self._runtime(instance).unsubscribe(symbols, kind)

    async def _handle_command(self, command: dict[str, Any]) -> Any:
        name = command["command"]
        if name == "subscribe":
            return await self.subscribe(command["broker"], command["symbols"], command.get("kind", "quotes"))
        if name == "unsubscribe":
            return await self.unsubscribe(command["broker"], command["symbols"], command.get("kind", "quotes"))
        if name == "chain":
            return await self._runtime(command["broker"]).chain(command["underlying"], command.get("expiration"),
                                                                command.get("strikes"))  # fmt: skip
        if name == "unchain":
            return await self._runtime(command["broker"]).unchain(command["underlying"])
        if name == "status":
            return self.status()
        return {"pong": time.time()}  # "ping": validate_command lets nothing else through

    def status(self) -> dict[str, Any]:
        """Everything ``livedata status`` shows, as a JSON-able dict."""
        stats = self.publisher.stats
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "event_loop": self.event_loop,
            "now": time.time(),
            "redis": self.config.redis.topology.describe(),
            "prefix": self.config.redis.prefix,
            "publisher": {
                "connected": stats.connected,
                "published": stats.published,
                "conflated": stats.conflated,
                "refused": stats.refused,
                "pending": self.publisher.pending,
                "errors": stats.errors,
                "reconnects": stats.reconnects,
                "unreplicated": stats.unreplicated,
                "last_error": stats.last_error,
            },
            "brokers": {name: rt.snapshot() for name, rt in self.runtimes.items()},
            "metrics": f"{self.ops.url}/metrics" if self.ops is not None else None,
            "ha": self.ha.row() if self.ha is not None else None,
        }




def _plugin_redaction(broker: Any) -> Callable[[str, str], str] | None:
    """The plugin's ``redact_recording`` hook as ``redact(kind, text)``, or ``None`` when it has none."""
    if not broker.has_hook("redact_recording"):
        return None
    return lambda kind, text: broker.call_sync("redact_recording", kind=kind, text=text)


def _jsonable(table: dict[str, Any]) -> dict[str, Any]:
    """A settings table as JSON can carry it (TOML dates and times as text)."""
    import orjson

    return orjson.loads(orjson.dumps(table, default=str))
