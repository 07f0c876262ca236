"""Publishing to a Redis Cluster: the :class:`~livedata_core.redis_io.publisher.aio.AsyncPublisher` queues with a writer
that routes every command by its key's slot.

Quotes are conflated and account events queued in order exactly as for one server (the same ``publish()``,
``flush()``, ``close()``); what differs is how a batch goes out. Each quote and event becomes its commands (the
channel's ``PUBLISH``, or ``SPUBLISH`` with ``sharded``; ``SET`` of the latest key, ``XADD``, ``HSET``/``HDEL``,
``PEXPIRE``), and redis-py's cluster pipeline sends each to the node that owns its key, one pipeline per node,
in order, following ``MOVED`` and ``ASK`` redirections and refreshing its slot map when the topology changes.
There are no multi-key commands: the latest keys of a batch, one ``MSET`` on one server, are one ``SET`` each
(keys of different slots cannot share a command). One batch is sent at a time, so every key's writes stay in
order.

A command that fails for a reason that may pass (a node down or failing over, ``TRYAGAIN``, ``CLUSTERDOWN``,
``LOADING``...) makes its quote queue again (unless a newer one is queued) and its event, with every event after
it in the batch, go back to the front of the queue: they are sent again, in order, after a pause. An event
written before the failure may so be written twice (at least once, never lost). A refusal for good (``WRONGTYPE``)
is logged with the payload and counted, as on one server.

Plain ``PUBLISH`` on a cluster reaches subscribers on every node (it is broadcast over the cluster bus, at a cost
to every node); ``SPUBLISH`` stays on the node that owns the channel's slot, and consumers ``SSUBSCRIBE`` there
(:func:`livedata_core.redis_io.subscriber.subscribe` does, see docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ...aio_tools import within
from ...channels import latest_key
from ...errors import PublishError
from ...models import Quote, to_dict
from ..topology import RedisTopology, async_client
from .aio import MAX_CACHED_HEADS, REPLY_TIMEOUT, TRANSIENT_ERRORS, AsyncPublisher, _Event
from .encoding import dumps

__all__ = ["ClusterPublisher"]

log = logging.getLogger("livedata.publisher")


class ClusterPublisher(AsyncPublisher):
    """Publish models to a Redis Cluster from asyncio code; the API and guarantees of :class:`AsyncPublisher`.

    :param url: a :class:`~livedata_core.redis_io.topology.RedisTopology` with ``cluster=True`` (``sharded`` for
        ``SPUBLISH``).
    """

    _CLUSTER = True

    def __init__(self, url: RedisTopology, **options: Any) -> None:
        super().__init__(url, **options)
        if not self.topology.cluster:
            raise ValueError("ClusterPublisher needs a RedisTopology with cluster=True")
        self._publish_word = "SPUBLISH" if self.topology.sharded else "PUBLISH"  # redis-py routes by a str name
        self._client: Any = None
        self._latest_keys: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"ClusterPublisher({self.topology.describe()!r})"

    async def start(self, *, wait_connected: bool = True) -> None:
        """Start the writer. With ``wait_connected`` (default), raise ``PublishError`` if no seed node answers."""
        self._client = async_client(self.topology, socket_connect_timeout=5, socket_timeout=REPLY_TIMEOUT)
        if wait_connected:
            await self._connect()
        self._task = asyncio.create_task(self._cluster_writer(), name="livedata-cluster-publisher")

    async def _connect(self) -> None:
        try:
            await within(self._client.initialize(), REPLY_TIMEOUT)
        except Exception as exc:  # redis-py raises several kinds for a cluster it cannot map
            raise PublishError(f"cannot reach the Redis Cluster {self.topology.describe()}: {exc}") from None
        if not self.stats.connected:
            log.info("connected to the Redis Cluster %s", self.topology.describe())
        self.stats.connected = True

    async def close(self, timeout: float = 5.0) -> int:
        """As :meth:`AsyncPublisher.close`; also closes the connections to every node."""
        lost = await super().close(timeout)
        if self._client is not None:
            try:
                await within(self._client.aclose(), 2.0)
            except Exception:  # closing what is already broken
                pass
        return lost

    def abort(self) -> None:
        """As :meth:`AsyncPublisher.abort`: cancel the pipeline being sent (redis-py owns the node connections;
        :meth:`close` closes them)."""
        if self._task is not None:
            self._task.cancel()
        self.stats.connected = False

    # -- writer ------------------------------------------------------------------------------------------------

    async def _cluster_writer(self) -> None:
        while True:
            try:
                await self._write_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop publishing for good, as in the single-server writer
                log.exception("cluster publisher failed; going on")
                await asyncio.sleep(0.1)

    async def _write_once(self) -> None:
        if not (self._quotes or self._reliable):
            self._wakeup.clear()
            await self._wakeup.wait()
            return
        if self.fence is not None and not self.fence():
            await asyncio.sleep(0.05)  # lost the lease (runner/ha): nothing more is sent
            return
        if not self.stats.connected:
            try:
                await self._connect()
            except PublishError as exc:
                self._note_error(exc)
                await asyncio.sleep(self._next_reconnect_delay())
                return
        quotes, events, covers = self._take()
        try:
            owners, results = await self._send(quotes, events)
        except asyncio.CancelledError:
            self._put_back(quotes, events, 0)
            raise
        except Exception as exc:  # the whole pipeline: no node reachable, the slot map lost...
            self._put_back(quotes, events, 0)
            self._note_error(PublishError(f"Redis Cluster {self.topology.describe()}: {type(exc).__name__}: {exc}"))
            await asyncio.sleep(self._next_reconnect_delay())
            return
        if self._settle(quotes, events, owners, results, covers):
            await asyncio.sleep(self._next_reconnect_delay())

    def _take(self) -> tuple[dict[str, Quote], list[_Event], int]:
        events: list[_Event] = []
        while self._reliable and len(events) < self.max_batch:
            events.append(self._reliable.popleft())
        budget = max(self.max_batch - len(events), 0)
        quotes: dict[str, Quote] = {}
        for ch in list(self._quotes)[:budget]:
            quotes[ch] = self._quotes.pop(ch)
            del self._quote_seqs[ch]
        oldest = min(self._quote_seqs.values(), default=self._published_seq + 1)
        if self._reliable:
            oldest = min(oldest, self._reliable[0].seq)
        return quotes, events, oldest - 1

    async def _send(self, quotes: dict[str, Quote], events: list[_Event]) -> tuple[list[Any], list[Any]]:
        pipe = self._client.pipeline(transaction=False)
        owners: list[Any] = []
        word = self._publish_word
        for ch, quote in list(quotes.items()):
            try:
                payload = dumps(to_dict(quote))
            except (TypeError, ValueError) as exc:
                del quotes[ch]
                self.stats.skipped += 1
                log.error("skipped a quote on %s that cannot be encoded: %s", ch, exc)
                continue
            pipe.execute_command(word, ch, payload)
            owners.append(ch)
            if self.latest:
                expire = self._expire_ms.get(quote.instance or quote.broker) if self._expire_ms else None
                pipe.execute_command("SET", self._latest_key(ch, quote), payload, *((b"PX", expire) if expire else ()))
                owners.append(ch)
        for event in events:
            if event.publish:
                pipe.execute_command(word, event.channel, event.payload)
                owners.append(event)
                if event.latest_key is not None:
                    expire = (b"PX", event.expire) if event.expire is not None else ()
                    pipe.execute_command("SET", event.latest_key, event.payload, *expire)
                    owners.append(event)
                if event.stream_key is not None:
                    pipe.execute_command("XADD", event.stream_key, b"MAXLEN", b"~", event.maxlen, b"*", b"data", event.payload,
                                         *self._epoch_fields)
                    owners.append(event)
            if event.book is not None:
                key, field, closed = event.book
                if closed:
                    pipe.execute_command("HDEL", key, field)
                else:
                    pipe.execute_command("HSET", key, field, event.payload)
                owners.append(event)
            if event.expire is not None:
                for key in (event.stream_key, event.book[0] if event.book is not None else None):
                    if key is not None:
                        pipe.execute_command("PEXPIRE", key, event.expire)
                        owners.append(event)
        if not owners:
            return [], []
        results = await within(pipe.execute(raise_on_error=False), REPLY_TIMEOUT * 2)
        return owners, results

    def _latest_key(self, ch: str, model: Any) -> bytes:
        key = self._latest_keys.get(ch)
        if key is None:
            if len(self._latest_keys) >= MAX_CACHED_HEADS:
                self._latest_keys.clear()
            key = self._latest_keys[ch] = latest_key(model.TYPE, model.symbol, self.prefix).encode()
        return key

    def _settle(self, quotes: dict[str, Quote], events: list[_Event], owners: list[Any], results: list[Any],
                covers: int) -> bool:
        """Count what went through; queue again what failed for now. Returns whether to pause before the next."""
        from redis.exceptions import AskError, ClusterDownError, MovedError, ResponseError, TryAgainError

        failed_at: int | None = None  # index in ``events`` of the first event a command of which failed for now
        failed_quotes: set[str] = set()
        refused: set[int] = set()
        index = {id(event): i for i, event in enumerate(events)}
        for owner, result in zip(owners, results):
            if not isinstance(result, Exception):
                continue
            text = str(result)
            self.stats.errors += 1
            self.stats.last_error = text
            permanent = (isinstance(result, ResponseError)
                         and not isinstance(result, (AskError, ClusterDownError, MovedError, TryAgainError))
                         and text.split(" ", 1)[0] not in TRANSIENT_ERRORS)  # fmt: skip
            if isinstance(owner, _Event):
                if permanent:
                    if owner.publish and id(owner) not in refused:
                        refused.add(id(owner))
                        log.error("Redis refused %s on %s (%s); payload: %s", owner.kind, owner.channel.decode(), text,
                                  owner.payload.decode())  # fmt: skip
                else:
                    at = index[id(owner)]
                    failed_at = at if failed_at is None else min(failed_at, at)
            elif permanent:
                log.error("Redis refused a command: %s", text)
            else:
                failed_quotes.add(owner)
        self.stats.batches += 1
        self.stats.last_publish_at = time.time()
        again = events[failed_at:] if failed_at is not None else []
        again_ids = {id(event) for event in again}
        published_events = sum(1 for e in events if e.publish and id(e) not in again_ids and id(e) not in refused)
        self.stats.refused += len(refused - again_ids)
        self.stats.published += len(quotes) - len(failed_quotes) + published_events
        if again or failed_quotes:
            if again:
                log.warning("%d account events go to the Redis Cluster again after: %s", len(again), self.stats.last_error)
            self._put_back({ch: quotes[ch] for ch in failed_quotes}, again, 0)
            return True
        self._reconnect_delay = 0.05
        self._confirm(covers)
        return False

    def _put_back(self, quotes: dict[str, Quote], events: list[_Event], seq: int) -> None:
        """Queue events again at the front, in order, and quotes where no newer one is queued."""
        self._reliable.extendleft(reversed(events))
        for ch, quote in quotes.items():
            if ch not in self._quotes:
                self._quotes[ch] = quote
                self._quote_seqs[ch] = seq  # 0: nothing it stood for is confirmed yet
        if events or quotes:
            self._wakeup.set()
