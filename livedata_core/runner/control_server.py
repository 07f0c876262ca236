"""The runner's side of live control: listen on the control channel, obey validated commands, store status."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from ..channels import control_channel, status_key
from ..redis_io.control import MAX_COMMAND_BYTES, command_id, reply_channel, validate_command
from ..errors import LivedataError
from ..plugin_kit.streaming import StreamStats
from ..logs import mask_secrets
from ..redis_io.topology import RedisTopology, async_client, async_pubsub_client
from ..backoff import Backoff
from ..aio_tools import reraise_if_cancelling, within

__all__ = ["ControlServer"]


def _dumps(data: Any) -> bytes:
    # Plugins put what they like in ctx.status; anything JSON has no type for is shown as text.
    return orjson.dumps(data, default=str)

log = logging.getLogger("livedata.runner.control")


class ControlServer:
    """Subscribe to ``live_data:control`` and answer commands; write status to ``live_data:status``.

    :param url: a Redis URL or a :class:`~livedata_core.redis_io.topology.RedisTopology` (with sentinels the
        listener follows the master: after a failover it subscribes again on the new one).
    :param handler: ``await handler(command_dict)`` returns the result or raises ``LivedataError``/``ValueError``.
    :param status: returns the current status dict.
    """

    def __init__(
        self,
        url: str | RedisTopology,
        prefix: str,
        handler: Callable[[dict[str, Any]], Awaitable[Any]],
        status: Callable[[], dict[str, Any]],
        status_interval: float = 1.0,
    ) -> None:
        self.prefix = prefix
        self.handler = handler
        self.status = status
        self.status_interval = status_interval
        self.redis = async_client(url, socket_connect_timeout=3, socket_timeout=5)
        # On a cluster, commands and replies go through one node (see redis_topology.async_pubsub_client).
        self.pubsub_redis = (async_pubsub_client(url, socket_connect_timeout=3, socket_timeout=5)
                             if isinstance(url, RedisTopology) and url.cluster else self.redis)  # fmt: skip
        self.ready = asyncio.Event()
        self.refused = 0
        """Commands refused so far (bad JSON, a bad field): logged like skips, the first few then every 1000th."""
        self._tasks: set[asyncio.Task[None]] = set()
        self.fence: Callable[[], bool] | None = None
        """With a hot standby (runner/ha), whether this runner still holds the lease: a runner that lost it answers
        no command and stores no status (the new leader's would be overwritten)."""

        self.status_ttl = 0.0
        """Seconds the stored status outlives this runner at least (with ``[ha]``: until a standby has taken over and
        read its symbols, see :mod:`livedata_core.runner.ha.handover`)."""

    def may_write(self) -> bool:
        return self.fence is None or self.fence()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._listen())
            group.create_task(self._write_status())

    async def close(self, final_status: dict[str, Any] | None = None) -> None:
        for task in list(self._tasks):
            task.cancel()
        if final_status is not None and self.may_write():
            with contextlib.suppress(Exception):
                await within(self._store_status(final_status), 1.0)
        for client in {id(self.redis): self.redis, id(self.pubsub_redis): self.pubsub_redis}.values():
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _listen(self) -> None:
        channel = control_channel(self.prefix)
        backoff = Backoff(0.2, 5.0)
        while True:
            pubsub = self.pubsub_redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                self.ready.set()
                backoff.reset()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        raw = message["data"]
                        if len(raw) > MAX_COMMAND_BYTES:  # not even parsed: nothing in it can be trusted
                            log.warning("refused a control command: %d bytes is longer than a command can be "
                                        "(%d bytes)", len(raw), MAX_COMMAND_BYTES)  # fmt: skip
                            continue
                        task = asyncio.create_task(self._answer(raw))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reraise_if_cancelling()
                self.ready.clear()
                log.warning("control channel lost (%s); listening again soon", exc)
                await asyncio.sleep(backoff.next_delay())
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _answer(self, raw: bytes) -> None:
        reply: dict[str, Any]
        reply_to = None
        request_id = None
        try:
            data = orjson.loads(raw)
            # Known before the rest is checked, so that a refused command is answered, not left to time out; only
            # an id and a channel within bounds are echoed or answered on.
            request_id = command_id(data)
            reply_to = reply_channel(data, self.prefix)
            command = validate_command(data, self.prefix)
            if not self.may_write():
                return  # lost the lease while the command was on its way: the new leader answers it
            result = await self.handler(command)
            reply = {"id": request_id, "ok": True, "result": result}
        except (orjson.JSONDecodeError, ValueError, LivedataError) as exc:
            self.refused += 1
            n = self.refused
            # Anyone who can publish on the channel can send junk: the log must not grow with it.
            if n <= StreamStats.LOG_FIRST or n % StreamStats.LOG_EVERY == 0:
                more = f"; from now on every {StreamStats.LOG_EVERY}th is logged" if n == StreamStats.LOG_FIRST else ""
                log.warning("refused control command (%d so far%s): %s", n, more, exc)
            reply = {"id": request_id, "ok": False, "error": mask_secrets(str(exc))}
        except Exception as exc:  # never let a command kill the listener
            log.exception("control command failed")
            reply = {"id": request_id, "ok": False, "error": mask_secrets(f"{type(exc).__name__}: {exc}")}
        if reply_to and not self.may_write():
            # Lost the lease while the command ran: its answer would say it was done by the leader, and the
            # new leader does not have it. Unanswered, the client times out and can ask again.
            log.warning("lost the lease while answering a control command: no answer sent (ask again)")
            return
        if reply_to:
            try:
                await self.pubsub_redis.publish(reply_to, _dumps(reply))
            except Exception as exc:
                reraise_if_cancelling()
                log.warning("could not answer a control command: %s", exc)

    async def _store_status(self, status: dict[str, Any]) -> None:
        ttl = max(5, int(self.status_interval * 5), math.ceil(self.status_ttl))
        await self.redis.set(status_key(self.prefix), _dumps(status), ex=ttl)

    async def _write_status(self) -> None:
        failing = False
        while True:
            try:
                if self.may_write():
                    await self._store_status(self.status())
                failing = False
            except Exception as exc:
                reraise_if_cancelling()
                if not failing:  # once per outage, not every second
                    log.warning("could not store the status: %s", exc)
                failing = True
            await asyncio.sleep(self.status_interval)


