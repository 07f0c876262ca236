"""The synchronous publisher, for scripts and web apps::

    from livedata_core import live_data_redis
    live_data_redis.publish_quote("AAPL", {"bid": 1, "ask": 2, "last": 1.5, "volume": 10})

Each ``publish_*`` takes a dict or a model, checks it against the model, publishes the JSON on its channel,
keeps it as the channel's latest value (positions and balances also in their account's book hash), and for
orders and transactions appends it to the channel's capped stream. It returns how many subscribers received it.

The check is strict (``from_dict(..., strict=True)``; docs/channels.md, "Payload rules"): nothing is converted
or dropped. ``ValueError`` names every bad field and what is wrong: an unknown key (``{"lst": 3}``; put
broker-specific values in ``extra``), a value of the wrong type (``"1.5"``, ``True``; whole numbers are fine
for numbers), NaN or an infinity, an order ``status`` outside ``ORDER_STATUSES`` (the allowed ones are
listed). An identifier that is not a string or cannot be a channel name raises
:class:`~livedata_core.errors.InvalidIdentifier`. The ``broker`` field defaults to ``"external"``.

Redis comes from ``LIVEDATA_REDIS_URL`` (default ``redis://localhost:6379/0``) unless :func:`configure` says
otherwise: a URL, or a :class:`~livedata_core.redis_io.topology.RedisTopology` (with sentinels each call writes to
the current master; with ``wait_replicas`` an account event that did not reach that many replicas raises
``PublishError``, so the caller publishes it again). Connection failures raise
:class:`~livedata_core.errors.PublishError` with the URL's password masked.
"""

from __future__ import annotations

import threading
from typing import Any

import redis

from ...channels import book_key, channel, latest_key, stream_key, validate_prefix
from ...errors import PublishError
from ...models import to_dict
from ..topology import RedisTopology, as_topology, sync_client
from .encoding import book_entry, dumps, payload_for

__all__ = [
    "configure",
    "publish_balance",
    "publish_bar",
    "publish_depth",
    "publish_order",
    "publish_position",
    "publish_quote",
    "publish_transaction",
]

_lock = threading.Lock()
_settings: dict[str, Any] = {"url": None, "prefix": "", "latest": True, "streams": True, "stream_maxlen": 10_000}
_client: Any = None


def configure(
    url: str | RedisTopology | None = None,
    *,
    prefix: str = "",
    latest: bool = True,
    streams: bool = True,
    stream_maxlen: int = 10_000,
) -> None:
    """Set where and how the module-level functions publish. ``url=None`` means ``LIVEDATA_REDIS_URL``; a
    :class:`~livedata_core.redis_io.topology.RedisTopology` names sentinels or a cluster."""
    global _client
    if url is not None:
        as_topology(url)
    validate_prefix(prefix)
    with _lock:
        _settings.update(url=url, prefix=prefix, latest=latest, streams=streams, stream_maxlen=stream_maxlen)
        if _client is not None:
            _client.close()
        _client = None


def _get_client() -> tuple[Any, RedisTopology]:
    global _client
    topology = as_topology(_settings["url"])
    with _lock:
        if _client is None:
            _client = sync_client(topology, socket_connect_timeout=5, socket_timeout=10)
        return _client, topology


def _publish(kind: str, identifier: str, data: Any, id_field: str) -> int:
    model = payload_for(kind, identifier, data, id_field)
    prefix = _settings["prefix"]
    payload = dumps(to_dict(model))
    client, url = _get_client()
    pipe = client.pipeline(transaction=False)
    if url.sharded:  # a cluster with sharded pub/sub (docs/scaling.md)
        pipe.execute_command("SPUBLISH", channel(kind, identifier, prefix), payload)
    else:
        pipe.publish(channel(kind, identifier, prefix), payload)
    if _settings["latest"]:
        pipe.set(latest_key(kind, identifier, prefix), payload)
        book = book_entry(model)
        if book is not None:
            field, closed = book
            if closed:
                pipe.hdel(book_key(kind, identifier, prefix), field)
            else:
                pipe.hset(book_key(kind, identifier, prefix), field, payload)
    if _settings["streams"] and kind in ("orders", "transactions", "bars"):
        pipe.xadd(stream_key(kind, identifier, prefix), {"data": payload}, maxlen=_settings["stream_maxlen"], approximate=True)
    wait = url.wait_replicas if kind not in ("quotes", "depth") else 0
    if wait:
        pipe.execute_command("WAIT", wait, round(url.wait_timeout * 1000))
    try:
        replies = pipe.execute()
    except redis.RedisError as exc:
        raise PublishError(f"could not publish to Redis at {url.describe()}: {exc}") from None
    if wait and replies[-1] < wait:
        raise PublishError(f"the {kind} payload of {identifier} reached the master at {url.describe()} but only "
                           f"{replies[-1]} of {wait} replica(s) within {url.wait_timeout:g}s: it may be lost in a "
                           "failover; publish it again")  # fmt: skip
    return int(replies[0])


def publish_quote(symbol: str, quote: Any) -> int:
    """Publish a quote on ``live_data:quotes:{symbol}``."""
    return _publish("quotes", symbol, quote, "symbol")


def publish_bar(symbol: str, bar: Any) -> int:
    """Publish a bar on ``live_data:bars:{symbol}`` (and its stream). No dedupe or gap filling here: that is the
    runner's (a script publishing bars must publish each once, in order)."""
    return _publish("bars", symbol, bar, "symbol")


def publish_depth(symbol: str, depth: Any) -> int:
    """Publish an order book on ``live_data:depth:{symbol}``."""
    return _publish("depth", symbol, depth, "symbol")


def publish_position(account_id: str, position: Any) -> int:
    """Publish one position on ``live_data:positions:{account_id}``."""
    return _publish("positions", account_id, position, "account_id")


def publish_balance(account_id: str, balance: Any) -> int:
    """Publish balances on ``live_data:balances:{account_id}``."""
    return _publish("balances", account_id, balance, "account_id")


def publish_order(account_id: str, order: Any) -> int:
    """Publish an order event on ``live_data:orders:{account_id}`` (and its stream)."""
    return _publish("orders", account_id, order, "account_id")


def publish_transaction(account_id: str, transaction: Any) -> int:
    """Publish a transaction on ``live_data:transactions:{account_id}`` (and its stream)."""
    return _publish("transactions", account_id, transaction, "account_id")
