"""The asyncio publisher used by the runner: batched, pipelined, bounded, and never loses account events.

``publish(model)`` is a plain (non-async) call that only queues. A writer task wakes as soon as the event
loop is idle, takes everything queued, and sends it to Redis as one pipeline; while that pipeline is in
flight, new data queues up for the next one. So batches grow exactly as large as Redis is slow, with no timer.

* Quotes are **conflated**: the queue holds at most one quote per channel, the latest. Memory is bounded by
  the number of symbols however far ahead of Redis the brokers run.
* Positions, balances, orders and transactions go to an ordered queue that is **never dropped**. When Redis
  is down they wait, and go out in order once it is back.

Every publish also sets ``live_data:latest:<type>:<id>`` (one GET gives a late consumer the current state)
and orders and transactions are appended to a capped stream ``live_data:stream:<type>:<id>``; both can be
turned off.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from typing import Any

import attrs
import hiredis

from ..channels import channel, latest_key, stream_key
from ..errors import PublishError
from ..models import Quote, to_dict
from ..redis_url import mask_url, parse_redis_url, redis_url_from_env
from .encoding import dumps
from .resp import command

__all__ = ["AsyncPublisher", "PublisherStats"]

log = logging.getLogger("livedata.publisher")

RELIABLE_WARN_EVERY = 10_000
STREAM_TYPES = frozenset({"orders", "transactions"})


@attrs.define
class PublisherStats:
    """Counters of an :class:`AsyncPublisher`."""

    published: int = 0
    conflated: int = 0
    batches: int = 0
    errors: int = 0
    reconnects: int = 0
    connected: bool = False
    last_error: str | None = None
    last_publish_at: float | None = None


class AsyncPublisher:
    """Publish models to Redis from asyncio code.

    :param url: Redis URL; default ``LIVEDATA_REDIS_URL`` or ``redis://localhost:6379/0``.
    :param prefix: deployment prefix for every channel and key.
    :param latest: also keep the last payload per channel under ``live_data:latest:...``.
    :param streams: also append orders and transactions to ``live_data:stream:...``.
    :param stream_maxlen: approximate cap on each stream's length.
    :param max_batch: the most commands in one pipeline.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str = "",
        latest: bool = True,
        streams: bool = True,
        stream_maxlen: int = 10_000,
        max_batch: int = 20_000,
    ) -> None:
        from .resp import RespConnection

        self.url = url or redis_url_from_env()[0]
        self._target = parse_redis_url(self.url)
        self.prefix = prefix
        self.latest = latest
        self.streams = streams
        self._maxlen = str(stream_maxlen).encode()
        self.max_batch = max_batch
        self.stats = PublisherStats()
        self._conn = RespConnection(self._target)
        self._quotes: dict[str, Quote] = {}
        self._reliable: deque[tuple[str, str, Any]] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def __repr__(self) -> str:
        return f"AsyncPublisher({mask_url(self.url)!r})"

    # -- public API ----------------------------------------------------------------------------------------

    async def start(self, *, wait_connected: bool = True) -> None:
        """Start the writer. With ``wait_connected`` (default), raise ``PublishError`` if Redis is unreachable."""
        if wait_connected:
            await self._conn.connect()
            self.stats.connected = True
        self._task = asyncio.create_task(self._writer(), name="livedata-publisher")

    def publish(self, model: Any) -> None:
        """Queue a model (Quote, Position, Balance, Order or Transaction). Never blocks, never raises for Redis."""
        if type(model) is Quote:
            ch = channel("quotes", model.symbol, self.prefix)
            if ch in self._quotes:
                self.stats.conflated += 1
            self._quotes[ch] = model
        else:
            kind = model.TYPE
            self._reliable.append((kind, channel(kind, model.identifier, self.prefix), model))
            if len(self._reliable) % RELIABLE_WARN_EVERY == 0:
                log.warning("%d account events waiting for Redis", len(self._reliable))
        if self._idle.is_set():
            self._idle.clear()
        self._wakeup.set()

    def publish_many(self, models: list[Any]) -> None:
        """Queue several models at once."""
        for m in models:
            self.publish(m)

    @property
    def pending(self) -> int:
        """How many payloads are queued and not yet written."""
        return len(self._quotes) + len(self._reliable)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written. Returns ``False`` if ``timeout`` ran out first."""
        if self._task is None:
            raise RuntimeError("publisher not started")
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def close(self, timeout: float = 5.0) -> int:
        """Write what is queued (up to ``timeout`` seconds), then disconnect.

        Returns how many account events (orders, transactions, positions, balances) could not be written;
        they are logged at error level with their channels so nothing is lost silently.
        """
        if self._task is not None:
            await self.flush(timeout)
            self._closing = True
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self._conn.close()
        self.stats.connected = False
        left = len(self._reliable)
        if left:
            log.error("%d account events were not published because Redis was unreachable at shutdown", left)
            for kind, ch, model in self._reliable:
                log.error("unpublished %s on %s: %s", kind, ch, dumps(to_dict(model)).decode())
        return left

    # -- writer --------------------------------------------------------------------------------------------

    async def _writer(self) -> None:
        delay = 0.05
        while True:
            if not self._quotes and not self._reliable:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not self._conn.connected:
                try:
                    await self._conn.connect()
                    if self.stats.reconnects or not self.stats.connected:
                        log.info("connected to Redis at %s", mask_url(self.url))
                    self.stats.connected = True
                    delay = 0.05
                except PublishError as exc:
                    self._note_error(exc)
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 5.0)
                    continue
            await self._send_batch()

    def _note_error(self, exc: Exception) -> None:
        if self.stats.connected:
            log.error("Redis unreachable, queueing (quotes conflated, account events kept): %s", exc)
            self.stats.reconnects += 1
        self.stats.connected = False
        self.stats.errors += 1
        self.stats.last_error = str(exc)

    async def _send_batch(self) -> None:
        reliable: list[tuple[str, str, Any]] = []
        budget = self.max_batch
        while self._reliable and budget > 0:
            reliable.append(self._reliable.popleft())
            budget -= 1
        quotes: dict[str, Quote]
        if len(self._quotes) <= budget:
            quotes, self._quotes = self._quotes, {}
        else:
            quotes = {}
            for ch in list(self._quotes)[:budget]:
                quotes[ch] = self._quotes.pop(ch)

        parts: list[bytes] = []
        count = 0
        latest_pairs: list[bytes] = []
        prefix = self.prefix
        for ch, quote in quotes.items():
            payload = dumps(to_dict(quote))
            chb = ch.encode()
            parts.append(b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(chb), chb, len(payload), payload))
            if self.latest:
                key = latest_key("quotes", quote.symbol, prefix).encode()
                latest_pairs.append(b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(key), key, len(payload), payload))
        count += len(quotes)
        for kind, ch, model in reliable:
            payload = dumps(to_dict(model))
            parts.append(command(b"PUBLISH", ch.encode(), payload))
            count += 1
            if self.latest:
                key = latest_key(kind, model.identifier, prefix).encode()
                latest_pairs.append(b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(key), key, len(payload), payload))
            if self.streams and kind in STREAM_TYPES:
                skey = stream_key(kind, model.identifier, prefix).encode()
                parts.append(command(b"XADD", skey, b"MAXLEN", b"~", self._maxlen, b"*", b"data", payload))
                count += 1
        if latest_pairs:
            parts.append(b"*%d\r\n$4\r\nMSET\r\n" % (1 + 2 * len(latest_pairs)) + b"".join(latest_pairs))
            count += 1

        try:
            replies = await self._conn.execute(b"".join(parts), count)
        except PublishError as exc:
            self._note_error(exc)
            # Put the batch back: account events in front, in order; quotes only where no newer one arrived.
            self._reliable.extendleft(reversed(reliable))
            for ch, quote in quotes.items():
                self._quotes.setdefault(ch, quote)
            return
        except asyncio.CancelledError:
            self._reliable.extendleft(reversed(reliable))
            for ch, quote in quotes.items():
                self._quotes.setdefault(ch, quote)
            await self._conn.close()
            raise
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                self.stats.errors += 1
                self.stats.last_error = str(reply)
                log.error("Redis refused a command: %s", reply)
        self.stats.published += len(quotes) + len(reliable)
        self.stats.batches += 1
        self.stats.last_publish_at = time.time()
