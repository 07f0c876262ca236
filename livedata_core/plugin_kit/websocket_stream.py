"""A base class for brokers that stream over one websocket: the plumbing every such broker needs.

:class:`WebSocketStream` is a :class:`~livedata_core.plugin_kit.streaming.BrokerStream` that owns the connection; a
subclass speaks the broker's protocol in four methods:

=======================  ========================================================================================
Override                 What it does
=======================  ========================================================================================
``on_frame(raw)``        required: parse one received frame; return what ``events()`` yields for it (a model, a
                         list of models, :data:`~livedata_core.plugin_kit.streaming.HEARTBEAT`) or ``None``. Hand replies
                         to waiting requests with :meth:`~WebSocketStream.resolve` (by id) or
                         :meth:`~WebSocketStream.offer` (by predicate).
``login()``              log in once the socket is open (the reader already runs: use :meth:`~WebSocketStream.request`)
``logout()``             a polite goodbye, bounded by ``logout_timeout``, at :meth:`~WebSocketStream.close`
``connect_options()``    extra arguments for ``websockets.connect`` (headers, ``ssl``, ``proxy``)
=======================  ========================================================================================

What the base owns:

- **connect with a deadline**: the socket opens within ``open_timeout``, and ``connect()`` as a whole (open and
  ``login()``) finishes within ``connect_timeout`` or raises :class:`~livedata_core.errors.StreamError`. A socket
  that cannot be opened is a ``StreamError`` naming the host (never a raw ``OSError``).
- **a reader task** that reads every frame from ``connect()`` on, so replies are matched while ``events()`` is
  not being read, and ``subscribe()`` may run while it is (the runner's live control). What ``on_frame``
  returns is queued for ``events()``; when ``queue_frames`` items wait, the reader stops reading until the
  consumer catches up (the broker's socket buffer fills, not our memory).
- **request/reply**: :meth:`~WebSocketStream.request` sends a message and waits for its reply, matched by a key
  (the id the broker echoes) or by a predicate, for at most ``request_timeout`` seconds. A request left
  unanswered ends the connection (a late reply could be taken for another's): ``StreamError``, and the runner
  reconnects.
- **heartbeats from pings** for a broker that sends none: with ``ping_interval`` set, a websocket ping every so
  many seconds, and each pong is yielded as ``HEARTBEAT`` (no pong within ``ping_timeout``: ``StreamError``).
- **a frame size limit**: a frame larger than ``max_frame_bytes`` ends the connection (counted as a skip,
  reported as a ``StreamError`` naming the limit).
- **cancellation-safe close**: :meth:`~WebSocketStream.close` never raises but a cancellation, is bounded, and
  leaves no socket open even when cancelled (the TCP connection is aborted when the closing handshake does not
  finish in time). After it, ``events()`` hands over what was received but not yet read, then ends.
- **counted skips**: ``self.stats`` (:class:`~livedata_core.plugin_kit.streaming.StreamStats`, logging to ``self.log``); a
  frame whose ``on_frame`` raises is counted as ``frame could not be parsed``, never the end of the stream.
- **a tap**: ``stream.tap = callable(direction, data, time)`` sees every data frame, ``"in"`` as received and
  ``"out"`` as sent, with the wall-clock time (``time.time()``) before it is parsed or after it was sent. Set it
  on the stream (or pass ``tap=`` to the constructor) to record a session; unset, it costs one attribute check
  per frame. A tap that raises is logged once and removed, never the end of the stream.
- **the receive time**: :meth:`~WebSocketStream.received_ms` is the time the frame being parsed was received
  (the tap's time): a parser stamps ``received_at`` with it, so a replay of a recording, whose ``clock`` gives
  each frame's recorded time, publishes the very payloads the live run published.

``events()`` ends when the broker closes politely, and raises the error that ended the connection otherwise:
one set with :meth:`~WebSocketStream.fail`, a lost connection (``StreamError``), an unanswered request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidHandshake, InvalidURI

from ..aio_tools import reraise_if_cancelling, within
from ..errors import StreamError
from .streaming import HEARTBEAT, BrokerStream, StreamStats

__all__ = ["Tap", "WebSocketStream", "frames_logger", "url_host"]

Tap = Callable[[str, "str | bytes", float], None]
"""``tap(direction, data, time)``: ``direction`` is ``"in"`` or ``"out"``, ``data`` the frame as sent on the
wire (``str`` for text frames, ``bytes`` for binary ones), ``time`` the wall-clock time in seconds."""

_END = object()
# websockets logs every frame at DEBUG, abridged but not redacted (a login frame carries a token): its logger is
# held at INFO whatever level the application sets, by a filter too, because logging.config.dictConfig (Django's
# LOGGING naming "livedata") resets the level of every existing child logger and leaves its filters.


class _NothingBelowInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO


def frames_logger(name: str) -> logging.Logger:
    """A logger to hand ``websockets`` (``connect(logger=...)``) that never passes its DEBUG frame lines on."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    if not any(isinstance(f, _NothingBelowInfo) for f in logger.filters):
        logger.addFilter(_NothingBelowInfo())
    return logger


