"""The gateway websocket: level-one quotes (``smd``) and live order updates (``sor``).

One :class:`IbkrStream` is one connection, on :class:`~livedata_core.plugin_kit.websocket_stream.WebSocketStream` (a reader
task reads every frame from :meth:`connect` on; the merged fields per conid live in the instance's merge book,
``ctx.quotes``, so the first quote after a reconnect is as complete as the last one). :meth:`connect` opens the socket with the tickle session in the
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
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
from websockets.exceptions import ConnectionClosed, InvalidStatus

from livedata_core.aio_tools import within
from livedata_core.errors import AuthError, LivedataError, StreamError, SymbolsRefused
from livedata_core.plugin_kit.merge import MergeBook
from livedata_core.redis_io.url import mask_url
from livedata_core.plugin_kit.streaming import HEARTBEAT
from livedata_core.plugin_kit.websocket_stream import Tap, WebSocketStream

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


class IbkrStream(WebSocketStream):
    """Quotes and order updates from the Client Portal gateway websocket, on
    :class:`~livedata_core.plugin_kit.websocket_stream.WebSocketStream` (its reader task, close and tap).

    :param quotes: the instance's merge book (``ctx.quotes``), where the merged fields per conid live across
        reconnects; by default one of this stream's own.
    :param tap: sees every frame in and out (:data:`~livedata_core.plugin_kit.websocket_stream.Tap`).
    """

    name = "IBKR websocket"

    def __init__(self, session: IbkrSession, settings: IbkrSettings, log: logging.Logger,
                 quotes: MergeBook | None = None, tap: Tap | None = None) -> None:  # fmt: skip
        super().__init__(settings.websocket_url, log=log, tap=tap)
        self.session = session
        self.settings = settings
        self.heartbeat_timeout = settings.heartbeat_timeout
        self.open_timeout = settings.connect_timeout
        self.connect_timeout = None  # the login has its own: ws_auth_timeout
        self.close_timeout = CLOSE_WAIT
        self.max_frame_bytes = 4 * 1024 * 1024
        self.read_rest_timeout = 0  # a frame that ends the stream ends the reading too
        self.book = QuoteBook(BROKER, self.stats, quotes)
        self.conid_of: dict[str, int] = {}
        self.renewals = 0
        self._keepalive: asyncio.Task[None] | None = None
        self._orders_task: asyncio.Task[None] | None = None  # the pre-flight, then sor+{}

    # -- connection ----------------------------------------------------------------------------------------

    def connect_options(self) -> dict[str, Any]:
        token = self.session.ws_token
        headers = {"User-Agent": "livedata-ibkr/0.1"}
        if token:
            headers["Cookie"] = "api=" + orjson.dumps({"session": token}).decode()
        return {
            **super().connect_options(),
            "ssl": self.session.client.ssl if self.url.startswith("wss") else None,
            "additional_headers": headers,
            "ping_interval": None,  # the gateway's own heartbeats (system hb every 10 s) are watched instead
            "proxy": None,
            "logger": QuietWebsocketLogger(self.log.getChild("websocket")),
        }

    def connect_failed(self, exc: Exception) -> Exception:
        if isinstance(exc, InvalidStatus):
            if exc.response.status_code in (401, 403):
                self.session.mark_lost(f"websocket refused with HTTP {exc.response.status_code}")
                return AuthError(f"IBKR websocket refused the session (HTTP {exc.response.status_code})")
            return StreamError(f"IBKR websocket handshake failed (HTTP {exc.response.status_code})")
        return StreamError(f"IBKR websocket {mask_url(self.url)} not reachable ({type(exc).__name__}: {exc})")

    def connection_lost(self, exc: ConnectionClosed) -> Exception:
        code = exc.rcvd.code if exc.rcvd else "no close frame"
        return StreamError(f"IBKR websocket dropped ({code})")

    async def connect(self) -> None:
        self.session.check()
        await super().connect()
        self._keepalive = asyncio.create_task(self._keep_alive(), name="ibkr-ws-keepalive")
        if self.settings.stream_orders:
            self._orders_task = asyncio.create_task(self._subscribe_orders(), name="ibkr-ws-orders")

    async def login(self) -> None:
        try:
            await within(self._await_authenticated(self.session.ws_token), self.settings.ws_auth_timeout)
        except TimeoutError:
            raise StreamError(
                f"IBKR websocket sent no authenticated status within {self.settings.ws_auth_timeout:g}s"
            ) from None

    # Frames right after connect:
    # {"message":"waiting for session"}              (no cookie: answer with {"session":"<tickle session>"})
    # {"topic":"system","success":"user123"}
    # {"topic":"sts","args":{"authenticated":true}}
    async def _await_authenticated(self, token: str | None) -> None:
        """Until ``sts`` says whether the session is authenticated (the reader answers ``waiting for session``
        with ``token`` meanwhile: :meth:`_on_login_frame`)."""
        self._login_token = token
        frame = await self.request(None, match=_says_authenticated, what="the websocket login",
                                   timeout=self.settings.ws_auth_timeout + 1)  # fmt: skip
        if frame["args"]["authenticated"] is False:
            self.session.mark_lost("websocket status says not authenticated")
            raise AuthError("IBKR websocket reports the session is not authenticated")

    def _on_login_frame(self, frame: dict[str, Any]) -> Any:
        """A frame before the login finished: the ``sts`` answer, a request for the session, or an early frame."""
        if self.offer(frame):
            return None
        if frame.get("message") == "waiting for session":
            token = self._login_token
            if not token:
                self.fail(AuthError("IBKR websocket wants a session but /tickle gave none"))
                return None
            sending = asyncio.get_running_loop().create_task(self._send(orjson.dumps({"session": token}).decode()))
            sending.add_done_callback(_retrieve)  # a failed send is a closed socket: the reader reports it
            return None
        if frame.get("topic") == "sts":
            return None
        return self._handle(frame)

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
            except LivedataError:
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
            await self.send(text)
        except StreamError:
            raise StreamError("IBKR websocket closed while sending") from None

    async def close(self) -> None:
        """Stop the keep-alive and a pending orders pre-flight, and close the websocket. Never raises (but a
        cancellation); bounded by :data:`KEEPALIVE_STOP_WAIT` + :data:`CLOSE_WAIT`; the socket is closed even
        when this is cancelled."""
        try:
            tasks = {t for t in (self._keepalive, self._orders_task) if t is not None and not t.done()}
            self._keepalive = self._orders_task = None
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=KEEPALIVE_STOP_WAIT)  # propagates our own cancellation
        finally:
            await super().close()


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
        await self.end(error)  # closes the socket, which wakes the reader

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

    def check_alive(self) -> None:
        self.session.check()  # lost authentication seen by the tickle ends events() (AuthError)

    async def events(self) -> AsyncIterator[Any]:
        """Yield quotes, orders and heartbeats until the socket closes.

        A frame that was read is always handled and yielded; only then does lost authentication (seen by the
        tickle) raise :class:`AuthError`. Called again after :meth:`close`, it yields what the closed socket
        had delivered and ends, without checking the session: those order updates are published, not lost.
        """
        if self._ws is None and not self._closing:
            raise StreamError("IBKR stream used before connect()")
        draining = self._closing
        try:
            async for item in super().events():
                yield item
        except LivedataError:
            if not draining:
                raise

    def on_frame(self, raw: str | bytes) -> Any:
        if isinstance(raw, str) and raw.startswith("ech"):
            return HEARTBEAT  # the echo of our ech+hb
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.stats.skip("ibkr: frame is not JSON", raw)
            return None
        if type(frame) is not dict:  # orjson makes plain dicts
            self.stats.skip("ibkr: frame is not an object", raw)
            return None
        try:
            if not self.ready:
                return self._on_login_frame(frame)
            return self._handle(frame)
        except LivedataError as exc:  # the session is lost: events() yields what came before, then raises
            self.fail(exc)
            return None

    def _handle(self, frame: dict[str, Any]) -> Any:
        topic = frame.get("topic")
        if type(topic) is str and topic.startswith("smd+") and "error" not in frame:
            quotes = self.book.apply(frame, self.received_ms())  # market data, nearly every frame: first
            return quotes if quotes else HEARTBEAT
        if not frame:
            return HEARTBEAT  # the gateway's bare {} keep-alive (ibind ignores these too)
        if not isinstance(topic, str):
            topic = ""
        if "error" in frame or topic == "error":
            # e.g. a market-data line limit or a conid without permissions; the stream goes on.
            self.stats.skip("ibkr: websocket error message", frame)
            return HEARTBEAT
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
                out.append(parse_order(merged, received_at=self.received_ms()))
            except (BadValue, TypeError, ValueError) as exc:
                # Logged and counted; the REST orders poll reports the order again.
                self.stats.skip("ibkr sor: unusable order update", f"{exc}: {row!r}")
        return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _says_authenticated(frame: Any) -> bool:
    """Whether ``frame`` is the ``sts`` status that ends the login (authenticated true or false)."""
    args = frame.get("args") if frame.get("topic") == "sts" else None
    return isinstance(args, dict) and args.get("authenticated") in (True, False)


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()
