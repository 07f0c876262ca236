"""Reading what livedata publishes, for consumers such as Thor.

A plain redis-py subscriber works without any of this (``json.loads(message['data'])``). These helpers add
typed models, short channel specs and the latest value::

    from livedata_core.subscriber import subscribe, latest

    for message in subscribe("quotes:AAPL", "orders:*"):
        print(message.kind, message.identifier, message.data)   # data is a Quote, an Order, ...

    quote = latest("quotes", "AAPL")                               # the last published Quote, or None
    positions = book("positions", "12345678")                      # {symbol: Position} held now

Specs are ``<type>:<identifier>`` (``quotes:AAPL``) or patterns with ``*`` (``quotes:*``); the
``live_data:`` root and the deployment prefix are added for you.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import attrs
import orjson
import redis
import redis.asyncio as aioredis

from .channels import book_key, latest_key, parse_channel, pattern
from .models import MODEL_FOR_TYPE, from_dict
from .redis_url import redis_url_from_env

__all__ = ["Message", "asubscribe", "book", "latest", "subscribe"]

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


def _split(specs: tuple[str, ...], prefix: str) -> tuple[list[str], list[str]]:
    if not specs:
        raise ValueError("name at least one channel, for example 'quotes:AAPL' or 'quotes:*'")
    channels, patterns = [], []
    for spec in specs:
        full = pattern(spec, prefix)
        (patterns if any(c in full for c in "*?[") else channels).append(full)
    return channels, patterns


def _decode(message: dict[str, Any], prefix: str, models: bool) -> Message | None:
    if message.get("type") not in ("message", "pmessage"):
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
            data = from_dict(MODEL_FOR_TYPE[kind], data)
        except Exception as exc:  # a payload from a newer or foreign publisher: hand over the dict
            log.debug("payload on %s does not fit %s: %s", channel, kind, exc)
    return Message(kind, identifier, channel, data)


def subscribe(*specs: str, url: str | None = None, prefix: str = "", models: bool = True) -> Iterator[Message]:
    """Yield :class:`Message` for every payload published on the given channels or patterns (blocking)."""
    channels, patterns = _split(specs, prefix)
    client = redis.Redis.from_url(url or redis_url_from_env()[0])
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        if channels:
            pubsub.subscribe(*channels)
        if patterns:
            pubsub.psubscribe(*patterns)
        for raw in pubsub.listen():
            message = _decode(raw, prefix, models)
            if message is not None:
                yield message
    finally:
        pubsub.close()
        client.close()


async def asubscribe(*specs: str, url: str | None = None, prefix: str = "", models: bool = True) -> AsyncIterator[Message]:
    """Async version of :func:`subscribe`."""
    channels, patterns = _split(specs, prefix)
    client = aioredis.Redis.from_url(url or redis_url_from_env()[0])
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        if channels:
            await pubsub.subscribe(*channels)
        if patterns:
            await pubsub.psubscribe(*patterns)
        async for raw in pubsub.listen():
            message = _decode(raw, prefix, models)
            if message is not None:
                yield message
    finally:
        await pubsub.aclose()
        await client.aclose()


def latest(kind: str, identifier: str, *, url: str | None = None, prefix: str = "", models: bool = True) -> Any:
    """The last payload published on a channel (a model, or a dict with ``models=False``), or ``None``."""
    client = redis.Redis.from_url(url or redis_url_from_env()[0])
    try:
        raw = client.get(latest_key(kind, identifier, prefix))
    finally:
        client.close()
    if raw is None:
        return None
    data = orjson.loads(raw)
    return from_dict(MODEL_FOR_TYPE[kind], data) if models else data


def book(kind: str, account_id: str, *, url: str | None = None, prefix: str = "", models: bool = True) -> dict[str, Any]:
    """An account's whole current book: ``{symbol: Position}`` for ``positions`` (closed positions are gone) or
    ``{currency: Balance}`` for ``balances``; empty when nothing was published (or ``latest`` is off).

    To follow a book live without missing a change, subscribe to the channel first, then read the book, then
    apply the messages that arrive.
    """
    key = book_key(kind, account_id, prefix)
    client = redis.Redis.from_url(url or redis_url_from_env()[0])
    try:
        raw = client.hgetall(key)
    finally:
        client.close()
    out: dict[str, Any] = {}
    for field, payload in sorted(raw.items()):
        data = orjson.loads(payload)
        out[field.decode()] = from_dict(MODEL_FOR_TYPE[kind], data) if models else data
    return out
