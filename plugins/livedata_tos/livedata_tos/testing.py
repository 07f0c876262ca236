"""A local fake Schwab streamer speaking the streamer's JSON protocol over a real websocket.

For tests and benchmarks of this plugin and for anyone checking a livedata runner against the streamer::

    async with FakeStreamer() as fake:
        stream = TosStream(fake.info(), StreamerTokens(get_token, refresh_token), url=fake.url)
        await stream.connect()
        await stream.subscribe(["AAPL"])
        await fake.send_data("LEVELONE_EQUITIES", [{"key": "AAPL", "1": 1.0, "2": 1.1}])

It answers LOGIN (accepting the tokens in ``valid_tokens``, or any token when that is ``None``), SUBS, ADD,
UNSUBS and VIEW (keeping the subscriptions per service), and LOGOUT (then closes). Tests push data, heartbeats,
account activity and notices, force response codes, and drop connections.

Bars come from a made-up market on a clock the test moves (:attr:`FakeStreamer.clock`): :meth:`FakeStreamer.advance`
moves it and sends, for every minute that ends, a CHART_EQUITY / CHART_FUTURES bar of each subscribed symbol;
:meth:`FakeStreamer.outage` cuts the connections and refuses new ones while the clock moves on, so "the
connection was down for 3 minutes" takes milliseconds. The bars are :func:`livedata_schwab.testing.fake_candle`'s,
the same ``/pricehistory`` of :class:`livedata_schwab.testing.FakeSchwab` answers (point its ``market_now_ms`` at
``fake.clock.now_ms``). An ADD of a chart symbol is answered with the last bar that ended (a repeat when the client
had it already). The bars' ``seq`` follows :attr:`FakeStreamer.seq_mode`: growing minutes (the default), ``0`` on
every item as in Schwab's own samples, or a count that starts over on each connection, as a new connection's does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from .protocol import StreamerInfo

__all__ = ["FakeClock", "FakeSchwabClient", "FakeStreamer", "FakeTokens", "activity_item", "book_item", "chart_item",
           "data_frame", "heartbeat_frame", "notify_frame", "open_stream", "response_frame"]

CUSTOMER_ID = "f" * 64
# The server's frame logging would print LOGIN frames (with tokens) at DEBUG; keep it quiet like the client's.
_WS_LOG = logging.getLogger("livedata.websocket.fake_streamer")
_WS_LOG.setLevel(logging.INFO)
CORREL_ID = "00000000-0000-4000-8000-000000000001"


def data_frame(service: str, content: list[dict], timestamp: int | None = None, command: str = "SUBS") -> dict:
    """A ``data`` frame with one service's items."""
    ts = int(time.time() * 1000) if timestamp is None else timestamp
    return {"data": [{"service": service, "timestamp": ts, "command": command, "content": content}]}


def response_frame(service: str, command: str, requestid: Any, code: int, msg: str) -> dict:
    """A ``response`` frame answering one request."""
    return {
        "response": [
            {
                "service": service,
                "command": command,
                "requestid": requestid,
                "SchwabClientCorrelId": CORREL_ID,
                "timestamp": int(time.time() * 1000),
                "content": {"code": code, "msg": msg},
            }
        ]
    }


def heartbeat_frame() -> dict:
    """``{"notify":[{"heartbeat":"<ms>"}]}``"""
    return {"notify": [{"heartbeat": str(int(time.time() * 1000))}]}


def notify_frame(code: int, msg: str) -> dict:
    """An ADMIN notice such as code 30, stop streaming."""
    return {"notify": [{"service": "ADMIN", "timestamp": int(time.time() * 1000), "content": {"code": code, "msg": msg}}]}


def number(value: float, scale: int = 12) -> dict:
    """Schwab's ``{"lo", "signScale"}`` encoding of a number (odd scale = negative)."""
    digits = scale // 2
    lo = round(abs(value) * 10**digits)
    return {"lo": str(lo), "signScale": scale + (1 if value < 0 else 0)}