_WS_LOG = frames_logger("livedata.websocket")


class _Waiter:
    __slots__ = ("key", "match", "future", "what")

    def __init__(self, key: Hashable | None, match: Callable[[Any], bool] | None, future: asyncio.Future, what: str):
        self.key = key
        self.match = match
        self.future = future
        self.what = what


class WebSocketStream(BrokerStream):
    """A broker stream over one websocket. See the module docstring for what a subclass writes.

    :param url: the ``ws://`` or ``wss://`` address to connect to.
    :param log: the logger for this stream and its skips (``ctx.log``).
    :param tap: a :data:`Tap` for every frame in and out (see the module docstring).

    The class attributes below are the defaults; set them on a subclass or on the instance.
    """

    #: How errors and logs name the broker's end ("the Example exchange").
    name: str = "the broker"
    #: Seconds for the TCP connection, TLS and the websocket handshake.
    open_timeout: float = 10.0
    #: Seconds for the whole of ``connect()`` (open and ``login()``); ``None``: no deadline beyond the steps'.
    connect_timeout: float | None = 30.0
    #: Seconds :meth:`request` waits for a reply by default.
    request_timeout: float = 10.0
    #: Seconds for ``logout()`` in :meth:`close`; then the socket is closed anyway.
    logout_timeout: float = 0.8
    #: Seconds for the closing handshake; then the TCP connection is aborted.
    close_timeout: float = 0.5
    #: The largest frame accepted, in bytes; a larger one ends the connection.
    max_frame_bytes: int = 2**24
    #: Seconds between websocket pings whose pongs are yielded as ``HEARTBEAT``; ``None``: no pings of ours.
    ping_interval: float | None = None
    #: Seconds to wait for a pong before the connection counts as lost.
    ping_timeout: float = 10.0
    #: Items waiting for ``events()`` at which the reader pauses.
    queue_frames: int = 10_000
    #: Seconds the reader goes on reading after :meth:`fail`, for frames the broker had already sent.
    read_rest_timeout: float = 0.5
    #: What opens the socket: ``websockets.connect`` unless set (a replay sets a recording's connection here).
    opener: Callable[..., Any] | None = None
    #: The wall clock of receive times (:meth:`received_ms`, the tap's time); a replay gives the recorded ones.
    clock: Callable[[], float] = staticmethod(time.time)

    def __init__(self, url: str, *, log: logging.Logger | None = None, tap: Tap | None = None) -> None:
        super().__init__()
        self.url = url
        self.log = log or logging.getLogger("livedata.stream")
        self.stats = StreamStats(self.log)
        self.tap: Tap | None = tap
        self.ready = False
        """``login()`` succeeded on this connection."""
        # Unbounded, with the bound applied by the reader after it queued a frame: a reader cancelled while it
        # waits for room has already handed its frame over, so nothing received is lost at shutdown.
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._by_key: dict[Hashable, _Waiter] = {}
        self._by_match: list[_Waiter] = []
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._closing = False
        self._ended = False  # the end marker is queued for events()
        self._received = 0.0  # clock() when the frame being parsed was received

    def __repr__(self) -> str:
        return f"{type(self).__name__}({url_host(self.url)!r}, ready={self.ready})"

    # -- what a subclass writes ------------------------------------------------------------------------------

    def on_frame(self, raw: str | bytes) -> Any:
        """Parse one received frame and return what ``events()`` yields for it, or ``None`` (an empty list is
        nothing too). Runs in the reader task: it must not block. The default parses JSON and yields nothing."""
        self.decode(raw)
        return None

    async def login(self) -> None:
        """Log in after the socket opened (the reader runs: :meth:`request` works). Raise ``AuthError`` for a
        refused login. The default does nothing."""

    async def logout(self) -> None:
        """Say goodbye politely; called by :meth:`close` on a connection that logged in and did not fail."""

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for ``websockets.connect``; extend the default (``super().connect_options()``) to add
        headers, ``ssl`` or ``proxy``."""
        options: dict[str, Any] = {
            "open_timeout": self.open_timeout,
            "max_size": self.max_frame_bytes,
            "close_timeout": self.close_timeout,
            "logger": _WS_LOG,
        }
        if self.ping_interval is not None:
            options["ping_interval"] = None  # our own pings replace websockets' keep-alive
        return options

    def connect_failed(self, exc: Exception) -> Exception:
        """The error ``connect()`` raises when the socket could not be opened (``exc``: ``OSError``, a refused
        handshake, a timeout). The default is a ``StreamError`` naming the host and the cause."""
        return StreamError(f"could not connect to {self.name} at {url_host(self.url)}: {type(exc).__name__}: {exc}")

    def connection_lost(self, exc: ConnectionClosed) -> Exception:
        """The error ``events()`` raises when the connection dropped without a polite close."""
        return StreamError(f"{self.name} connection was lost: {exc}")

    # -- helpers for the subclass -----------------------------------------------------------------------------

    def received_ms(self) -> int:
        """When the frame being parsed was received, in integer milliseconds since the epoch: the ``received_at``
        of what :meth:`on_frame` builds from it (in a replay, the recorded time)."""
        return int(self._received * 1000)

    def decode(self, raw: str | bytes) -> Any:
        """``raw`` parsed as JSON, or ``None`` (counted as ``frame is not JSON``)."""
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.stats.skip("frame is not JSON", raw[:200])
            return None

    async def send(self, message: str | bytes | dict | list) -> None:
        """Send one frame (a dict or list is sent as JSON text).

        :raises StreamError: the connection is closed or failed (the error that ended it, if one did).
        """
        if type(message) is dict or type(message) is list:
            message = orjson.dumps(message).decode()
        ws = self._ws
        if ws is None:
            raise StreamError(f"the connection to {self.name} is closed")
        try:
            await ws.send(message)
        except ConnectionClosed:
            raise self._failure or StreamError(f"{self.name} closed the connection") from None
        tap = self.tap
        if tap is not None:
            self._tap("out", message)

    async def request(
        self,
        message: str | bytes | dict | list | None,
        *,
        key: Hashable | None = None,
        match: Callable[[Any], bool] | None = None,
        timeout: float | None = None,
        what: str = "a request",
    ) -> Any:
        """Send ``message`` and return its reply: what :meth:`resolve` was given for ``key``, or the first frame
        :meth:`offer` was given that ``match`` accepts. ``message=None`` sends nothing and only waits.

        :param what: names the request in errors (``"SUBS LEVELONE_EQUITIES"``).
        :raises StreamError: no reply within ``timeout`` (default :attr:`request_timeout`; the connection is
            then ended, as a late reply could be taken for another request's), or the connection ended first.
        """
        if (key is None) == (match is None):
            raise TypeError("request() takes exactly one of key= and match=")
        if self._failure is not None:
            raise self._failure
        ws = self._ws
        if ws is None:
            raise StreamError(f"the connection to {self.name} is closed")
        timeout = self.request_timeout if timeout is None else timeout
        waiter = _Waiter(key, match, asyncio.get_running_loop().create_future(), what)
        if key is not None:
            if key in self._by_key:
                raise ValueError(f"a request with key {key!r} is already waiting")
            self._by_key[key] = waiter
        else:
            self._by_match.append(waiter)
        try:
            if message is not None:
                try:
                    await self.send(message)
                except StreamError:
                    if self._failure is None:
                        raise StreamError(f"{self.name} closed the connection during {what}") from None
                    raise
            return await within(waiter.future, timeout)
        except TimeoutError:
            error = StreamError(f"{self.name} did not answer {what} within {timeout:g} s")
            self.fail(error)
            ws.transport.abort()  # wakes the reader, which ends events() with this error
            raise error from None
        finally:
            if key is not None:
                if self._by_key.get(key) is waiter:
                    del self._by_key[key]
            elif waiter in self._by_match:
                self._by_match.remove(waiter)

    def resolve(self, key: Hashable, reply: Any) -> bool:
        """Hand ``reply`` to the request waiting under ``key``; ``False`` if none is."""
        waiter = self._by_key.get(key)
        if waiter is None or waiter.future.done():
            return False
        waiter.future.set_result(reply)
        return True

    def offer(self, frame: Any) -> bool:
        """Hand ``frame`` to the first waiting request whose ``match`` accepts it; ``False`` if none does."""
        for waiter in self._by_match:
            if not waiter.future.done() and waiter.match(frame):  # type: ignore[misc]
                waiter.future.set_result(frame)
                return True
        return False

    def waiting(self) -> bool:
        """Whether a request waits for its reply."""
        return bool(self._by_key or self._by_match)

    def put(self, item: Any) -> None:
        """Queue ``item`` for ``events()`` from outside :meth:`on_frame` (a task of the subclass)."""
        self._queue.put_nowait(item)

    def fail(self, error: BaseException) -> None:
        """End the connection with ``error``: ``events()`` yields what was received, then raises it. From
        :meth:`on_frame`, the reader goes on reading for ``read_rest_timeout`` seconds (frames the broker sent
        before it closes), then stops. From elsewhere, also call :meth:`end` (or close the socket). The first
        error set wins."""
        if self._failure is None:
            self._failure = error

    async def end(self, error: BaseException) -> None:
        """:meth:`fail` with ``error`` and close the socket now (bounded), which wakes the reader."""
        self.fail(error)
        ws = self._ws
        if ws is not None:
            await _close_ws(ws, self.close_timeout)

    @property
    def failure(self) -> BaseException | None:
        """The error that ended this connection, if one did."""
        return self._failure

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the socket, start the reader, run :meth:`login`; all within ``connect_timeout``.

        :raises StreamError: the broker could not be reached, or did not finish in time.
        """
        deadline = asyncio.timeout(self.connect_timeout)
        try:
            async with deadline:
                try:
                    self._ws = await (self.opener or ws_connect)(self.url, **self.connect_options())
                except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                    raise self.connect_failed(exc) from None
                self._reader = asyncio.create_task(self._read_loop(self._ws), name=f"livedata-reader-{type(self).__name__}")
                await self.login()
                # Nothing below awaits: a cancellation that came as the login finished must stop us here, or the
                # tasks would start for a stream nobody reads.
                reraise_if_cancelling()
                self.ready = True
        except TimeoutError:
            await self._shutdown()
            if deadline.expired():
                raise StreamError(f"{self.name} did not finish connecting within {self.connect_timeout:g} s") from None
            raise
        except BaseException:
            await self._shutdown()
            raise
        if self.ping_interval is not None:
            self._pinger = asyncio.create_task(self._ping_loop(), name=f"livedata-pinger-{type(self).__name__}")

    def check_alive(self) -> None:
        """Called by ``events()`` before it waits for each next item (not after :meth:`close`): raise to end
        ``events()`` for a reason the socket does not show (a session another task saw expire). Default: nothing."""

    async def events(self) -> AsyncIterator[Any]:
        """Yield what the frames carried until the connection ends; raise the error that ended it, if one did.
        After :meth:`close`, yield what was received but not yet read, then end."""
        queue = self._queue
        draining = self._closing
        check_alive = self.check_alive
        while True:
            if not draining:
                check_alive()
            item = await queue.get()
            if item is _END:
                queue.put_nowait(_END)  # a second reader ends too
                if self._failure is not None:
                    raise self._failure
                return
            yield item

    async def close(self) -> None:
        """:meth:`logout` (bounded) and close the socket. Never raises but a cancellation; no socket outlives it."""
        if self._closing:
            return
        self._closing = True
        try:
            if self.ready and self._failure is None and self._ws is not None:
                await within(self.logout(), self.logout_timeout)
        except Exception as exc:  # the broker may already be gone; closing must not fail
            self.log.debug("%s: logout not acknowledged: %s", self.name, type(exc).__name__)
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        # Also runs when close() is being cancelled: the socket must not outlive the stream object (a broker that
        # allows one connection per login would refuse the next one).
        self._closing = True
        pinger, self._pinger = self._pinger, None
        if pinger is not None:
            pinger.cancel()
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                await within(ws.close(), self.close_timeout)
            except BaseException:
                ws.transport.abort()  # no closing handshake in time (or cancelled): drop the TCP connection
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    self._stop_reader()
                    raise asyncio.CancelledError from None  # not the TimeoutError: callers suppress those
        reader = self._reader
        if reader is None:
            self._end_events()  # never connected: events() ends at once
        elif not reader.done():
            try:
                await within(asyncio.shield(reader), 0.5)
            except BaseException:
                self._stop_reader()
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise asyncio.CancelledError from None
        self._reader = None

    def _end_events(self) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(_END)

    def _stop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            self._end_events()  # a reader cancelled before it ran has no finally

    # -- reading -----------------------------------------------------------------------------------------------

    async def _read_loop(self, ws: Any) -> None:
        queue = self._queue
        try:
            async for raw in ws:
                self._receive(raw)
                if self._failure is not None:
                    if self.read_rest_timeout > 0:
                        await self._read_rest(ws)
                    break
                if queue.qsize() >= self.queue_frames:
                    await self._wait_for_room()
        except ConnectionClosedOK:
            if not self._closing and self._failure is None:
                self.log.info("%s closed the connection", self.name)
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == 1009:
                self.stats.skip("frame larger than max_frame_bytes", self.max_frame_bytes)
                self.fail(StreamError(f"{self.name} sent a frame larger than {self.max_frame_bytes} bytes "
                                      "(max_frame_bytes); reconnecting"))  # fmt: skip
            elif not self._closing and self._failure is None:
                self._failure = self.connection_lost(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._failure is None:
                self._failure = StreamError(f"reading from {self.name} failed: {type(exc).__name__}: {exc}")
        finally:
            self._fail_waiters()
            self._end_events()

    def _receive(self, raw: str | bytes) -> None:
        """Parse one frame and queue what it carries."""
        self._received = t = self.clock()
        if self.tap is not None:
            self._tap("in", raw, t)
        try:
            item = self.on_frame(raw)
        except Exception as exc:  # a parser bug must not end the stream; count it
            self.stats.skip("frame could not be parsed", f"{type(exc).__name__}: {exc}")
            return
        if item is not None and (type(item) is not list or item):
            self._queue.put_nowait(item)

    def _tap(self, direction: str, data: str | bytes, t: float | None = None) -> None:
        try:
            self.tap(direction, data, time.time() if t is None else t)  # type: ignore[misc]
        except Exception as exc:  # a recorder's bug must not cost the stream
            self.log.error("the frame tap failed and was removed: %s: %s", type(exc).__name__, exc)
            self.tap = None

    async def _read_rest(self, ws: Any) -> None:
        # An error that ends the connection may be followed by frames the broker had already sent (account
        # events among them): read what arrives before it closes, briefly.
        try:
            async with asyncio.timeout(self.read_rest_timeout):
                async for raw in ws:
                    self._receive(raw)
        except (TimeoutError, ConnectionClosed):
            pass

    async def _wait_for_room(self) -> None:
        # The consumer is far behind (it should never be: publishing does not block). Stop reading, so the
        # broker's socket buffer fills rather than our memory, until it catches up.
        while self._queue.qsize() >= max(1, self.queue_frames // 2):
            await asyncio.sleep(0.01)

    def _fail_waiters(self) -> None:
        for waiter in [*self._by_key.values(), *self._by_match]:
            if not waiter.future.done():
                waiter.future.set_exception(
                    self._failure or StreamError(f"{self.name} closed the connection during {waiter.what}")
                )

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)  # type: ignore[arg-type]
            ws = self._ws
            if ws is None or self._failure is not None:
                return
            try:
                pong = await ws.ping()
                await within(pong, self.ping_timeout)
            except TimeoutError:
                self.fail(StreamError(f"{self.name} answered no ping within {self.ping_timeout:g} s"))
                ws.transport.abort()
                return
            except ConnectionClosed:
                return  # the reader reports it
            self._queue.put_nowait(HEARTBEAT)


def url_host(url: str) -> str:
    """``host:port`` of a URL, for logs, errors and status: never the user or password a proxy URL may carry."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or "?"
    return f"{host}:{port}" if port else host


async def _close_ws(ws: Any, seconds: float) -> None:
    """The closing handshake, at most ``seconds``; then (or when cancelled) abort the TCP connection."""
    from websockets.protocol import State

    try:
        await within(ws.close(), seconds)
    except Exception:  # TimeoutError, or the connection broke meanwhile
        pass
    finally:
        if ws.state is not State.CLOSED:
            ws.transport.abort()
