"""Reading what livedata publishes, for consumers such as Thor.

Payloads are JSON, so any Redis client can subscribe. With plain redis-py, skip the confirmation Redis sends
first for every ``SUBSCRIBE`` / ``PSUBSCRIBE`` (its ``data`` is the number of subscriptions, an int, not JSON):
``json.loads`` would raise ``TypeError`` on it::

    import json, redis

    r = redis.Redis()
    p = r.pubsub(ignore_subscribe_messages=True)  # without it, the first message is the subscribe confirmation
    p.subscribe("live_data:quotes:AAPL")
    for message in p.listen():
        quote = json.loads(message["data"])
        print(quote["symbol"], quote["bid"], quote["ask"])

These helpers add typed models, short channel specs, the latest value and reconnecting after a Redis restart::

    from livedata_core.redis_io.subscriber import subscribe, latest

    for message in subscribe("quotes:AAPL", "orders:*"):
        print(message.kind, message.identifier, message.data)   # data is a Quote, an Order, ...

    quote = latest("quotes", "AAPL")                               # the last published Quote, or None
    positions = book("positions", "12345678")                      # {symbol: Position} held now

Specs are ``<type>:<identifier>`` (``quotes:AAPL``) or patterns with ``*`` (``quotes:*``); the
``live_data:`` root and the deployment prefix are added for you.

``url`` may be a :class:`~livedata_core.redis_io.topology.RedisTopology`: with sentinels every function reads from
the current master (a subscription is made again on the new master after a failover, like after a restart). On a
cluster without ``sharded``, subscriptions go to the URL's node (plain ``PUBLISH`` reaches every node). With
``sharded``, :func:`subscribe` uses ``SSUBSCRIBE``, which has no patterns: a pattern is resolved to the channels
that have a latest key (``live_data:latest:...``, so ``[redis] latest`` must be on), looked up again every
:data:`SHARDED_RESCAN` seconds; a channel's first messages before it has a latest key and before the next look-up
are not seen (docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import attrs
import orjson
import redis

from ..channels import ROOT, book_key, latest_key, parse_channel, pattern
from ..models import MODEL_FOR_TYPE, from_dict, model_for
from .topology import RedisTopology, as_topology, async_pubsub_client, sync_client, sync_pubsub_client
from ..backoff import Backoff

__all__ = ["SHARDED_RESCAN", "Message", "asubscribe", "book", "latest", "subscribe"]

SHARDED_RESCAN = 5.0
"""Seconds between look-ups of the channels a pattern stands for, with sharded pub/sub."""

log = logging.getLogger("livedata.subscriber")


@attrs.frozen
class Message:
    """One published payload.

    :ivar kind: ``quotes``, ``positions``, ``balances``, ``orders`` or ``transactions``.
    :ivar identifier: the symbol or account id.
    :ivar channel: the full channel name.
    :ivar data: a model (or the plain dict with ``models=False``, or when it does not fit the model).
    """

    kind: str
    identifier: str
    channel: str
    data: Any


def _resolve_url(url: "str | RedisTopology | None") -> RedisTopology:
    # Checked here so that a typo or a missing TLS file is a ConfigError naming it, not a redis-py error later.
    return as_topology(url)


def _split(specs: tuple[str, ...], prefix: str) -> tuple[list[str], list[str]]:
    if not specs:
        raise ValueError("name at least one channel, for example 'quotes:AAPL' or 'quotes:*'")
    channels, patterns = [], []
    for spec in specs:
        full = pattern(spec, prefix)
        (patterns if any(c in full for c in "*?[") else channels).append(full)
    return channels, patterns


def _decode(message: dict[str, Any], prefix: str, models: bool) -> Message | None:
    if message.get("type") not in ("message", "pmessage", "smessage"):
        return None
    channel = message["channel"]
    channel = channel.decode() if isinstance(channel, bytes) else channel
    try:
        kind, identifier = parse_channel(channel, prefix)
        data = orjson.loads(message["data"])
    except ValueError as exc:
        log.warning("skipped a message on %s: %s", channel, exc)
        return None
    if models:
        try:
            data = from_dict(model_for(kind, data), data)
        except Exception as exc:  # a payload from a newer or foreign publisher: hand over the dict
            log.debug("payload on %s does not fit %s: %s", channel, kind, exc)
    return Message(kind, identifier, channel, data)


# Waits between reconnect attempts after Redis went away: from 0.1 s, doubling, up to 5 s.
RECONNECT_INITIAL, RECONNECT_MAX = 0.1, 5.0

def _no_retries(asynchronous: bool) -> dict[str, Any]:
    # redis-py's own retries would hide an outage for a while and then raise anyway; the loops below own the
    # waiting, so a dropped connection is reported to them at once.
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return {"retry": (AsyncRetry if asynchronous else Retry)(NoBackoff(), 0)}


def _lost(url: RedisTopology, exc: Exception, delay: float) -> None:
    log.warning("subscriber lost Redis at %s (%s); subscribing again in %.1fs", url.describe(), exc, delay)


def subscribe(*specs: str, url: "str | RedisTopology | None" = None, prefix: str = "", models: bool = True,
              on_reconnect: Callable[[], object] | None = None) -> Iterator[Message]:
    """Yield :class:`Message` for every payload published on the given channels or patterns (blocking).

    Redis keeps no pub/sub messages for a subscriber that is not connected: whatever is published while Redis is
    down or restarting, and until the subscription is back, is never delivered. The iterator reconnects on its
    own with backoff (0.1 s doubling up to 5 s) and subscribes again; ``on_reconnect`` is called each time it
    is subscribed again, which is the moment to catch up: :func:`latest` gives the current quote (and the last
    position, balance, order and transaction) of an identifier, :func:`book` an account's whole positions or
    balances, and the streams ``live_data:stream:orders:<account>`` / ``live_data:stream:transactions:<account>``
    hold every order state and transaction (read from the last entry seen with ``XRANGE``). Subscribing first and
    reading these afterwards loses nothing, though a change may then be seen twice.

    The first connection is not retried: a wrong URL or password raises ``redis.ConnectionError`` (or
    ``redis.AuthenticationError``) at once. A password refused on a reconnect raises too.

    ``break`` out of the loop (or ``close()`` the iterator) to stop; Ctrl-C stops it also while it waits for Redis.
    """
    channels, patterns = _split(specs, prefix)
    url = _resolve_url(url)
    if url.sharded:
        yield from _sharded(channels, patterns, url, prefix, models, on_reconnect)
        return
    client = sync_pubsub_client(url, **_no_retries(asynchronous=False))
    backoff = Backoff(RECONNECT_INITIAL, RECONNECT_MAX)
    subscribed_once = False
    try:
        while True:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                if channels:
                    pubsub.subscribe(*channels)
                if patterns:
                    pubsub.psubscribe(*patterns)
                if subscribed_once:
                    log.info("subscriber: subscribed again at %s", url.describe())
                    if on_reconnect is not None:
                        on_reconnect()
                subscribed_once = True
                backoff.reset()
                for raw in pubsub.listen():
                    message = _decode(raw, prefix, models)
                    if message is not None:
                        yield message
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if not subscribed_once or isinstance(exc, redis.AuthenticationError):
                    raise
                delay = backoff.next_delay()
                _lost(url, exc, delay)
                time.sleep(delay)
            finally:
                pubsub.close()
    finally:
        client.close()


async def asubscribe(*specs: str, url: "str | RedisTopology | None" = None, prefix: str = "", models: bool = True,
                     on_reconnect: Callable[[], object] | None = None) -> AsyncIterator[Message]:
    """Async version of :func:`subscribe`: reconnects the same way, and may miss the same messages (see there).

    ``on_reconnect`` may be a coroutine function. Cancelling the consuming task stops it, also while it waits for
    Redis.
    """
    channels, patterns = _split(specs, prefix)
    url = _resolve_url(url)
    if url.sharded:
        raise ValueError("sharded pub/sub (SSUBSCRIBE) is supported by subscribe(); asubscribe() needs sharded = false")
    client = async_pubsub_client(url, **_no_retries(asynchronous=True))
    backoff = Backoff(RECONNECT_INITIAL, RECONNECT_MAX)
    subscribed_once = False
    try:
        while True:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                if channels:
                    await pubsub.subscribe(*channels)
                if patterns:
                    await pubsub.psubscribe(*patterns)
                if subscribed_once:
                    log.info("subscriber: subscribed again at %s", url.describe())
                    if on_reconnect is not None:
                        result = on_reconnect()
                        if inspect.isawaitable(result):
                            await result
                subscribed_once = True
                backoff.reset()
                async for raw in pubsub.listen():
                    message = _decode(raw, prefix, models)
                    if message is not None:
                        yield message
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if not subscribed_once or isinstance(exc, redis.AuthenticationError):
                    raise
                delay = backoff.next_delay()
                _lost(url, exc, delay)
                await asyncio.sleep(delay)
            finally:
                await pubsub.aclose()
    finally:
        await client.aclose()


def _sharded(channels: list[str], patterns: list[str], url: RedisTopology, prefix: str, models: bool,
             on_reconnect: Callable[[], object] | None) -> Iterator[Message]:
    """:func:`subscribe` on a cluster with sharded pub/sub: SSUBSCRIBE to the channels, and to those the patterns
    stand for as found from the latest keys (again every SHARDED_RESCAN seconds)."""
    client = sync_client(url)
    backoff = Backoff(RECONNECT_INITIAL, RECONNECT_MAX)
    subscribed_once = reconnecting = False
    try:
        while True:
            pubsub = client.pubsub()
            subscribed: set[str] = set()
            try:
                rescan_at = 0.0
                while True:
                    if time.monotonic() >= rescan_at:
                        wanted = set(channels) | _channels_of(client, patterns, prefix)
                        new = sorted(wanted - subscribed)
                        if new:
                            pubsub.ssubscribe(*new)
                            subscribed.update(new)
                        rescan_at = time.monotonic() + SHARDED_RESCAN
                        subscribed_once = True
                        backoff.reset()
                        if reconnecting:
                            reconnecting = False
                            log.info("subscriber: subscribed again at %s", url.describe())
                            if on_reconnect is not None:
                                on_reconnect()
                    if not subscribed:
                        time.sleep(min(1.0, max(0.0, rescan_at - time.monotonic())))
                        continue
                    raw = pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=1.0)
                    if raw is not None:
                        message = _decode(raw, prefix, models)
                        if message is not None:
                            yield message
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if not subscribed_once or isinstance(exc, redis.AuthenticationError):
                    raise
                delay = backoff.next_delay()
                _lost(url, exc, delay)
                time.sleep(delay)
                reconnecting = True
            finally:
                pubsub.close()
    finally:
        client.close()


def _channels_of(client: Any, patterns: list[str], prefix: str) -> set[str]:
    """The channels matching ``patterns`` that have a latest key, from a SCAN of every node."""
    root = f"{prefix}:{ROOT}" if prefix else ROOT
    found: set[str] = set()
    for full in patterns:
        rest = full[len(root) + 1:]
        for key in client.scan_iter(match=f"{root}:latest:{rest}", count=1000):
            key = key.decode() if isinstance(key, bytes) else key
            found.add(f"{root}:{key[len(root) + len(':latest:'):]}")
    return found


def latest(kind: str, identifier: str, *, url: "str | RedisTopology | None" = None, prefix: str = "",
           models: bool = True) -> Any:
    """The last payload published on a channel (a model, or a dict with ``models=False``), or ``None``."""
    client = sync_client(_resolve_url(url))
    try:
        raw = client.get(latest_key(kind, identifier, prefix))
    finally:
        client.close()
    if raw is None:
        return None
    data = orjson.loads(raw)
    return from_dict(model_for(kind, data), data) if models else data


def book(kind: str, account_id: str, *, url: "str | RedisTopology | None" = None, prefix: str = "",
         models: bool = True) -> dict[str, Any]:
    """An account's whole current book: ``{symbol: Position}`` for ``positions`` (closed positions are gone) or
    ``{currency: Balance}`` for ``balances``; empty when nothing was published (or ``latest`` is off).

    To follow a book live without missing a change, subscribe to the channel first, then read the book, then
    apply the messages that arrive.
    """
    key = book_key(kind, account_id, prefix)
    client = sync_client(_resolve_url(url))
    try:
        raw = client.hgetall(key)
    finally:
        client.close()
    out: dict[str, Any] = {}
    for field, payload in sorted(raw.items()):
        data = orjson.loads(payload)
        out[field.decode()] = from_dict(MODEL_FOR_TYPE[kind], data) if models else data
    return out