def activity_item(seq: int, account: str, message_type: str, data: dict | str | None, key: str = CORREL_ID) -> dict:
    """One ACCT_ACTIVITY content item; ``data`` dicts are encoded to the JSON string Schwab sends."""
    raw = json.dumps(data) if isinstance(data, dict) else data
    return {"seq": seq, "key": key, "1": account, "2": message_type, "3": raw}


def chart_item(service: str, symbol: str, start: int, seq: int) -> dict:
    """The CHART_EQUITY or CHART_FUTURES item of ``symbol``'s bar for the minute starting at ``start`` (ms), as
    the streamer numbers the fields (CHART_EQUITY: 1 sequence, 2-6 OHLCV, 7 time, 8 day; CHART_FUTURES: 1 time,
    2-6 OHLCV)."""
    from livedata_schwab.testing import fake_candle

    c = fake_candle(symbol, start)
    ohlcv = {"2": c["open"], "3": c["high"], "4": c["low"], "5": c["close"], "6": float(c["volume"])}
    if service == "CHART_EQUITY":
        minute_of_day = start // 60_000 % 1440
        return {"seq": seq, "key": symbol, "1": minute_of_day, **ohlcv, "7": start, "8": start // 86_400_000}
    return {"seq": seq, "key": symbol, "1": start, **ohlcv}


def book_item(symbol: str, bids: list[tuple[float, float, int]], asks: list[tuple[float, float, int]],
              time_ms: int | None = None) -> dict:  # fmt: skip
    """A NASDAQ_BOOK / NYSE_BOOK / OPTIONS_BOOK item: levels of ``(price, size, market makers)``."""
    def levels(side: list[tuple[float, float, int]]) -> list[dict]:
        return [{"0": p, "1": size, "2": n, "3": [{"0": f"MM{i}", "1": size / max(n, 1), "2": time_ms or 0}
                                                  for i in range(n)]} for p, size, n in side]  # fmt: skip

    return {"key": symbol, "1": time_ms or int(time.time() * 1000), "2": levels(bids), "3": levels(asks)}


class FakeClock:
    """The fake market's time: starts at the current minute and moves only when told (:meth:`advance`)."""

    def __init__(self, start_ms: int | None = None) -> None:
        now = int(time.time() * 1000) if start_ms is None else start_ms
        self.ms = now - now % 60_000

    def now_ms(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.ms += int(seconds * 1000)

    def __repr__(self) -> str:
        return f"FakeClock({self.ms})"


CHARTS = ("CHART_EQUITY", "CHART_FUTURES")


class FakeStreamer:
    """A streamer on 127.0.0.1 with a random port. Use ``async with`` or :meth:`start`/:meth:`stop`.

    :param valid_tokens: access tokens LOGIN accepts; ``None`` accepts any non-empty token.
    :ivar requests: every request received, in order (LOGIN parameters included, for assertions).
    :ivar subscriptions: symbols per service of the latest connection.
    :ivar login_code: when set, LOGIN answers this code (12: connection limit) and closes if it severs.
    :ivar command_codes: ``{(service, command): (code, msg)}`` to make a command fail.
    :ivar unknown_symbols: symbols an ADD or SUBS is refused for (code 24, FAILED_COMMAND_ADD), as for a
        contract that does not exist.
    :ivar clock: the market's time (:class:`FakeClock`), moved by :meth:`advance` and :meth:`outage`.
    :ivar bars_sent: ``(service, symbol, start, seq)`` of every bar sent, repeats included.
    :ivar seq_mode: the bars' ``seq``: ``"minutes"`` (minutes since the epoch: only grows), ``"zero"`` (always 0, as
        Schwab's CHART samples show) or ``"connection"`` (0, 1, 2, ... per connection, from 0 again after a reconnect).
    """

    SEQ_MODES = ("minutes", "zero", "connection")

    def __init__(self, valid_tokens: Iterable[str] | None = None) -> None:
        self.valid_tokens = set(valid_tokens) if valid_tokens is not None else None
        self.requests: list[dict] = []
        self.subscriptions: dict[str, set[str]] = {}
        self.login_tokens: list[str] = []
        self.logins = 0
        self.logouts = 0
        self.login_code: int | None = None
        self.login_msg = ""
        self.command_codes: dict[tuple[str, str], tuple[int, str]] = {}
        self.unknown_symbols: set[str] = set()
        self.clock = FakeClock()
        self.bars_sent: list[tuple[str, str, int, int]] = []
        self.seq_mode = "minutes"
        self._connection_seq = 0
        self.refusing = False
        self.connections: set[ServerConnection] = set()
        self.connected_total = 0
        self._server: Any = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def info(self) -> StreamerInfo:
        """The :class:`StreamerInfo` that logs in here."""
        return StreamerInfo(self.url, CUSTOMER_ID, CORREL_ID, "N9", "APIAPP")

    def user_preference(self) -> dict:
        """A ``/userPreference`` answer pointing here."""
        return {
            "accounts": [{"accountNumber": "12345678", "primaryAccount": True, "type": "BROKERAGE"}],
            "streamerInfo": [
                {
                    "streamerSocketUrl": self.url,
                    "schwabClientCustomerId": CUSTOMER_ID,
                    "schwabClientCorrelId": CORREL_ID,
                    "schwabClientChannel": "N9",
                    "schwabClientFunctionId": "APIAPP",
                }
            ],
            "offers": [{"level2Permissions": True, "mktDataPermission": "NP"}],
        }

    async def start(self) -> "FakeStreamer":
        self._server = await serve(
            self._handle, "127.0.0.1", self.port, compression=None, max_size=2**24, logger=_WS_LOG
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> "FakeStreamer":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # -- pushing -------------------------------------------------------------------------------------------

    async def send(self, frame: dict | str | bytes) -> None:
        """Send a frame (dict encoded as JSON, str/bytes as is) to every connected client."""
        text = json.dumps(frame) if isinstance(frame, dict) else frame
        for ws in list(self.connections):
            try:
                await ws.send(text)
            except ConnectionClosed:
                pass

    async def send_data(self, service: str, content: list[dict], timestamp: int | None = None) -> None:
        await self.send(data_frame(service, content, timestamp))

    async def send_heartbeat(self) -> None:
        await self.send(heartbeat_frame())

    async def send_activity(self, items: list[dict]) -> None:
        await self.send(data_frame("ACCT_ACTIVITY", items, timestamp=0))

    async def stop_streaming(self, msg: str = "Stop streaming due to empty subscription") -> None:
        """Notice code 30, then close the connections as Schwab does."""
        await self.send(notify_frame(30, msg))
        await self.close_all()

    async def close_all(self, code: int = 1000) -> None:
        """Close every connection with a close frame."""
        for ws in list(self.connections):
            await ws.close(code)

    async def drop(self) -> None:
        """Cut every connection without a close frame (a network failure)."""
        for ws in list(self.connections):
            ws.transport.abort()

    # -- the market's clock and bars -----------------------------------------------------------------------

    def seq(self, start: int) -> int:
        """The ``seq`` of the bar of the minute starting at ``start``, by :attr:`seq_mode`: the minutes since the epoch
        (only grows, also across reconnects), 0, or the next number of this connection's count."""
        if self.seq_mode == "zero":
            return 0
        if self.seq_mode == "connection":
            self._connection_seq += 1
            return self._connection_seq - 1
        if self.seq_mode != "minutes":
            raise ValueError(f"seq_mode {self.seq_mode!r}: expected one of {', '.join(self.SEQ_MODES)}")
        return start // 60_000

    def _chart_items(self, service: str, keys: list[str], start: int) -> list[dict]:
        items = [chart_item(service, k, start, self.seq(start)) for k in keys]
        self.bars_sent.extend((service, k, start, item["seq"]) for k, item in zip(keys, items))
        return items

    async def send_bars(self, start: int, symbols: dict[str, Iterable[str]] | None = None) -> None:
        """Send the bar of the minute starting at ``start`` for every subscribed chart symbol (or for
        ``{service: symbols}``)."""
        for service in CHARTS:
            keys = sorted(symbols.get(service, ()) if symbols is not None else self.subscriptions.get(service, ()))
            if keys and self.connections:
                content = self._chart_items(service, keys, start)
                await self.send(data_frame(service, content, timestamp=self.clock.ms))

    async def advance(self, seconds: float) -> None:
        """Move the clock; at the end of every minute passed, send that minute's bars."""
        target = self.clock.ms + int(seconds * 1000)
        while True:
            next_minute = self.clock.ms - self.clock.ms % 60_000 + 60_000
            if next_minute > target:
                break
            self.clock.ms = next_minute
            await self.send_bars(next_minute - 60_000)
        self.clock.ms = target

    async def outage(self, minutes: float) -> None:
        """Cut every connection and refuse new ones while the clock moves ``minutes`` on (no bars are sent:
        nobody is connected), then take connections again."""
        self.refusing = True
        try:
            await self.drop()
            await self.wait_for(lambda: not self.connections)
            await self.advance(minutes * 60)
        finally:
            self.refusing = False

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` is true; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("condition not met in time")
            await asyncio.sleep(0.002)

    def commands(self, service: str | None = None) -> list[tuple[str, str, dict]]:
        """``(service, command, parameters)`` of every request received, optionally of one service."""
        return [
            (r.get("service"), r.get("command"), r.get("parameters") or {})
            for r in self.requests
            if service is None or r.get("service") == service
        ]

    # -- serving -------------------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        if self.refusing:  # an outage: the network is down
            ws.transport.abort()
            return
        self.connections.add(ws)
        self.connected_total += 1
        self.subscriptions = {}
        self._connection_seq = 0
        logged_in = False
        try:
            async for raw in ws:
                try:
                    message = json.loads(raw)
                except ValueError:
                    await ws.send(json.dumps(response_frame("ADMIN", "", None, 21, "bad command format")))
                    continue
                reqs = message.get("requests", message)
                for req in reqs if isinstance(reqs, list) else [reqs]:
                    self.requests.append(req)
                    logged_in = await self._answer(ws, req, logged_in)
        except ConnectionClosed:
            pass
        finally:
            self.connections.discard(ws)

    async def _answer(self, ws: ServerConnection, req: dict, logged_in: bool) -> bool:
        service, command, rid = req.get("service"), req.get("command"), req.get("requestid")
        params = req.get("parameters") or {}

        async def reply(code: int, msg: str) -> None:
            await ws.send(json.dumps(response_frame(service, command, rid, code, msg)))

        if service == "ADMIN" and command == "LOGIN":
            token = params.get("Authorization", "")
            self.login_tokens.append(token)
            ids_ok = req.get("SchwabClientCustomerId") == CUSTOMER_ID and req.get("SchwabClientCorrelId") == CORREL_ID
            ok = bool(token) and ids_ok and (self.valid_tokens is None or token in self.valid_tokens)
            code = self.login_code if self.login_code is not None else (0 if ok else 3)
            if code == 0:
                self.logins += 1
                await reply(0, self.login_msg or "server=fake-1;status=NP")
                return True
            msg = {3: "Login Denied.: token is invalid or has expired.",
                   12: "Max connections reached"}.get(code, self.login_msg or "failed")  # fmt: skip
            await reply(code, msg)
            if code in (3, 12, 20, 30):
                await ws.close()
            return False
        if service == "ADMIN" and command == "LOGOUT":
            self.logouts += 1
            await reply(0, "SUCCESS")
            await ws.close()
            return False
        if not logged_in:
            await reply(20, "Stream connection not found")
            return logged_in
        forced = self.command_codes.get((service, command))
        if forced is not None:
            await reply(*forced)
            if forced[0] in (3, 12, 20, 30):
                await ws.close()
            return logged_in
        keys = [k for k in str(params.get("keys", "")).split(",") if k]
        unknown = [k for k in keys if k in self.unknown_symbols]
        if command in ("ADD", "SUBS") and unknown:
            await reply(24, f"FAILED_COMMAND_ADD: unknown symbol(s) {','.join(unknown)}")
            return logged_in
        subs = self.subscriptions.setdefault(service, set())
        if command == "SUBS":
            subs.clear()
            subs.update(keys)
        elif command == "ADD":
            subs.update(keys)
        elif command == "UNSUBS":
            subs.difference_update(keys)
        elif command != "VIEW":
            await reply(21, f"unknown command {command}")
            return logged_in
        await reply(0, f"{command} command succeeded")
        if service in CHARTS and command in ("ADD", "SUBS") and keys:
            # The streamer answers a chart subscription with the last bar that ended.
            last = self.clock.ms - self.clock.ms % 60_000 - 60_000
            content = self._chart_items(service, keys, last)
            await ws.send(json.dumps(data_frame(service, content, timestamp=self.clock.ms)))
        return logged_in


class FakeTokens:
    """An access-token provider for tests: hands out ``current`` until refreshed, then ``after_refresh``."""

    def __init__(self, current: str = "access-token-1", after_refresh: str = "access-token-2") -> None:
        self.current = current
        self.after_refresh = after_refresh
        self.refreshes = 0

    async def get(self) -> str:
        return self.current

    async def refresh(self) -> str:
        self.refreshes += 1
        self.current = self.after_refresh
        return self.current

    def source(self):
        """A :class:`~livedata_tos.stream.StreamerTokens` over this provider."""
        from .stream import StreamerTokens

        return StreamerTokens(self.get, self.refresh)

    def __repr__(self) -> str:
        return f"FakeTokens(refreshes={self.refreshes})"


class FakeSchwabClient:
    """Stands in for :class:`livedata_schwab.client.SchwabClient` in the tos plugin: tokens from a
    :class:`FakeTokens`, ``/userPreference`` pointing at a :class:`FakeStreamer`."""

    def __init__(self, streamer: FakeStreamer, tokens: FakeTokens | None = None) -> None:
        from livedata_schwab.testing import FakeSchwab

        self.streamer = streamer
        self.tokens = tokens or FakeTokens()
        self.preference_calls = 0
        self.closed = False
        self.schwab = FakeSchwab()
        """Answers ``/pricehistory`` (on the streamer's clock) and ``/chains`` (its ``chains``)."""
        self.schwab.market_now_ms = streamer.clock.now_ms
        self.history_requests: list[tuple[str, int, int]] = []

    async def access_token(self) -> str:
        return await self.tokens.get()

    async def refresh(self) -> str:
        return await self.tokens.refresh()

    async def user_preference(self) -> dict:
        self.preference_calls += 1
        return self.streamer.user_preference()

    async def price_history(self, symbol: str, start_ms: int, end_ms: int, **_: Any) -> dict:
        from livedata_schwab.testing import _price_history

        self.history_requests.append((symbol, start_ms, end_ms))
        query = {"symbol": symbol, "frequencyType": "minute", "frequency": "1", "startDate": str(start_ms),
                 "endDate": str(end_ms)}  # fmt: skip
        return _price_history(self.schwab, query)[1]  # type: ignore[return-value]

    async def option_chain(self, symbol: str, *, from_date: str | None = None, to_date: str | None = None,
                           strike_count: int | None = None) -> dict:  # fmt: skip
        from livedata_schwab.testing import _chains

        query = {"symbol": symbol, **({"fromDate": from_date} if from_date else {}),
                 **({"toDate": to_date} if to_date else {}), **({"strikeCount": str(strike_count)} if strike_count else {})}
        return _chains(self.schwab, query)[1]  # type: ignore[return-value]

    async def aclose(self) -> None:
        self.closed = True


@contextlib.asynccontextmanager
async def open_stream(fake: FakeStreamer, symbols: Iterable[str] = (), tokens: FakeTokens | None = None,
                      **options: Any) -> AsyncIterator[Any]:  # fmt: skip
    """A :class:`~livedata_tos.stream.TosStream` logged in to ``fake`` and subscribed to ``symbols`` (short
    login and command timeouts unless given), closed (LOGOUT) when the block ends::

        async with FakeStreamer() as fake, open_stream(fake, ["AAPL"]) as stream:
            events = stream.events()
    """
    from .stream import TosStream

    options.setdefault("login_timeout", 2.0)
    options.setdefault("command_timeout", 2.0)
    stream = TosStream(fake.info(), (tokens or FakeTokens()).source(), **options)
    await stream.connect()
    try:
        if symbols:
            await stream.subscribe(list(symbols))
        yield stream
    finally:
        await stream.close()
