"""The asyncio publisher used by the runner: batched, pipelined, bounded, and never loses account events.

``publish(model)`` is a plain (non-async) call that only queues. A writer task wakes as soon as the event
loop is idle, takes everything queued, and sends it to Redis as one pipeline, without waiting for the replies
to earlier pipelines (up to a small window); past the window, new data queues up for the next one. So batches
grow exactly as large as Redis is slow, with no timer.

* Quotes (option quotes too) and order books (depth) are **conflated**: the queue holds at most one per channel,
  the latest. Memory is bounded by the number of symbols however far ahead of Redis the brokers run.
* Positions, balances, orders, transactions and bars go to an ordered queue that is **never dropped**. When Redis
  is down they wait, and go out in order once it is back.

Every publish also sets ``live_data:latest:<type>:<id>`` (one GET gives a late consumer the last payload),
positions and balances also update their account's book hash ``live_data:book:<type>:<account>`` (one
HGETALL gives the whole current book), and orders, transactions and bars are appended to a capped stream
``live_data:stream:<type>:<id>`` (bars to ``live_data:stream:bars:<symbol>``, capped by ``bars_maxlen``); latest
keys with books, and streams, can each be turned off.

Beyond one server (docs/scaling.md): given a :class:`~livedata_core.redis_io.topology.RedisTopology` with sentinels,
the publisher asks them where the master is on every (re)connect, checks that the server it reached is the master
(``ROLE``), and treats a ``READONLY`` reply (a demoted master) as a lost connection. With ``wait_replicas`` each
pipeline that carries account events ends with ``WAIT``: its events count as published (``flush``, ``stats``)
only once that many replicas have them. Events WAIT did not see replicated are kept (later events still flow to
the master and its subscribers), asked about again by the next WAIT, and if the connection is lost first they
are sent again, in order, to wherever the master then is: a failover cannot lose an event the old master had
alone (a subscriber or stream may see it twice).

Data of a broker that is not real (the demo) can be made to expire (:meth:`AsyncPublisher.expire`): each
latest key, book hash and stream it writes then lives only so long after its last write, so it never outlives
the broker as a symbol's current value. What is published on the channels is the same.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
import hiredis
import orjson

from ...channels import book_key, channel, latest_key, stream_key
from ...errors import PublishError
from ...models import Depth, OptionQuote, Quote, check_model, finite_quote, quote_to_dict, to_dict
from ..topology import RedisTopology, as_topology, async_client, master_address, with_address
from ..url import mask_url, parse_redis_url
from .encoding import book_entry, dumps
from .resp import RespConnection, command
from ...aio_tools import within

__all__ = ["AsyncPublisher", "PublisherStats"]

log = logging.getLogger("livedata.publisher")

RELIABLE_WARN_EVERY = 10_000
MAX_IN_FLIGHT = 4
# Error replies that mean "not now" (loading, failover, memory, replicas): the batch is sent again after a pause.
# Any other error reply (WRONGTYPE: a foreign key in the way) is permanent: the payload is logged in full.
TRANSIENT_ERRORS = ("LOADING", "READONLY", "OOM", "NOREPLICAS", "MISCONF", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN")
# Error replies about the connection itself (credentials, a full server): reconnect with backoff, send all again.
CONNECTION_ERRORS = ("NOAUTH", "NOPERM", "WRONGPASS")
REPLY_TIMEOUT = 10.0
# Account events held while replicas lag (on the master, not yet confirmed by WAIT), at most.
MAX_UNREPLICATED = 100_000
MAX_RECONNECT_DELAY = 5.0
# With sentinels a new master appears within seconds of a failover: reconnects are tried at least every second.
MAX_SENTINEL_RECONNECT_DELAY = 1.0
STREAM_TYPES = frozenset({"orders", "transactions", "bars"})
# Conflated per channel like quotes: only the newest of a symbol matters.
CONFLATED_TYPES = (OptionQuote, Depth)
MAX_CACHED_HEADS = 100_000


@attrs.define
class PublisherStats:
    """Counters of an :class:`AsyncPublisher`."""

    published: int = 0
    conflated: int = 0
    skipped: int = 0
    refused: int = 0
    """Account events a write of which Redis refused for good (WRONGTYPE...): logged with their payload."""
    batches: int = 0
    errors: int = 0
    reconnects: int = 0
    unreplicated: int = 0
    """WAITs that came back with fewer replicas than ``wait_replicas``: their events were asked about again."""
    connected: bool = False
    last_error: str | None = None
    last_publish_at: float | None = None


class AsyncPublisher:
    """Publish models to Redis from asyncio code.

    :param url: Redis URL, or a :class:`~livedata_core.redis_io.topology.RedisTopology` (sentinels, ``WAIT``);
        default ``LIVEDATA_REDIS_URL`` or ``redis://localhost:6379/0``.
    :param prefix: deployment prefix for every channel and key.
    :param latest: also keep the last payload per channel under ``live_data:latest:...`` and each account's
        positions and balances in the hashes ``live_data:book:...``.
    :param streams: also append orders and transactions to ``live_data:stream:...``.
    :param stream_maxlen: approximate cap on each orders or transactions stream's length.
    :param bars_maxlen: approximate cap on each symbol's bars stream (``live_data:stream:bars:<symbol>``): 10,000
        one-minute bars are about a week of a market open around the clock.
    :param max_batch: the most commands in one pipeline.
    :param expire_after: ``{broker: seconds}``, as :meth:`expire` for each.
    """

    _CLUSTER = False  # ClusterPublisher sets it: the same queues, another writer

    def __init__(
        self,
        url: str | RedisTopology | None = None,
        *,
        prefix: str = "",
        latest: bool = True,
        streams: bool = True,
        stream_maxlen: int = 10_000,
        bars_maxlen: int = 10_000,
        max_batch: int = 20_000,
        expire_after: dict[str, float] | None = None,
    ) -> None:
        self.topology = as_topology(url)
        if self.topology.cluster and not self._CLUSTER:
            raise ValueError("AsyncPublisher speaks to one server or a Sentinel master; for a cluster use "
                             "livedata_core.redis_io.publisher.make_publisher (a ClusterPublisher)")
        self.url = self.topology.url
        self._target = parse_redis_url(self.url)
        self._sentinel = bool(self.topology.sentinels)
        self._max_reconnect_delay = MAX_SENTINEL_RECONNECT_DELAY if self._sentinel else MAX_RECONNECT_DELAY
        self._wait_command = (
            command(b"WAIT", str(self.topology.wait_replicas).encode(), str(round(self.topology.wait_timeout * 1000)).encode())
            if self.topology.wait_replicas else None
        )
        self._unreplicated_streak = 0
        self._unreplicated_capped = False
        # Events written to the master that no WAIT has yet seen on enough replicas, oldest first: sent again if the
        # connection is lost before one does.
        self._unreplicated: deque[_Event] = deque()
        self._rewait_at = 0.0
        self.prefix = prefix
        self.latest = latest
        self.streams = streams
        self._maxlen = str(stream_maxlen).encode()
        self._bars_maxlen = str(bars_maxlen).encode()
        self.max_batch = max_batch
        self.stats = PublisherStats()
        self._conn = RespConnection(self._target)
        self._quotes: dict[str, Quote] = {}
        self._quote_heads: dict[str, tuple[bytes, bytes]] = {}
        self._quote_channels: dict[str, str] = {}  # symbol -> its quotes channel (checked), see _quote_channel
        self._quote_seqs: dict[str, int] = {}
        self._reliable: deque[_Event] = deque()
        self._wakeup = asyncio.Event()
        # flush() marks: every publish() gets the next number; a batch that emptied the queues covers every number
        # up to then, and once Redis has answered it (its retries included) that number is confirmed.
        self._published_seq = 0
        self._covered_seq = 0
        self._confirmed_seq = 0
        self._confirmed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None  # notices a Redis that stopped answering
        self._replied_at = 0.0  # when replies last arrived (monotonic)
        self._in_flight: deque[_Batch] = deque()
        self._window = asyncio.Event()
        self._generation = 0
        self._transient_errors = 0
        self._reconnect_delay = 0.05
        self._retry: _Batch | None = None
        self._retry_at = 0.0
        self._closed = False
        self._expire_ms: dict[str, bytes] = {}  # instance (or broker) -> milliseconds, as the PX/PEXPIRE argument
        self._expire_px: dict[str, bytes] = {}  # instance (or broker) -> the "PX <ms>" end of a quote's SET, in RESP
        self.fence: Callable[[], bool] | None = None
        """While set, the writer sends nothing unless ``fence()`` is true (a hot standby's lease, see
        :mod:`livedata_core.runner.ha`): checked once per batch, just before the batch is taken and sent."""
        self._epoch_fields: tuple[bytes, ...] = ()  # ("epoch", N) on each stream entry once set_epoch() was called
        for broker, seconds in (expire_after or {}).items():
            self.expire(broker, seconds)

    def __repr__(self) -> str:
        return f"AsyncPublisher({self.topology.describe()!r})"

    # -- public API ----------------------------------------------------------------------------------------

    async def start(self, *, wait_connected: bool = True) -> None:
        """Start the writer. With ``wait_connected`` (default), raise ``PublishError`` if Redis is unreachable."""
        if wait_connected:
            await self._connect()
        self._task = asyncio.create_task(self._writer(), name="livedata-publisher")

    def publish(self, model: Any) -> None:
        """Queue a model (Quote, OptionQuote, Depth, Bar, Position, Balance, Order or Transaction). Never blocks, never
        raises for Redis.

        A payload that cannot be published as it is is refused at once (the runner counts it as a skip): account
        events are checked in full (:func:`~livedata_core.models.check_model`) and encoded here; quotes, on the
        hot path, are checked for NaN, infinities and values that are not numbers (:func:`finite_quote`). Option
        quotes and order books are checked in full and conflated like quotes; bars are queued in order like account
        events, and appended to their symbol's stream.

        :raises InvalidIdentifier: the symbol or account id cannot be a channel name.
        :raises ValueError: a bad field (a wrong type, NaN or an infinity, an order status outside the closed set),
            named with what is wrong.
        :raises TypeError: not a model, or a value JSON cannot carry (for example bytes in ``extra``).
        """
        if type(model) is Quote:
            if not finite_quote(model):
                check_model(model)  # raises ValueError naming the field, unless the quote was fine after all
            symbol = model.symbol
            try:
                ch = self._quote_channels[symbol] if type(symbol) is str else self._quote_channel(symbol)
            except KeyError:  # not seen yet (or forgotten)
                ch = self._quote_channel(symbol)
            seq = self._published_seq = self._published_seq + 1
            quotes = self._quotes
            if ch in quotes:
                self.stats.conflated += 1
            else:
                self._quote_seqs[ch] = seq  # the oldest publish this queued quote stands for
            quotes[ch] = model
            wakeup = self._wakeup
            if not wakeup._value:  # what is_set() returns: set() and is_set() are Python calls (380 instructions)
                wakeup.set()
            return
        seq = self._published_seq + 1
        if type(model) in CONFLATED_TYPES:
            check_model(model)
            ch = channel(model.TYPE, model.symbol, self.prefix)
            if ch in self._quotes:
                self.stats.conflated += 1
            else:
                self._quote_seqs[ch] = seq
            self._quotes[ch] = model
        else:
            kind = getattr(model, "TYPE", None)
            if kind is None or kind == "quotes":
                raise TypeError(f"cannot publish {type(model).__name__}: not a livedata model")
            check_model(model)
            event = _Event(kind, model.identifier, dumps(to_dict(model)), self, book_entry(model))
            event.seq = seq
            if self._expire_ms and (model.instance or model.broker) in self._expire_ms:
                event.set_expiry(self._expire_ms[model.instance or model.broker])
            if self._closed:
                log.error("published after the publisher closed, not sent: %s on %s: %s", kind, event.channel.decode(),
                          event.payload.decode())
                self.stats.skipped += 1
                return
            self._reliable.append(event)
            if len(self._reliable) % RELIABLE_WARN_EVERY == 0:
                log.warning("%d account events waiting for Redis", len(self._reliable))
        self._published_seq = seq
        self._wakeup.set()

    def set_epoch(self, epoch: int) -> None:
        """Write ``epoch`` beside ``data`` in every stream entry from now on (the lease's fencing epoch, so that an
        entry a former leader wrote is recognisable)."""
        self._epoch_fields = (b"epoch", str(int(epoch)).encode())

    def abort(self) -> None:
        """Drop the connection to Redis now, and with it whatever asyncio still buffers to send on it (a runner
        that lost its hot-standby lease: those bytes were written before the fence, and must not reach Redis after
        the takeover). The fenced writer sends nothing more; :meth:`close` still counts the unanswered events."""
        self._conn.abort()
        self.stats.connected = False

    @property
    def fenced(self) -> bool:
        """Whether the fence holds the writer back now."""
        return self.fence is not None and not self.fence()

    def expire(self, broker: str, seconds: float) -> None:
        """Make what is published from now on for ``broker`` (models whose ``instance`` field is that name, or with
        no instance, whose ``broker`` field is; the runner names each instance) expire
        ``seconds`` after its last write: the latest keys (``SET ... PX``), and the book hashes and streams it
        writes (``PEXPIRE`` after each write). Subscribers receive the messages as before. The runner does this
        for a broker whose settings have ``expire_after`` (the demo), so demo prices never outlive the demo as
        a symbol's current value.

        :raises ValueError: ``seconds`` is not a positive, finite number of at least a millisecond.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0.001 <= seconds < 2**40:
            raise ValueError(f"expiry of {broker!r} data must be a number of seconds from 0.001, was {seconds!r}")
        self._expire_ms[broker] = str(round(seconds * 1000)).encode()
        self._expire_px[broker] = b"$2\r\nPX\r\n" + _bulk(self._expire_ms[broker])

    def drop_from_book(self, kind: str, identifier: str, field: str) -> None:
        """Take one entry out of an account's book hash (``HDEL``), in order with the account's events; nothing is
        published. The runner uses it for a currency the broker no longer reports. No-op with ``latest`` off."""
        if not self.latest or self._closed:
            return
        event = _Event(kind, identifier, b"", self, (field, True))
        event.publish = False
        event.seq = self._published_seq = self._published_seq + 1
        self._reliable.append(event)
        self._wakeup.set()

    def publish_many(self, models: list[Any]) -> None:
        """Queue several models at once."""
        for m in models:
            self.publish(m)

    async def read_book(self, kind: str, identifier: str, timeout: float = 5.0) -> dict[str, Any]:
        """The book hash of an account as published so far (``{symbol or currency: payload dict}``); empty when
        ``latest`` is off.

        :raises PublishError: Redis did not answer.
        """
        if not self.latest:
            return {}
        key = book_key(kind, identifier, self.prefix)
        raw = await self._read(f"{kind} book of {identifier}", lambda client: client.hgetall(key), timeout)
        return {field.decode(): orjson.loads(payload) for field, payload in raw.items()}

    async def read_stream(self, kind: str, identifier: str, count: int | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The newest payloads (at most ``count``, default the stream's cap) of an account's orders or
        transactions stream, newest first; empty when ``streams`` is off.

        :raises PublishError: Redis did not answer.
        """
        if not self.streams:
            return []
        key = stream_key(kind, identifier, self.prefix)
        entries = await self._read(f"{kind} stream of {identifier}",
                                   lambda client: client.xrevrange(key, count=count or int(self._maxlen)), timeout)  # fmt: skip
        out = []
        for _, fields in entries:
            try:
                out.append(orjson.loads(fields[b"data"]))
            except (KeyError, orjson.JSONDecodeError):
                continue  # an entry someone else wrote
        return out

    async def _read(self, what: str, call: Any, timeout: float) -> Any:
        # Reads are rare (the first poll of an account) and must not wait behind the pipelined writes: they use a
        # short-lived redis-py connection of their own.
        import redis.asyncio as aioredis

        client = async_client(self.topology, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return await within(call(client), timeout)
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            raise PublishError(f"cannot read {what} from Redis at {self.topology.describe()}: {exc}") from None
        finally:
            await client.aclose()

    @property
    def queued_quotes(self) -> int:
        """Quotes queued and not yet taken into a batch: a newer quote of one of these symbols replaces it."""
        return len(self._quotes)

    @property
    def pending(self) -> int:
        """How many payloads are queued or sent but not yet confirmed by Redis."""
        retry = self._retry.messages if self._retry is not None else 0
        in_flight = sum(b.messages for b in self._in_flight)
        return len(self._quotes) + len(self._reliable) + retry + in_flight + len(self._unreplicated)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until Redis has confirmed everything published before this call (a quote replaced by a newer one
        of its symbol counts as confirmed with it). Quotes published meanwhile do not hold it up.

        Returns ``False`` if ``timeout`` ran out first, for example because Redis is down.
        """
        if self._task is None:
            raise RuntimeError("publisher not started")
        target = self._published_seq
        try:
            async with asyncio.timeout(timeout):
                while self._confirmed_seq < target:
                    self._confirmed.clear()
                    await self._confirmed.wait()
            return True
        except TimeoutError:
            return False

    async def close(self, timeout: float = 5.0) -> int:
        """Write what is queued (up to ``timeout`` seconds), then disconnect.

        Returns how many account events (orders, transactions, positions, balances) could not be written;
        each is logged at error level with its channel and payload, so nothing is lost silently. With
        ``wait_replicas``, events written to the master that no replica confirmed in time are logged (warning,
        with their payloads) but not counted: they are in Redis unless the master fails before replicating them.
        """
        held: set[int] = set()
        if self._task is not None:
            await self.flush(timeout)
            for task in (self._task, self._watchdog):
                if task is not None:
                    task.cancel()
                    try:
                        await task
                    except asyncio.CancelledError:
                        current = asyncio.current_task()
                        if current is not None and current.cancelling():
                            raise  # close() itself is being cancelled
                    except Exception:  # the task's own failure was logged where it happened
                        pass
            self._task = self._watchdog = None
            self._generation += 1  # replies that still come are no longer matched: what is unanswered is counted below
            held = {id(event) for event in self._unreplicated}  # now, not before the flush: it may have added some
            self._requeue_unanswered()  # sent but never answered may not have arrived: not published
        self._closed = True
        await self._conn.close()
        self.stats.connected = False
        unreplicated = [event for event in self._reliable if event.publish and id(event) in held]
        if unreplicated:
            log.warning("%d account events were written to the master but no replica confirmed them before shutdown",
                        len(unreplicated))  # fmt: skip
            for event in unreplicated:
                log.warning("unreplicated %s on %s: %s", event.kind, event.channel.decode(), event.payload.decode())
        # Not the book-only removals, nor those the master has.
        unpublished = [event for event in self._reliable if event.publish and id(event) not in held]
        if unpublished:
            why = ("this runner lost its lease (the new leader's catch-up publishes what its broker still reports)"
                   if self.fenced else "Redis was unreachable at shutdown")
            log.error("%d account events were not published because %s", len(unpublished), why)
            for event in unpublished:
                log.error("unpublished %s on %s: %s", event.kind, event.channel.decode(), event.payload.decode())
        return len(unpublished)

    # -- writer ------------------------------------------------------------------------------------------------
    #
    # Batches are pipelined: the writer sends a batch as soon as it has one and does not wait for the replies
    # to the previous one (the connection hands replies over as they arrive; _on_replies matches them to the
    # batches in order). Waiting would add a whole round trip to the latency of everything that queued meanwhile.
    # At most MAX_IN_FLIGHT batches are unanswered at once; past that, quotes conflate in the queue instead of
    # piling up in socket buffers.
    #
    # Account events are more careful: at most one batch carrying them is unanswered at a time, so that when
    # Redis answers "not now" to one of its commands (LOADING, READONLY, OOM, NOREPLICAS...) only the failed
    # commands are sent again, after a pause, before any later account event: order is kept and subscribers
    # do not get the events that did go through a second time. If the connection breaks, every unanswered
    # batch is queued again whole: delivery is at least once, never at most once.

    async def _writer(self) -> None:
        while True:
            try:
                if self._conn.connected and (self._watchdog is None or self._watchdog.done()):
                    await self._connection_lost(PublishError("the reply watchdog stopped"), self._generation)
                    continue
                if not self._has_work():
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                if self.fence is not None and not self.fence():
                    await asyncio.sleep(0.05)  # a runner that lost its lease is being stopped: nothing more is sent
                    continue
                if not self._conn.connected:
                    try:
                        await self._connect()
                    except PublishError as exc:
                        self._note_error(exc)
                        await asyncio.sleep(self._next_reconnect_delay())
                    continue
                if self._retry is not None:
                    batch = await self._take_retry()
                    if batch is None:
                        continue
                elif len(self._in_flight) >= MAX_IN_FLIGHT or (self._reliable and self._events_in_flight()):
                    self._window.clear()
                    await self._window.wait()
                    continue
                else:
                    batch = self._take_batch()
                    if batch is None:
                        continue
                batch.generation = self._generation
                batch.sent_at = time.monotonic()
                self._in_flight.append(batch)
                try:
                    await self._conn.send(batch.data)
                except PublishError as exc:
                    await self._connection_lost(exc, batch.generation)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop publishing for good
                log.exception("publisher writer failed; continuing")
                await asyncio.sleep(0.1)

    def _has_work(self) -> bool:
        return bool(self._quotes or self._reliable or self._retry is not None or self._rewait_due())

    def _rewait_due(self) -> bool:
        """Held unreplicated events and no event batch to carry a WAIT: time for a WAIT of its own?"""
        return bool(self._unreplicated) and time.monotonic() >= self._rewait_at and not self._events_in_flight()

    def _events_in_flight(self) -> bool:
        return any(batch.reliable or batch.retry or batch.wait_at >= 0 for batch in self._in_flight)

    def _next_reconnect_delay(self) -> float:
        delay = self._reconnect_delay * (0.5 + random.random() / 2)
        self._reconnect_delay = min(self._reconnect_delay * 2, self._max_reconnect_delay)
        return delay

    async def _take_retry(self) -> "_Batch | None":
        # Failed commands go first, after their pause, and only once no other account batch is unanswered.
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
            return None
        if self._events_in_flight():
            self._window.clear()
            await self._window.wait()
            return None
        batch, self._retry = self._retry, None
        return batch

    async def _connect(self) -> None:
        if self._sentinel:
            host, port = await master_address(self.topology)
            url = with_address(self.url, host, port)
            self._conn.target = attrs.evolve(self._target, url=url, host=host, port=port)
        try:
            await self._conn.connect()
            if self._sentinel:
                await self._check_master()
        except PublishError:
            raise
        except Exception as exc:  # whatever else a broken peer causes, as a connection failure
            await self._conn.close()
            raise PublishError(f"cannot connect to Redis at {mask_url(self._conn.target.url)}: "
                               f"{type(exc).__name__}: {exc}") from None  # fmt: skip
        self._generation += 1
        if self.stats.reconnects or not self.stats.connected:
            log.info("connected to Redis at %s", mask_url(self._conn.target.url))
        self.stats.connected = True
        generation = self._generation
        self._conn.push_replies(lambda replies: self._on_replies(replies, generation),
                                lambda exc: self._give_up(exc, generation))  # fmt: skip
        self._watchdog = asyncio.create_task(self._watch_replies(generation), name="livedata-publisher-replies")

    async def _check_master(self) -> None:
        # Right after a failover a sentinel may still name the old master, back as a replica: writing there would
        # only earn READONLY replies.
        role = (await within(self._conn.execute(command(b"ROLE"), 1), self._conn.connect_timeout))[0]
        if isinstance(role, hiredis.ReplyError) or not role or role[0] != b"master":
            await self._conn.close()
            raise PublishError(f"Redis at {mask_url(self._conn.target.url)} is not the master of "
                               f"{self.topology.service!r} (yet)")  # fmt: skip

    async def _watch_replies(self, generation: int) -> None:
        # Replies are handled as they arrive (_on_replies, called by the connection): this task only notices a
        # Redis that stopped answering while batches wait for it. Silence counts from the later of the oldest
        # batch's sending and the last reply: a big batch on a slow link is answered as it arrives, and must not
        # be given up (and sent again, and again) while the replies still come.
        while True:
            await asyncio.sleep(min(1.0, REPLY_TIMEOUT / 4))
            if self._in_flight and time.monotonic() - max(self._in_flight[0].sent_at, self._replied_at) > REPLY_TIMEOUT:
                self._give_up(PublishError(f"Redis did not answer within {REPLY_TIMEOUT:g}s"), generation)
                return

    def _on_replies(self, replies: list, generation: int) -> None:
        """The replies that just arrived on connection ``generation``, in order: matched to the batches in flight."""
        if generation != self._generation:
            return  # a connection already given up (its batches are queued again)
        self._replied_at = time.monotonic()
        try:
            self._match_replies(replies)
        except Exception as exc:
            if not isinstance(exc, PublishError):
                log.exception("publisher failed to handle Redis's replies")
                exc = PublishError(f"handling replies failed: {exc}")
            self._give_up(exc, generation)

    def _give_up(self, exc: PublishError, generation: int) -> None:
        """Drop connection ``generation`` now, from a callback or the watchdog (:meth:`_lose`, then abort: not
        close(), what asyncio still buffers for it is queued again already and would arrive twice)."""
        if self._lose(exc, generation):
            self._conn.abort()

    def _match_replies(self, replies: list) -> None:
        i, n = 0, len(replies)
        while i < n:
            if not self._in_flight:
                raise PublishError("Redis sent a reply nobody asked for")
            batch = self._in_flight[0]
            if not batch.failed_books:
                # Replies to plain writes need nothing but counting: those of this batch up to the first error
                # reply or the WAIT's reply, whichever comes first, are taken in one step.
                answered = batch.answered
                stop = min(n - i, len(batch.owners) - answered)
                if answered <= batch.wait_at < answered + stop:
                    stop = batch.wait_at - answered
                kinds = list(map(type, replies[i:i + stop]))
                if _ERROR in kinds:
                    stop = kinds.index(_ERROR)
                if stop:
                    i += stop
                    batch.answered = answered = answered + stop
                    if answered == len(batch.owners):
                        self._in_flight.popleft()
                        self._batch_done(batch)
                    continue
            reply = replies[i]
            i += 1
            if isinstance(reply, hiredis.ReplyError):
                self._error_reply(batch, reply)
            elif batch.answered == batch.wait_at:
                self._wait_reply(batch, reply)
            elif batch.failed_books:
                self._keep_book_order(batch)
            batch.answered += 1
            if batch.answered == len(batch.owners):
                self._in_flight.popleft()
                self._batch_done(batch)

    def _batch_done(self, batch: "_Batch") -> None:
        failed_events = {id(event) for _, owner in batch.failed for event in _events_of(owner) if event.publish}
        refused = batch.refused - failed_events  # an event partly written for good is not "published"
        self.stats.refused += len(refused)
        held = 0
        lagging = batch.wait_at < 0 and self._unreplicated_streak and self._wait_command is not None
        if batch.unreplicated or lagging:
            # Written, but not seen on enough replicas: held until a later WAIT sees them, resent if the link drops.
            for event in batch.reliable or batch.retry:
                if id(event) not in failed_events and id(event) not in refused:
                    self._unreplicated.append(event)
                    held += event.publish
            self._cap_unreplicated()
        elif batch.wait_at >= 0 and self._unreplicated:
            # A WAIT covers every earlier write of the connection: the held events are replicated now.
            self.stats.published += sum(event.publish for event in self._unreplicated)
            self._unreplicated.clear()
        self.stats.published += batch.messages - len(failed_events) - len(refused) - held
        self.stats.batches += 1
        self.stats.last_publish_at = time.time()
        self._reconnect_delay = 0.05  # the connection really works
        if batch.failed:
            self._transient_errors += 1
            pause = min(5.0, 0.05 * 2 ** min(self._transient_errors, 7)) * (0.5 + random.random() / 2)
            self._retry_at = time.monotonic() + pause
            commands = [c for c, _ in batch.failed]
            owners = [o for _, o in batch.failed]
            covers = batch.covers
            pending = self._retry
            if pending is not None:
                # A batch sent before the earlier failure was known failed too: one retry, the earlier first.
                commands = pending.commands + commands
                owners = pending.owners + owners
                covers = max(covers, pending.covers)
            events = list({id(e): e for o in owners for e in _events_of(o)}.values())
            wait_at = -1
            if self._wait_command is not None and events:
                wait_at = len(commands)
                commands.append(self._wait_command)
                owners.append(_Wait(events))
            self._retry = _Batch(b"".join(commands), owners, len(events), {}, [], commands=commands, retry=events)
            self._retry.wait_at = wait_at
            self._retry.covers = covers
            self._retry.is_retry = True
            self._wakeup.set()
        else:
            self._transient_errors = 0
            self._confirm(batch.covers)
        self._window.set()

    def _keep_book_order(self, batch: "_Batch") -> None:
        # A book write of this batch was refused (OOM refuses HSET but not HDEL): a later write of the same field
        # that went through must be replayed after it, or the retry would leave the older value in the book.
        owner = batch.owners[batch.answered]
        if isinstance(owner, _Event) and owner.book is not None and owner.book[:2] in batch.failed_books:
            command = batch.commands[batch.answered]
            if command.startswith((_HSET, _HDEL)):
                batch.failed.append((command, owner))

    def _cap_unreplicated(self) -> None:
        # Held events are on the master already; a replica outage of hours must not grow memory (and the resend
        # after a reconnect) without end. Past MAX_UNREPLICATED the oldest count as published, said once per outage.
        excess = len(self._unreplicated) - MAX_UNREPLICATED
        if excess <= 0:
            return
        if not self._unreplicated_capped:
            log.error("more than %d account events wait for a replica: the oldest are counted as published (they are "
                      "on the master) and will not be sent again if it fails", MAX_UNREPLICATED)  # fmt: skip
            self._unreplicated_capped = True
        for _ in range(excess):
            self.stats.published += self._unreplicated.popleft().publish

    def _confirm(self, covers: int) -> None:
        # Batches are answered in order, but a retry of failed commands is answered after later batches: nothing
        # is confirmed past a retry until the retry itself is answered.
        # Held unreplicated events are not confirmed either (see _batch_done).
        self._covered_seq = max(self._covered_seq, covers)
        if self._unreplicated:
            return
        if self._retry is None and not any(b.is_retry for b in self._in_flight) and self._covered_seq > self._confirmed_seq:
            self._confirmed_seq = self._covered_seq
            self._confirmed.set()

    def _error_reply(self, batch: "_Batch", reply: Exception) -> None:
        """Count an error reply; a transient one marks its command to be sent again."""
        text = str(reply)
        self.stats.errors += 1
        self.stats.last_error = text
        code = text.split(" ", 1)[0]
        owner = batch.owners[batch.answered]
        if code in CONNECTION_ERRORS or "max number of clients" in text:
            raise PublishError(f"Redis refused the connection: {text}")
        if code == "READONLY" and self._sentinel:
            # The master was demoted: find the new one; what this connection had unanswered goes there again.
            raise PublishError(f"Redis at {mask_url(self._conn.target.url)} is no longer the master: {text}")
        if isinstance(owner, _Wait):
            # WAIT refused: the events' replication is unknown, so they are held as unreplicated.
            self._wait_reply(batch, text)
            return
        if code in TRANSIENT_ERRORS:
            command = batch.commands[batch.answered]
            batch.failed.append((command, owner))
            if isinstance(owner, _Event) and owner.book is not None and command.startswith((_HSET, _HDEL)):
                batch.failed_books.add(owner.book[:2])
            if isinstance(owner, _Event) and owner.expire_commands and command not in owner.expire_commands:
                # The write is sent again later, maybe creating its key: its expiry must follow it there.
                batch.failed.extend((c, owner) for c in owner.expire_commands)
            return
        if isinstance(owner, _Event) and owner.publish:
            batch.refused.add(id(owner))
            log.error("Redis refused %s on %s (%s); payload: %s", owner.kind, owner.channel.decode(), text,
                      owner.payload.decode())
        else:
            log.error("Redis refused a command: %s", text)

    def _wait_reply(self, batch: "_Batch", replicas: Any) -> None:
        """WAIT's answer: the events of the batch count as published once ``wait_replicas`` replicas have them."""
        wanted = self.topology.wait_replicas
        if isinstance(replicas, int) and replicas >= wanted:
            if self._unreplicated_streak:
                log.info("account events reach %d replica(s) again", wanted)
            self._unreplicated_streak = 0
            self._unreplicated_capped = False
            return
        batch.unreplicated = True
        self.stats.unreplicated += 1
        self._unreplicated_streak += 1
        if self._unreplicated_streak in (1, 10) or self._unreplicated_streak % 100 == 0:
            log.warning("account events reached %s of %d replica(s) within %gs (%d time(s) in a row); they are not "
                        "counted as published until a replica has them, and sent again if the master changes first", replicas, wanted, self.topology.wait_timeout,
                        self._unreplicated_streak)  # fmt: skip
        # With no new events to carry one, a WAIT of its own asks again after a pause (growing up to 2 s).
        pause = min(2.0, 0.1 * 2 ** min(self._unreplicated_streak, 5))
        self._rewait_at = time.monotonic() + pause
        asyncio.get_running_loop().call_later(pause, self._wakeup.set)

    async def _connection_lost(self, exc: PublishError, generation: int) -> None:
        if self._lose(exc, generation):
            await self._conn.close()

    def _lose(self, exc: PublishError, generation: int) -> bool:
        """Give up connection ``generation``: note why, queue what it had unanswered again, wake the writer to
        reconnect. ``False`` when that connection was already given up (the caller then leaves it alone)."""
        if generation != self._generation:
            return False  # an older connection: the current one is already being handled
        self._note_error(exc)
        self._generation += 1
        self._requeue_unanswered()  # synchronously: before any await lets a reconnect start
        watcher, self._watchdog = self._watchdog, None
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
        self._window.set()
        self._wakeup.set()
        return True

    def _requeue_unanswered(self) -> None:
        """Queue every unanswered batch and the pending retry again: newest first, so that account events end
        up in their order (a retry goes back as its whole events); a quote only where no newer one is queued."""
        while self._in_flight:
            batch = self._in_flight.pop()
            self._reliable.extendleft(reversed(batch.reliable or batch.retry))
            for ch, quote in batch.quotes.items():
                if ch not in self._quotes:
                    self._quotes[ch] = quote
                    self._quote_seqs[ch] = 0  # its batch was lost: nothing it stood for is confirmed yet
        if self._retry is not None:
            self._reliable.extendleft(reversed(self._retry.retry))
            self._retry = None
        if self._unreplicated:  # older than anything above: written, but maybe only to a master that is gone
            self._reliable.extendleft(reversed(self._unreplicated))
            self._unreplicated.clear()

    def _note_error(self, exc: Exception) -> None:
        if self.stats.connected:
            log.error("Redis unreachable, queueing (quotes conflated, account events kept): %s", exc)
            self.stats.reconnects += 1
        self.stats.connected = False
        self.stats.errors += 1
        self.stats.last_error = str(exc)

    def _take_batch(self) -> "_Batch | None":
        reliable: list[_Event] = []
        budget = self.max_batch
        while self._reliable and budget > 0:
            reliable.append(self._reliable.popleft())
            budget -= 1
        quotes: dict[str, Quote]
        if len(self._quotes) <= budget:
            quotes, self._quotes = self._quotes, {}
            self._quote_seqs = {}
        else:
            quotes = {}
            for ch in list(self._quotes)[:budget]:
                quotes[ch] = self._quotes.pop(ch)
                del self._quote_seqs[ch]

        commands: list[bytes] = []
        owners: list[Any] = []
        # The MSET of the latest copies, piece by piece (joined once at the end); its first piece is its head.
        latest_pairs: list[bytes] = [b""]
        # Formatted inline from cached heads: this runs for every quote, and the generic command() costs
        # several times more.
        heads = self._quote_heads
        latest = self.latest
        expire = self._expire_px
        join = b"".join
        sizes = _SIZES
        unencodable: list[str] = []
        for ch, quote in quotes.items():
            if type(quote) is Quote:
                try:
                    payload = _plain_dumps(quote_to_dict(quote))
                except TypeError:
                    payload = self._encode(ch, quote)
            else:
                payload = self._encode(ch, quote)
            if payload is None:
                unencodable.append(ch)
                continue
            try:
                head = heads[ch]
            except KeyError:
                head = self._quote_head(ch, quote)
            try:
                size = sizes[len(payload)]
            except IndexError:
                size = b"$%d\r\n" % len(payload)
            commands.append(join((head[0], size, payload, b"\r\n")))
            owners.append(ch)
            if latest:
                if expire and (quote.instance or quote.broker) in expire:
                    commands.append(join((b"*5\r\n$3\r\nSET\r\n", head[1], size, payload, b"\r\n",
                                          expire[quote.instance or quote.broker])))
                    owners.append(None)
                else:
                    latest_pairs += (head[1], size, payload, b"\r\n")
        pairs = (len(latest_pairs) - 1) // 4  # four pieces a quote
        for ch in unencodable:
            del quotes[ch]
        for event in reliable:
            if event.publish:
                commands.append(command(b"PUBLISH", event.channel, event.payload))
                owners.append(event)
                if event.latest_key is not None:
                    if event.expire is None:
                        latest_pairs += (_bulk(event.latest_key), _bulk(event.payload))
                        pairs += 1
                    else:
                        commands.append(command(b"SET", event.latest_key, event.payload, b"PX", event.expire))
                        owners.append(event)
                if event.stream_key is not None:
                    commands.append(command(b"XADD", event.stream_key, b"MAXLEN", b"~", event.maxlen, b"*", b"data", event.payload,
                                            *self._epoch_fields))
                    owners.append(event)
            if event.book is not None:
                key, field, closed = event.book
                commands.append(command(b"HDEL", key, field) if closed else command(b"HSET", key, field, event.payload))
                owners.append(event)
            if event.expire_commands:
                commands.extend(event.expire_commands)
                owners.extend([event] * len(event.expire_commands))
        if pairs:
            latest_pairs[0] = b"*%d\r\n$4\r\nMSET\r\n" % (1 + 2 * pairs)
            commands.append(join(latest_pairs))
            owners.append(None)
        wait_at = -1
        # While replicas lag (the last WAIT fell short), ordinary batches carry no WAIT: Redis runs nothing after a
        # WAIT on this connection until it returns, so every quote would wait wait_timeout behind it. Their events
        # are held (see _batch_done) and the paced WAIT of _rewait_due covers them all.
        if self._wait_command is not None and ((reliable and not self._unreplicated_streak) or self._rewait_due()):
            wait_at = len(commands)
            commands.append(self._wait_command)
            owners.append(_Wait(reliable))
        # Covers every publish before the oldest one still queued (max_batch may leave some for the next batch).
        oldest = min(self._quote_seqs.values(), default=self._published_seq + 1) if self._quotes else self._published_seq + 1
        if self._reliable:
            oldest = min(oldest, self._reliable[0].seq)
        covers = oldest - 1
        if not owners:
            # Everything taken was refused as unencodable: it confirms with whatever is still unanswered.
            if self._retry is not None:
                self._retry.covers = max(self._retry.covers, covers)
            elif self._in_flight:
                self._in_flight[-1].covers = max(self._in_flight[-1].covers, covers)
            else:
                self._confirm(covers)
            return None
        messages = len(quotes) + sum(1 for event in reliable if event.publish)
        batch = _Batch(b"".join(commands), owners, messages, quotes, reliable, commands=commands)
        batch.covers = covers
        batch.wait_at = wait_at
        return batch

    def _encode(self, ch: str, model: Any) -> bytes | None:
        """The payload of a queued quote or order book; ``None`` (a counted, logged skip) if it cannot be encoded."""
        try:
            return dumps(to_dict(model))
        except (TypeError, ValueError) as exc:
            self.stats.skipped += 1
            log.error("skipped a quote on %s that cannot be encoded: %s", ch, exc)
            return None

    def _quote_channel(self, symbol: Any) -> str:
        """The channel of ``symbol``'s quotes, checked (:func:`~livedata_core.channels.channel` raises for a symbol that
        cannot be part of one) and kept: publish() runs for every quote and the check costs more than a lookup."""
        ch = channel("quotes", symbol, self.prefix)
        if len(self._quote_channels) >= MAX_CACHED_HEADS:
            self._quote_channels.clear()  # symbols come and go over weeks; the cache must not grow without end
        self._quote_channels[symbol] = ch
        return ch

    def _quote_head(self, ch: str, model: Any) -> tuple[bytes, bytes]:
        """The RESP bytes before a conflated payload (a quote, an order book): ``PUBLISH <channel>`` and the MSET key
        of its latest copy."""
        if len(self._quote_heads) >= MAX_CACHED_HEADS:
            self._quote_heads.clear()  # symbols come and go over weeks; the cache must not grow without end
        chb = ch.encode()
        key = latest_key(model.TYPE, model.symbol, self.prefix).encode()
        head = (b"*3\r\n$7\r\nPUBLISH\r\n" + _bulk(chb), _bulk(key))
        self._quote_heads[ch] = head
        return head



_ERROR = hiredis.ReplyError
_plain_dumps = orjson.dumps  # a quote's dict has plain types only (else _encode's full dumps() says what is wrong)
_SIZES = [b"$%d\r\n" % n for n in range(2048)]  # the RESP length line of a payload of n bytes
_HSET = b"*4\r\n$4\r\nHSET\r\n"
_HDEL = b"*3\r\n$4\r\nHDEL\r\n"


def _bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(arg), arg)


class _Event:
    """An account event, encoded once when it is published, with every key it is written to."""

    __slots__ = ("kind", "channel", "latest_key", "stream_key", "book", "payload", "seq", "publish", "expire",
                 "expire_commands", "maxlen")

    def __init__(
        self, kind: str, identifier: str, payload: bytes, publisher: AsyncPublisher, book: tuple[str, bool] | None
    ) -> None:
        prefix = publisher.prefix
        self.kind = kind
        self.channel = channel(kind, identifier, prefix).encode()
        self.latest_key = latest_key(kind, identifier, prefix).encode() if publisher.latest else None
        self.stream_key = (
            stream_key(kind, identifier, prefix).encode() if publisher.streams and kind in STREAM_TYPES else None
        )
        self.maxlen = publisher._bars_maxlen if kind == "bars" else publisher._maxlen
        self.book = (
            (book_key(kind, identifier, prefix).encode(), book[0].encode(), book[1])
            if book is not None and publisher.latest
            else None
        )
        # An exact-size copy: orjson hands back its whole encoding buffer (8 KB for a 400-byte order), and queued
        # events are kept for as long as Redis is down.
        self.payload = bytes(memoryview(payload))
        self.seq = 0  # the publish number (set by publish())
        self.publish = True  # False: only the book write (drop_from_book)
        self.expire: bytes | None = None  # milliseconds its keys live after this write (AsyncPublisher.expire)
        self.expire_commands: tuple[bytes, ...] = ()

    def set_expiry(self, milliseconds: bytes) -> None:
        """Make every key this event writes expire: the latest key by ``SET ... PX``, the rest by ``PEXPIRE``."""
        self.expire = milliseconds
        keys = [k for k in (self.stream_key, self.book[0] if self.book is not None else None) if k is not None]
        self.expire_commands = tuple(command(b"PEXPIRE", key, milliseconds) for key in keys)


class _Wait:
    """The owner of a pipeline's closing ``WAIT``: the account events whose replication it asks about."""

    __slots__ = ("events",)

    def __init__(self, events: list[_Event]) -> None:
        self.events = events


def _events_of(owner: Any) -> list[_Event]:
    """The account events a command belongs to (a WAIT belongs to all of its pipeline's)."""
    if isinstance(owner, _Event):
        return [owner]
    if isinstance(owner, _Wait):
        return owner.events
    return []


class _Batch:
    """One pipeline sent to Redis, what it carried, and whose each command is, until all replies are in."""

    __slots__ = ("data", "commands", "owners", "answered", "messages", "quotes", "reliable", "retry", "failed",
                 "generation", "sent_at", "covers", "is_retry", "failed_books", "refused", "wait_at", "unreplicated")

    def __init__(
        self,
        data: bytes,
        owners: list[Any],
        messages: int,
        quotes: dict[str, Quote],
        reliable: list[_Event],
        *,
        commands: list[bytes] | None = None,
        retry: list[_Event] | None = None,
    ) -> None:
        self.data = data
        self.commands = commands if commands is not None else []
        self.owners = owners
        self.answered = 0
        self.messages = messages
        self.quotes = quotes
        self.reliable = reliable
        self.retry = retry or []  # a batch of failed commands: the events they belong to
        self.failed: list[tuple[bytes, Any]] = []
        self.generation = 0
        self.sent_at = 0.0
        self.covers = 0  # the publish number this batch confirms once answered (0: none)
        self.is_retry = False
        self.failed_books: set[tuple[bytes, bytes]] = set()  # (key, field) of book writes refused in this batch
        self.refused: set[int] = set()  # id() of events a command of which Redis refused for good
        self.wait_at = -1  # the index of the closing WAIT command (-1: none)
        self.unreplicated = False  # its WAIT saw fewer replicas than wanted
