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
MAX_IN_FLIGHT = 4
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
        self._reader_task: asyncio.Task[None] | None = None
        self._in_flight: deque[_Batch] = deque()
        self._window = asyncio.Event()

    def __repr__(self) -> str:
        return f"AsyncPublisher({mask_url(self.url)!r})"

    # -- public API ----------------------------------------------------------------------------------------

    async def start(self, *, wait_connected: bool = True) -> None:
        """Start the writer. With ``wait_connected`` (default), raise ``PublishError`` if Redis is unreachable."""
        if wait_connected:
            await self._connect()
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
        """How many payloads are queued or sent but not yet confirmed by Redis."""
        return len(self._quotes) + len(self._reliable) + sum(b.messages for b in self._in_flight)

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
            for task in (self._task, self._reader_task):
                if task is not None:
                    task.cancel()
                    try:
                        await task
                    except asyncio.CancelledError:
                        pass
            self._task = self._reader_task = None
            # What was sent but never answered may not have arrived: count it as not published.
            while self._in_flight:
                self._reliable.extendleft(reversed(self._in_flight.pop().reliable))
        await self._conn.close()
        self.stats.connected = False
        left = len(self._reliable)
        if left:
            log.error("%d account events were not published because Redis was unreachable at shutdown", left)
            for kind, ch, model in self._reliable:
                log.error("unpublished %s on %s: %s", kind, ch, dumps(to_dict(model)).decode())
        return left

    # -- writer ------------------------------------------------------------------------------------------------
    #
    # Batches are pipelined: the writer sends a batch as soon as it has one and does not wait for the replies
    # to the previous one (a reader task matches replies to batches in order). Waiting would add a whole
    # round trip to the latency of everything that queued meanwhile. At most MAX_IN_FLIGHT batches are
    # unanswered at once; past that, quotes conflate in the queue instead of piling up in socket buffers.
    # If the connection breaks, every unanswered batch is queued again, account events first and in order:
    # across a Redis outage delivery is at least once, never at most once.

    async def _writer(self) -> None:
        delay = 0.05
        while True:
            if not self._quotes and not self._reliable:
                if not self._in_flight:
                    self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not self._conn.connected:
                try:
                    await self._connect()
                    delay = 0.05
                except PublishError as exc:
                    self._note_error(exc)
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 5.0)
                    continue
            if len(self._in_flight) >= MAX_IN_FLIGHT:
                self._window.clear()
                await self._window.wait()
                continue
            batch = self._take_batch()
            self._in_flight.append(batch)
            try:
                await self._conn.send(batch.data)
            except PublishError as exc:
                await self._connection_lost(exc)

    async def _connect(self) -> None:
        await self._conn.connect()
        if self.stats.reconnects or not self.stats.connected:
            log.info("connected to Redis at %s", mask_url(self.url))
        self.stats.connected = True
        self._reader_task = asyncio.create_task(self._read_replies(), name="livedata-publisher-replies")

    async def _read_replies(self) -> None:
        try:
            while True:
                for reply in await self._conn.replies():
                    batch = self._in_flight[0]
                    if isinstance(reply, hiredis.ReplyError):
                        self.stats.errors += 1
                        self.stats.last_error = str(reply)
                        log.error("Redis refused a command: %s", reply)
                    batch.unanswered -= 1
                    if batch.unanswered == 0:
                        self._in_flight.popleft()
                        self.stats.published += batch.messages
                        self.stats.batches += 1
                        self.stats.last_publish_at = time.time()
                        self._window.set()
                        if not self._in_flight and not self._quotes and not self._reliable:
                            self._idle.set()
        except PublishError as exc:
            await self._connection_lost(exc)

    async def _connection_lost(self, exc: PublishError) -> None:
        self._note_error(exc)
        reader, self._reader_task = self._reader_task, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        await self._conn.close()
        # Queue every unanswered batch again: newest first, so that account events end up in their order.
        while self._in_flight:
            batch = self._in_flight.pop()
            self._reliable.extendleft(reversed(batch.reliable))
            for ch, quote in batch.quotes.items():
                self._quotes.setdefault(ch, quote)
        self._window.set()
        self._wakeup.set()

    def _note_error(self, exc: Exception) -> None:
        if self.stats.connected:
            log.error("Redis unreachable, queueing (quotes conflated, account events kept): %s", exc)
            self.stats.reconnects += 1
        self.stats.connected = False
        self.stats.errors += 1
        self.stats.last_error = str(exc)

    def _take_batch(self) -> "_Batch":
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
        latest_pairs: list[bytes] = []
        prefix = self.prefix
        count = 0
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
        return _Batch(b"".join(parts), count, len(quotes) + len(reliable), quotes, reliable)


class _Batch:
    """One pipeline sent to Redis and what it carried, until all its replies are in."""

    __slots__ = ("data", "unanswered", "messages", "quotes", "reliable")

    def __init__(self, data: bytes, unanswered: int, messages: int, quotes: dict[str, Quote], reliable: list[tuple[str, str, Any]]) -> None:
        self.data = data
        self.unanswered = unanswered
        self.messages = messages
        self.quotes = quotes
        self.reliable = reliable
