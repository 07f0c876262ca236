"""Handlers for ``manage.py livedata_listen``, and the listener that calls them.

Register handlers in a ``livedata_handlers.py`` module of any installed app (found like ``admin.py``)::

    from livedata_django.listen import on

    @on("positions:*")
    def keep_positions(message):          # a livedata_core.redis_io.subscriber.Message; message.data is a Position
        Position.objects.update_or_create(account_id=message.identifier, symbol=message.data.symbol,
                                          defaults={"quantity": message.data.quantity})

A spec is ``<type>:<identifier>`` with ``*`` wildcards (``quotes:AAPL``, ``orders:*``). Handlers run one at a
time, in the order messages arrive, on one worker thread of their own where the ORM may be used; around each
message the listener does what Django does around a request (``close_old_connections``), so a database restart
or ``CONN_MAX_AGE`` never leaves a broken connection behind. A handler that raises is logged and counted; the
next message is handled as usual.

Delivery is at least once: after every (re)subscription the listener catches up on what it may have missed
while it or Redis was down: every entry of the books (``positions``, ``balances``), the latest quote of each
symbol (``quotes``), and the stream entries (``orders``, ``transactions``) after the last one it handled,
remembered in Django's cache (``LIVEDATA["LISTEN_CHECKPOINTS"]``, a cache alias; with a cache that survives a
restart, a restarted listener resumes where it stopped). Handlers must therefore be idempotent (upserts keyed
by account and symbol, order id and status): a message may arrive twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fnmatch
import logging
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import orjson
import redis
import redis.asyncio as aioredis
from django.db import close_old_connections, connections
from django.utils.module_loading import autodiscover_modules

from livedata_core.channels import CHANNEL_TYPES, ROOT, parse_channel, pattern
from livedata_core.models import MODEL_FOR_TYPE, from_dict
from livedata_core.redis_io.url import mask_url
from livedata_core.backoff import Backoff
from livedata_core.redis_io.subscriber import Message

__all__ = ["HANDLER_MODULE", "Listener", "Registry", "autodiscover", "on", "registry"]

log = logging.getLogger("livedata.django.listen")

HANDLER_MODULE = "livedata_handlers"
STREAM_TYPES = ("orders", "transactions")
BOOK_TYPES = ("positions", "balances")
SCAN_COUNT = 500
REPLAY_BATCH = 500
CHECKPOINT_PREFIX = "livedata_listen:checkpoint:"


def _short(spec: str) -> str:
    """``positions:*`` for ``positions:*`` and ``live_data:positions:*``; ``ValueError`` if it names no type."""
    pattern(spec)  # checks the type
    return spec[len(ROOT) + 1 :] if spec.startswith(ROOT + ":") else spec


@attrs.frozen
class Handler:
    spec: str
    func: Callable[[Message], Any]

    def matches(self, kind: str, identifier: str) -> bool:
        return fnmatch.fnmatchcase(f"{kind}:{identifier}", self.spec)


class Registry:
    """Which handlers get which channels."""

    def __init__(self) -> None:
        self.handlers: list[Handler] = []

    def on(self, *specs: str) -> Callable[[Callable[[Message], Any]], Callable[[Message], Any]]:
        """Decorator: call the function with every message on a channel matching one of ``specs``."""
        if not specs:
            raise ValueError("name at least one channel spec, for example @on('positions:*')")
        short = [_short(spec) for spec in specs]

        def register(func: Callable[[Message], Any]) -> Callable[[Message], Any]:
            for spec in short:
                if not any(h.spec == spec and h.func is func for h in self.handlers):  # a module imported twice
                    self.handlers.append(Handler(spec, func))
            return func

        return register

    def specs(self) -> list[str]:
        """Every registered spec, once."""
        return list(dict.fromkeys(h.spec for h in self.handlers))

    def matching(self, kind: str, identifier: str) -> list[Handler]:
        return [h for h in self.handlers if h.matches(kind, identifier)]


registry = Registry()
on = registry.on


def autodiscover() -> Registry:
    """Import ``livedata_handlers`` of every installed app; return the registry they filled."""
    autodiscover_modules(HANDLER_MODULE)
    return registry


def _parts(spec: str) -> tuple[list[str], str]:
    """The types and the identifier pattern of a short spec."""
    kind, _, identifier = spec.partition(":")
    return [k for k in CHANNEL_TYPES if fnmatch.fnmatchcase(k, kind)], identifier or "*"


class Listener:
    """Subscribe to the registry's specs, dispatch every message to its handlers, reconnect and catch up.

    :param checkpoints: a Django cache for the last stream entry handled per stream (``None``: this process only).
    """

    def __init__(self, registry: Registry, url: str, prefix: str = "", *, checkpoints: Any = None,
                 specs: Iterable[str] | None = None) -> None:  # fmt: skip
        self.registry = registry
        self.url = url
        self.prefix = prefix
        self.root = f"{prefix}:{ROOT}" if prefix else ROOT
        self.specs = [_short(s) for s in specs] if specs else registry.specs()
        if not self.specs:
            raise ValueError(f"no handlers are registered: add @on('positions:*') handlers to a {HANDLER_MODULE}.py "
                             "module of an installed app")  # fmt: skip
        self.checkpoints = checkpoints
        self.handled = 0
        self.failed = 0
        self.reconnects = 0
        self.subscribed = asyncio.Event()
        self._seen: dict[str, str] = {}  # stream key -> last entry id handled
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="livedata-listen")

    # -- running -------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Listen until cancelled. The first connection must succeed (a wrong URL is an error at once); later
        losses are retried with backoff (0.1 s doubling to 5 s)."""
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        client = aioredis.Redis.from_url(self.url, retry=Retry(NoBackoff(), 0))
        backoff = Backoff(0.1, 5.0)
        connected_once = False
        try:
            while True:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                try:
                    await self._subscribe(pubsub)
                    if connected_once:
                        self.reconnects += 1
                        log.info("livedata_listen: subscribed again at %s", mask_url(self.url))
                    connected_once = True
                    await self._catch_up(client)
                    self.subscribed.set()
                    backoff.reset()
                    async for raw in pubsub.listen():
                        message = self._decode(raw)
                        if message is not None:
                            await self._dispatch(message, raw["data"], client)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    self.subscribed.clear()
                    if not connected_once or isinstance(exc, redis.AuthenticationError):
                        raise
                    delay = backoff.next_delay()
                    log.warning("livedata_listen lost Redis at %s (%s); subscribing again in %.1fs",
                                mask_url(self.url), exc, delay)  # fmt: skip
                    await asyncio.sleep(delay)
                finally:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
            await asyncio.get_running_loop().run_in_executor(self._worker, connections.close_all)
            self._worker.shutdown(wait=False)

    async def _subscribe(self, pubsub: Any) -> None:
        full = [pattern(spec, self.prefix) for spec in self.specs]
        channels = [c for c in full if not any(ch in c for ch in "*?[")]
        patterns = [c for c in full if c not in channels]
        if channels:
            await pubsub.subscribe(*channels)
        if patterns:
            await pubsub.psubscribe(*patterns)

    def _decode(self, raw: dict[str, Any]) -> Message | None:
        if raw.get("type") not in ("message", "pmessage"):
            return None
        name = raw["channel"].decode() if isinstance(raw["channel"], bytes) else raw["channel"]
        try:
            kind, identifier = parse_channel(name, self.prefix)
            return self._message(kind, identifier, name, raw["data"])
        except ValueError as exc:
            log.warning("livedata_listen skipped a message on %s: %s", name, exc)
            return None

    @staticmethod
    def _message(kind: str, identifier: str, name: str, payload: bytes) -> Message:
        data = orjson.loads(payload)
        try:
            data = from_dict(MODEL_FOR_TYPE[kind], data)
        except Exception as exc:  # a payload from a newer publisher: hand over the dict
            log.debug("payload on %s does not fit %s: %s", name, kind, exc)
        return Message(kind, identifier, name, data)

    # -- handling, on the worker thread --------------------------------------------------------------------

    async def _dispatch(self, message: Message, payload: bytes, client: Any) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._worker, self._handle, message)
        if message.kind in STREAM_TYPES:
            await self._advance(client, message, payload)

    def _handle(self, message: Message) -> None:
        close_old_connections()  # as Django does before a request: drop connections that broke or aged out
        try:
            for handler in self.registry.matching(message.kind, message.identifier):
                try:
                    handler.func(message)
                    self.handled += 1
                except Exception:
                    self.failed += 1
                    log.exception("livedata_listen handler %s failed on %s", getattr(handler.func, "__qualname__",
                                                                                     handler.func), message.channel)
        finally:
            close_old_connections()

    # -- catching up ---------------------------------------------------------------------------------------

    async def _catch_up(self, client: Any) -> None:
        """Everything that may have been missed: books, latest quotes, and stream entries since the checkpoint."""
        replayed = 0
        for spec in self.specs:
            kinds, identifier = _parts(spec)
            for kind in kinds:
                if kind in BOOK_TYPES:
                    async for key in client.scan_iter(match=f"{self.root}:book:{kind}:{identifier}", count=SCAN_COUNT):
                        account = key.decode().removeprefix(f"{self.root}:book:{kind}:")
                        for payload in (await client.hgetall(key)).values():
                            replayed += await self._replay(kind, account, payload)
                elif kind == "quotes":
                    async for key in client.scan_iter(match=f"{self.root}:latest:quotes:{identifier}", count=SCAN_COUNT):
                        payload = await client.get(key)
                        if payload is not None:
                            symbol = key.decode().removeprefix(f"{self.root}:latest:quotes:")
                            replayed += await self._replay(kind, symbol, payload)
                else:
                    async for key in client.scan_iter(match=f"{self.root}:stream:{kind}:{identifier}", count=SCAN_COUNT):
                        replayed += await self._replay_stream(client, kind, key.decode())
        if replayed:
            log.info("livedata_listen caught up on %d message(s)", replayed)

    async def _replay(self, kind: str, identifier: str, payload: bytes) -> int:
        name = f"{self.root}:{kind}:{identifier}"
        try:
            message = self._message(kind, identifier, name, payload)
        except ValueError as exc:
            log.warning("livedata_listen skipped an entry of %s: %s", name, exc)
            return 0
        await asyncio.get_running_loop().run_in_executor(self._worker, self._handle, message)
        return 1

    async def _replay_stream(self, client: Any, kind: str, key: str) -> int:
        identifier = key.removeprefix(f"{self.root}:stream:{kind}:")
        last = await self._checkpoint(key)
        if last is None:  # never handled this stream: start at its end, history is not "missed"
            newest = await client.xrevrange(key, count=1)
            await self._remember(key, newest[0][0].decode() if newest else "0-0")
            log.info("livedata_listen: no checkpoint for %s yet; handling its entries from now on", key)
            return 0
        count = 0
        while True:
            entries = await client.xrange(key, min=f"({last}", count=REPLAY_BATCH)
            if not entries:
                return count
            for entry_id, fields in entries:
                last = entry_id.decode()
                if b"data" in fields:
                    count += await self._replay(kind, identifier, fields[b"data"])
                await self._remember(key, last)

    async def _advance(self, client: Any, message: Message, payload: bytes) -> None:
        """After a live order or transaction: remember its stream entry, so a catch-up does not repeat it."""
        key = message.channel.replace(f"{self.root}:", f"{self.root}:stream:", 1)
        try:
            for entry_id, fields in await client.xrevrange(key, count=5):
                if fields.get(b"data") == payload:
                    await self._remember(key, entry_id.decode())
                    return
        except redis.RedisError:
            pass  # the next catch-up replays it: at least once

    async def _checkpoint(self, key: str) -> str | None:
        if key in self._seen:
            return self._seen[key]
        if self.checkpoints is None:
            return None
        loop = asyncio.get_running_loop()
        value = await loop.run_in_executor(self._worker, self.checkpoints.get, CHECKPOINT_PREFIX + key)
        if isinstance(value, str):
            self._seen[key] = value
        return self._seen.get(key)

    async def _remember(self, key: str, entry_id: str) -> None:
        if _newer(entry_id, self._seen.get(key)):
            self._seen[key] = entry_id
            if self.checkpoints is not None:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._worker, self.checkpoints.set, CHECKPOINT_PREFIX + key, entry_id, None)


def _newer(entry_id: str, than: str | None) -> bool:
    if than is None:
        return True
    a, _, b = entry_id.partition("-")
    c, _, d = than.partition("-")
    return (int(a), int(b or 0)) > (int(c), int(d or 0))
