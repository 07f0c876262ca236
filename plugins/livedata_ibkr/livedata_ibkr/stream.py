"""The gateway websocket: level-one quotes (``smd``) and live order updates (``sor``).

One :class:`IbkrStream` is one connection. :meth:`connect` opens the socket with the tickle session in the
``api`` cookie (or sends it when the gateway says ``waiting for session``), waits for ``sts`` authenticated,
and starts a keep-alive task that sends ``ech+hb`` and re-sends every ``smd`` before the gateway expires it
(10 minutes). Order updates start in the background: the ``GET /iserver/account/orders`` pre-flight IBKR
requires before ``sor`` is paced at one per 5 s, and market data (``smd``) does not need it, so quotes flow
(and frames are read) while it waits. Reconnecting and resubscribing are the runner's job: a dropped socket
raises :class:`StreamError`, lost authentication raises :class:`AuthError`.

:meth:`close` is bounded (well inside the runner's 2 s for it) and leaves no socket open, also when it is
cancelled: a gateway that does not finish the closing handshake in time gets its TCP connection aborted.
After :meth:`close`, :meth:`events` hands over what was received but not yet read (order updates above all).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect as ws_connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidHandshake, InvalidStatus
from websockets.protocol import State

from livedata_core.aio_tools import reraise_if_cancelling, within
from livedata_core.errors import AuthError, LivedataError, StreamError, SymbolsRefused
from livedata_core.redis_url import mask_url
from livedata_core.streaming import HEARTBEAT, BrokerStream, StreamStats

from .parsers import BROKER, parse_order
from .quotes import QuoteBook, smd_message, umd_message
from .session import IbkrSession
from .settings import IbkrSettings
from .symbols import parse
from .values import BadValue

__all__ = ["IbkrStream", "QuietWebsocketLogger"]

_QUIET_TOPICS = frozenset({"act", "tic", "ech", "blt", "ntf", "spl", "str"})

#: Seconds for the websocket closing handshake before the TCP connection is aborted (the runner gives a
#: stream's whole close() 2 s).
CLOSE_WAIT = 1.0
#: Seconds to wait for the keep-alive and orders tasks to stop when closing.
KEEPALIVE_STOP_WAIT = 0.5


class QuietWebsocketLogger(logging.LoggerAdapter):
    """The logger handed to ``websockets``: held at WARNING whatever the logging configuration says.

    At DEBUG, ``websockets`` logs every handshake header (``Cookie: api={"session": ...}``) and every frame
    (the ``{"session": ...}`` frame), i.e. the tickle session that authorizes the websocket. Its INFO records
    ("connection closed") are routine noise, as under the CLI's default quieting of ``websockets``; its
    warnings and errors carry no headers or frame contents and pass through.
    """

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING) -> None:
        super().__init__(logger, {})
        self.floor = max(level, logging.INFO)

    def isEnabledFor(self, level: int) -> bool:
        return level >= self.floor and self.logger.isEnabledFor(level)

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if level >= self.floor:
            super().log(level, msg, *args, **kwargs)


class IbkrStream(BrokerStream):
    """Quotes and order updates from the Client Portal gateway websocket."""

    def __init__(self, session: IbkrSession, settings: IbkrSettings, log: logging.Logger) -> None:
        super().__init__()
        self.stats = StreamStats(log)
        self.session = session
        self.settings = settings
        self.log = log
        self.heartbeat_timeout = settings.heartbeat_timeout
        self.book = QuoteBook(BROKER, self.stats)
        self.conid_of: dict[str, int] = {}
        self.renewals = 0
        self._ws: ClientConnection | None = None
        self._early: list[dict[str, Any]] = []
        self._keepalive: asyncio.Task[None] | None = None
        self._orders_task: asyncio.Task[None] | None = None  # the pre-flight, then sor+{}
        self._closed = False  # close() was called: events() only hands over what is left
        self._closed_ws: ClientConnection | None = None  # the connection close() closed, for that hand-over
        self._failure: StreamError | AuthError | None = None  # why events() must end although the socket is fine

    # -- connection ----------------------------------------------------------------------------------------

    async def connect(self) -> None:
        self.session.check()
        token = self.session.ws_token
        headers = {"User-Agent": "livedata-ibkr/0.1"}
        if token:
            headers["Cookie"] = "api=" + orjson.dumps({"session": token}).decode()
        url = self.settings.websocket_url
        try:
            self._ws = await ws_connect(
                url,
                ssl=self.session.client.ssl if url.startswith("wss") else None,
                additional_headers=headers,
                open_timeout=self.settings.connect_timeout,
                close_timeout=CLOSE_WAIT,  # then websockets aborts the TCP connection itself
                ping_interval=None,  # the gateway's own heartbeats (system hb every 10 s) are watched instead
                proxy=None,
                max_size=4 * 1024 * 1024,
                logger=QuietWebsocketLogger(self.log.getChild("websocket")),
            )
        except InvalidStatus as exc:
            if exc.response.status_code in (401, 403):
                self.session.mark_lost(f"websocket refused with HTTP {exc.response.status_code}")
                raise AuthError(f"IBKR websocket refused the session (HTTP {exc.response.status_code})") from None
            raise StreamError(f"IBKR websocket handshake failed (HTTP {exc.response.status_code})") from None
        except (OSError, InvalidHandshake, asyncio.TimeoutError) as exc:
            raise StreamError(f"IBKR websocket {mask_url(url)} not reachable ({type(exc).__name__}: {exc})") from None
        try:
            await within(self._await_authenticated(token), self.settings.ws_auth_timeout)
            # Nothing below awaits: a cancellation that came as the login finished must stop us here, or the
            # tasks would start for a stream nobody reads.
            reraise_if_cancelling()
        except TimeoutError:
            await self.close()
            raise StreamError(
                f"IBKR websocket sent no authenticated status within {self.settings.ws_auth_timeout:g}s"
            ) from None
        except BaseException:
            await self.close()
            raise
        self._keepalive = asyncio.create_task(self._keep_alive(), name="ibkr-ws-keepalive")
        if self.settings.stream_orders:
            self._orders_task = asyncio.create_task(self._subscribe_orders(), name="ibkr-ws-orders")

    # Frames right after connect:
    # {"message":"waiting for session"}              (no cookie: answer with {"session":"<tickle session>"})
    # {"topic":"system","success":"user123"}
    # {"topic":"sts","args":{"authenticated":true}}
    async def _await_authenticated(self, token: str | None) -> None:
        assert self._ws is not None
        while True:
            try:
                raw = await self._ws.recv()
            except ConnectionClosed as exc:
                raise StreamError(f"IBKR websocket closed during login ({exc.rcvd.code if exc.rcvd else 'no close frame'})") from None
            frame = self._decode(raw)
            if frame is None:
                continue
            if frame.get("message") == "waiting for session":
                if not token:
                    raise AuthError("IBKR websocket wants a session but /tickle gave none")
                await self._send(orjson.dumps({"session": token}).decode())
                continue
            if frame.get("topic") == "sts":
                args = frame.get("args") if isinstance(frame.get("args"), dict) else {}
                if args.get("authenticated") is True:
                    return
                if args.get("authenticated") is False:
                    self.session.mark_lost("websocket status says not authenticated")
                    raise AuthError("IBKR websocket reports the session is not authenticated")
                continue
            self._early.append(frame)

    async def _subscribe_orders(self) -> None:
        """The orders pre-flight, then ``sor+{}``; runs beside the reader (see :meth:`_orders_preflight`).

        Lost authentication ends :meth:`events` with :class:`AuthError`; a socket that closed meanwhile is the
        reader's to report."""
        try:
            await self._orders_preflight()
            await self._send("sor+{}")
        except AuthError as exc:
            self.session.mark_lost("HTTP 401 on the orders pre-flight")
            await self._fail(exc)
        except StreamError:
            pass

    async def _orders_preflight(self) -> None:
        """``GET /iserver/account/orders`` once before ``sor+{}``: IBKR requires it, and without it the gateway
        may send no order updates. Paced by the client (one per 5 s), which is why it does not hold up
        :meth:`connect`. A refusal other than lost authentication is logged and counted, and ``sor`` is still
        sent (the REST orders poll covers it)."""
        try:
            await self.session.client.get("/iserver/account/orders")
        except AuthError:
            raise
        except LivedataError as exc:
            self.stats.skip("ibkr: orders pre-flight failed", str(exc))
            return
        self.session.orders_ready = True  # the session's order feed is started

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        next_echo = loop.time() + self.settings.echo_interval
        next_renew = loop.time() + self.settings.renew_interval
        while True:
            await asyncio.sleep(max(0.0, min(next_echo, next_renew) - loop.time()))
            now = loop.time()
            try:
                if now >= next_echo:
                    next_echo = now + self.settings.echo_interval
                    await self._send("ech+hb")
                if now >= next_renew:
                    next_renew = now + self.settings.renew_interval
                    await self._renew()
            except StreamError:
                return  # the reader sees the close and ends events()

    async def _renew(self) -> None:
        """Re-send every ``smd`` before the gateway's 10-minute expiry stops it."""
        conids = sorted(self.book.symbols_of)
        for conid in conids:
            await self._send(smd_message(conid))
        if conids:
            self.renewals += 1
            self.log.debug("renewed %d IBKR market-data subscriptions", len(conids))

    async def _send(self, text: str) -> None:
        if self._ws is None:
            raise StreamError("IBKR websocket is not connected")
        try:
            await self._ws.send(text)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else "no close frame"
            raise StreamError(f"IBKR websocket closed while sending ({code})") from None

    async def close(self) -> None:
        """Stop the keep-alive and a pending orders pre-flight, and close the websocket. Never raises (but a
        cancellation); bounded by :data:`KEEPALIVE_STOP_WAIT` + :data:`CLOSE_WAIT`; the socket is closed even
        when this is cancelled."""
        self._closed = True
        try:
            tasks = {t for t in (self._keepalive, self._orders_task) if t is not None and not t.done()}
            self._keepalive = self._orders_task = None
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=KEEPALIVE_STOP_WAIT)  # propagates our own cancellation
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            self._closed_ws = ws
            await _close_ws(ws)

    # -- subscriptions -------------------------------------------------------------------------------------

    async def subscribe(self, symbols: Sequence[str]) -> None:
        """Send ``smd`` for each symbol's conid (once per conid), looking plain symbols up first.

        :raises SymbolsRefused: the gateway's search has no exact match for some symbols (named); every other
            symbol of the call was subscribed.
        :raises StreamError: a lookup failed for a reason that may pass (the gateway did not answer, HTTP 429,
            an HTTP error); the stream then ends with the same error, so the runner reconnects and subscribes
            every wanted symbol again. Symbols whose conid is known were still subscribed.
        :raises AuthError: the session is lost.
        """
        refused: list[str] = []
        deferred: list[str] = []
        failure: LivedataError | None = None
        for symbol in symbols:
            instrument = parse(symbol)
            conid = instrument.conid
            if conid is None and instrument.ticker is not None:
                if failure is not None and instrument.ticker not in self.session.conids:
                    deferred.append(symbol)  # the gateway just failed a lookup: no more of them now
                    continue
                try:
                    conid = await self.session.resolve(instrument.ticker)
                except AuthError:
                    raise
                except LivedataError as exc:
                    failure = exc
                    deferred.append(symbol)
                    continue
            if conid is None:
                self.stats.skip("ibkr: unknown symbol", symbol)
                refused.append(symbol)
                continue
            self.conid_of[symbol] = conid
            streaming = self.book.symbols_of.setdefault(conid, set())
            first = not streaming
            streaming.add(symbol)
            if first:
                await self._send(smd_message(conid))
        if failure is not None:
            not_found = f"; not found: {', '.join(refused)}" if refused else ""
            error = StreamError(
                f"IBKR symbol lookup failed for {', '.join(deferred)} ({failure}){not_found}; reconnecting to "
                "subscribe again", retry_after=getattr(failure, "retry_after", None))
            await self._fail(error)
            raise error
        if refused:
            sec_type = self.settings.default_sec_type.strip().upper()
            raise SymbolsRefused(
                f"IBKR has no {sec_type} symbol exactly matching {', '.join(refused)} (use SYMBOL@CONID)", refused)

    async def _fail(self, error: StreamError | AuthError) -> None:
        """End :meth:`events` with ``error``: the runner then reconnects and subscribes everything again."""
        self._failure = error
        ws = self._ws
        if ws is not None:
            await _close_ws(ws)  # wakes the reader, which raises the failure

    async def unsubscribe(self, symbols: Sequence[str]) -> None:
        for symbol in symbols:
            conid = self.conid_of.pop(symbol, None)
            if conid is None:
                continue
            streaming = self.book.symbols_of.get(conid, set())
            streaming.discard(symbol)
            if not streaming:
                self.book.symbols_of.pop(conid, None)
                self.book.forget(conid)
                await self._send(umd_message(conid))

    # -- reading -------------------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[Any]:
        """Yield quotes, orders and heartbeats until the socket closes.

        A frame that was read is always handled and yielded; only then does lost authentication (seen by the
        tickle) raise :class:`AuthError`. Called again after :meth:`close`, it yields what the closed socket
        still holds and ends, without checking the session: those order updates are published, not lost.
        """
        draining = self._closed
        ws = self._closed_ws if draining else self._ws
        if ws is None:
            if draining:
                return
            raise StreamError("IBKR stream used before connect()")
        early, self._early = self._early, []
        for frame in early:
            item = self._handle_or_skip(frame) if draining else self._handle(frame)
            if item is not None:
                yield item
        while True:
            if not draining:
                if self._failure is not None:
                    raise self._failure
                self.session.check()
            try:
                raw = await ws.recv()
            except ConnectionClosed as exc:
                if draining:
                    return
                if self._failure is not None:
                    raise self._failure from None
                if isinstance(exc, ConnectionClosedOK):
                    return
                code = exc.rcvd.code if exc.rcvd else "no close frame"
                raise StreamError(f"IBKR websocket dropped ({code})") from None
            if isinstance(raw, str) and raw.startswith("ech"):
                yield HEARTBEAT  # the echo of our ech+hb
                continue
            frame = self._decode(raw)
            if frame is None:
                continue
            item = self._handle_or_skip(frame) if draining else self._handle(frame)
            if item is not None:
                yield item

    def _handle_or_skip(self, frame: dict[str, Any]) -> Any:
        # After close(): a status frame saying the session is lost changes nothing any more.
        try:
            return self._handle(frame)
        except LivedataError:
            return None

    def _decode(self, raw: str | bytes) -> dict[str, Any] | None:
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.stats.skip("ibkr: frame is not JSON", raw)
            return None
        if not isinstance(frame, dict):
            self.stats.skip("ibkr: frame is not an object", raw)
            return None
        return frame

    def _handle(self, frame: dict[str, Any]) -> Any:
        if not frame:
            return HEARTBEAT  # the gateway's bare {} keep-alive (ibind ignores these too)
        topic = frame.get("topic")
        if not isinstance(topic, str):
            topic = ""
        if "error" in frame or topic == "error":
            # e.g. a market-data line limit or a conid without permissions; the stream goes on.
            self.stats.skip("ibkr: websocket error message", frame)
            return HEARTBEAT
        if topic.startswith("smd+"):
            quotes = self.book.apply(frame)
            return quotes if quotes else HEARTBEAT
        if topic == "system":
            return HEARTBEAT
        if topic == "sts":
            return self._status(frame)
        if topic == "sor":
            return self._orders(frame) or HEARTBEAT
        if frame.get("message") == "waiting for session":
            self.session.mark_lost("websocket is waiting for a session")
            raise AuthError("IBKR websocket lost its session")
        if topic in _QUIET_TOPICS or topic.startswith(("sor", "smd")):
            if topic in ("ntf", "blt"):
                self.log.info("IBKR %s: %s", "notification" if topic == "ntf" else "bulletin", _short(frame.get("args")))
            return HEARTBEAT
        self.stats.skip("ibkr: unknown topic", frame)
        return HEARTBEAT

    # {"topic":"sts","args":{"authenticated":false,"competing":true,"fail":""}}
    def _status(self, frame: dict[str, Any]) -> Any:
        args = frame.get("args")
        if isinstance(args, dict) and args.get("authenticated") is False:
            why = "another session is competing" if args.get("competing") else "not authenticated"
            self.session.mark_lost(f"websocket status: {why}")
            raise AuthError(f"IBKR gateway reports the brokerage session is lost ({why})")
        return HEARTBEAT

    # {"topic":"sor","args":[{"acct":"DU1234","orderId":352055828,"sizeAndFills":"100/622",
    #   "remainingQuantity":622.0,"filledQuantity":100.0,"avgPrice":"382.45"}]}
    def _orders(self, frame: dict[str, Any]) -> list[Any]:
        rows = frame.get("args")
        if not isinstance(rows, list):
            self.stats.skip("ibkr sor: args is not a list", frame)
            return []
        out = []
        for row in rows:
            if not isinstance(row, dict) or row.get("orderId") is None:
                self.stats.skip("ibkr sor: order without orderId", row)
                continue
            merged = self.session.orders.merge(row)
            try:
                out.append(parse_order(merged))
            except (BadValue, TypeError, ValueError) as exc:
                # Logged and counted; the REST orders poll reports the order again.
                self.stats.skip("ibkr sor: unusable order update", f"{exc}: {row!r}")
        return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


async def _close_ws(ws: ClientConnection) -> None:
    """The closing handshake, at most :data:`CLOSE_WAIT` seconds; then (or when cancelled) abort the TCP
    connection, so no socket outlives the stream."""
    try:
        await within(ws.close(), CLOSE_WAIT)
    except Exception:  # TimeoutError, or the connection broke meanwhile
        pass
    finally:
        if ws.state is not State.CLOSED:
            ws.transport.abort()
