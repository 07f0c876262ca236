"""The Schwab streamer client: one websocket, one login, quotes, bars, book depth and account activity.

Built on :class:`~livedata_core.plugin_kit.websocket_stream.WebSocketStream`: its reader task owns the socket from
:meth:`TosStream.connect` on, answers the one command in flight (commands are sent one at a time under a lock,
each waiting for its response by ``requestid``), parses ``data`` frames into models and queues one list per frame
for :meth:`TosStream.events`. Reconnecting is the runner's job: ``events()`` ends when the server closes politely
and raises otherwise. The merged level-one fields live in the instance's merge book (``ctx.quotes``), so the first
quote after a reconnect is as complete as the last one before it.

What to stream is asked per kind (:meth:`TosStream.subscribe` with ``kind``): ``quotes`` from the symbol's
level-one service (equities, futures, options, futures options, forex), ``bars`` from CHART_EQUITY or
CHART_FUTURES, ``depth`` from NASDAQ_BOOK, NYSE_BOOK or OPTIONS_BOOK (:mod:`livedata_tos.symbols` picks).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import orjson

from livedata_core.errors import AuthError, BrokerError, LoginRequired, StreamError, SymbolsRefused
from livedata_core.plugin_kit.merge import MergeBook
from livedata_core.plugin_kit.streaming import HEARTBEAT
from livedata_core.plugin_kit.websocket_stream import Tap, WebSocketStream, frames_logger, url_host

from . import bars, books, options
from .activity import ActivityParser
from .protocol import SEVERING_CODES, StreamerInfo, error_for_code, request
from .quotes import FIELDS, QuoteBook, request_fields
from .symbols import BOOKS, bar_service, book_service, service_for

__all__ = ["StreamerTokens", "TosStream", "url_host"]

ACCT_ACTIVITY = "ACCT_ACTIVITY"
KINDS = ("quotes", "bars", "depth")
_SPLIT_CODES = frozenset({22, 24})  # a refused SUBS/ADD of several symbols: ask again in halves
LOGOUT_TIMEOUT = 0.8
READ_REST_TIMEOUT = 0.5

# websockets logs every frame at DEBUG, abridged but not redacted: the LOGIN frame carries the access token.
_WS_LOG = frames_logger("livedata.websocket.tos")


class StreamerTokens:
    """Where the streamer gets the access token for each login.

    :param current: async callable returning a valid access token (refreshed when near expiry).
    :param refresh: async callable forcing a refresh and returning the new token.

    After the streamer refused a token (:meth:`rejected`: a denied login, or code 3 on a live connection), the
    next login forces a refresh first, so a token the server already refused is never sent twice. When the token
    refreshed after a denial is denied as well, :meth:`denied_after_refresh` says so: refreshing again will not
    help, a person has to look.
    """

    def __init__(self, current: Callable[[], Awaitable[str]], refresh: Callable[[], Awaitable[str]]) -> None:
        self._current = current
        self._refresh = refresh
        self.stale = False
        self._refreshed_after_denial: str | None = None  # the token a refresh forced by a refusal gave

    def denied_after_refresh(self, token: str) -> bool:
        """Whether ``token``, just refused, is the one refreshed because of an earlier refusal."""
        return self.stale and token == self._refreshed_after_denial

    def rejected(self) -> None:
        """The streamer refused the last token: refresh before the next login."""
        self.stale = True

    def accepted(self) -> None:
        """The streamer accepted a login: a later refusal starts the count afresh."""
        self._refreshed_after_denial = None

    async def refresh(self) -> str:
        """Force a refresh now."""
        after_denial = self.stale
        token = await self._refresh()
        self.stale = False
        if after_denial:
            self._refreshed_after_denial = token
        return token

    async def for_login(self) -> str:
        """The token to log in with: a forced refresh after a denial, otherwise the current one."""
        if self.stale:
            return await self.refresh()
        return await self._current()

    def __repr__(self) -> str:
        return f"StreamerTokens(stale={self.stale})"


class TosStream(WebSocketStream):
    """A :class:`~livedata_core.plugin_kit.websocket_stream.WebSocketStream` for the Schwab streamer.

    :param info: the login identity from ``/userPreference`` (:class:`~livedata_tos.protocol.StreamerInfo`).
    :param tokens: the access-token source (:class:`StreamerTokens`).
    :param url: connect here instead of ``info.url`` (tests).
    :param account_activity: subscribe to ACCT_ACTIVITY after login and yield orders.
    :param activity: the account-activity parser; pass the session's so repeats are dropped across reconnects.
    :param status: a dict for ``livedata status`` lines (``ctx.status``): the login's entitlement and the last
        refused command are written there.
    :param quotes: the instance's merge book (``ctx.quotes``), where the merged level-one fields live across
        reconnects; by default one of this stream's own.
    :param tap: sees every frame in and out (:data:`~livedata_core.plugin_kit.websocket_stream.Tap`).
    :param instance: the instance's name (``ctx.instance``): level-one quotes are made with it, so the runner need
        not fill it in on each.
    :param levelone: symbol -> merged fields of the options, futures options and forex quotes; pass one that
        lives with the instance (the session's) so they outlive the connection too.
    :param nyse_book: equities whose depth comes from NYSE_BOOK (the others' from NASDAQ_BOOK).
    """

    name = "the Schwab streamer"

    def __init__(
        self,
        info: StreamerInfo,
        tokens: StreamerTokens,
        *,
        broker: str = "tos",
        instance: str | None = None,
        url: str | None = None,
        account_activity: bool = True,
        activity: ActivityParser | None = None,
        login_timeout: float = 10.0,
        command_timeout: float = 10.0,
        open_timeout: float = 10.0,
        heartbeat_timeout: float | None = 60.0,
        connection_limit_retry: float = 60.0,
        max_keys_per_command: int = 300,
        queue_frames: int = 10_000,
        status: dict[str, Any] | None = None,
        log: logging.Logger | None = None,
        quotes: MergeBook | None = None,
        tap: Tap | None = None,
        levelone: dict[str, dict[str, Any]] | None = None,
        nyse_book: Iterable[str] = (),
    ) -> None:
        super().__init__(url or info.url, log=log or logging.getLogger(f"livedata.broker.{broker}"), tap=tap)
        self.info = info
        self.broker = broker
        self.heartbeat_timeout = heartbeat_timeout
        self.account_activity = account_activity
        self.login_timeout = login_timeout
        self.command_timeout = command_timeout
        self.open_timeout = open_timeout
        self.connect_timeout = None  # each step has its own: open_timeout, login_timeout, command_timeout
        self.request_timeout = command_timeout
        self.logout_timeout = min(LOGOUT_TIMEOUT, command_timeout)
        self.read_rest_timeout = READ_REST_TIMEOUT
        self.queue_frames = queue_frames
        self.connection_limit_retry = connection_limit_retry
        self.max_keys_per_command = max_keys_per_command
        self.server_status: str | None = None
        """The LOGIN answer's ``msg`` (``server=...;status=NP``: NP non-pro, PN/PP pro)."""
        self.account_activity_subscribed = False
        """Whether the server accepted the ACCT_ACTIVITY subscription of this connection."""
        self.last_command_error: str | None = None
        """The last SUBS/ADD/UNSUBS the server refused, for ``livedata status``."""
        self._status = status if status is not None else {}
        self._tokens = tokens
        self._book = QuoteBook(broker, self.stats, quotes, instance=instance)
        self._levelone = options.LevelOneBook(broker, self.stats, levelone)
        self._bars = bars.BarParser(broker, self.stats)
        self._books = books.BookParser(broker, self.stats)  # every level: the runner keeps the top depth_levels
        self._nyse = frozenset(s.strip().upper() for s in nyse_book)
        self._activity = activity or ActivityParser(broker)
        # service -> the parser of its data, beside FIELDS' (the level-one equity and futures hot path)
        self._parsers: dict[str, Any] = {}
        for service in options.LEVELONE_FIELDS:
            self._parsers[service] = (self._levelone, options.request_fields(service))
        for service in bars.BAR_FIELDS:
            self._parsers[service] = (self._bars, bars.request_fields(service))
        for service in BOOKS:
            self._parsers[service] = (self._books, books.request_fields(service))
        self._subscribed: dict[str, set[str]] = {name: set() for name in (*FIELDS, *self._parsers)}
        self._lock = asyncio.Lock()
        self._requestid = 0

    def __repr__(self) -> str:
        return f"TosStream({url_host(self.url)!r}, logged_in={self.ready})"

    @property
    def subscribed(self) -> dict[str, frozenset[str]]:
        """The symbols subscribed per service."""
        return {k: frozenset(v) for k, v in self._subscribed.items()}

    # -- lifecycle -----------------------------------------------------------------------------------------

    def connect_options(self) -> dict[str, Any]:
        return {**super().connect_options(), "compression": None, "close_timeout": 2, "logger": _WS_LOG}

    async def connect(self) -> None:
        """Open the websocket, LOGIN with a current access token and wait for code 0, then subscribe to
        account activity. A refused account-activity subscription (a code that keeps the connection, such as
        11 or 22) is logged, counted under ``account activity subscribe failed`` and written to the
        ``last_refused_command`` status line; the stream stays up for quotes.

        :raises AuthError: the streamer denied the login (the next login refreshes the token first).
        :raises ConnectionLimit: another streamer is connected for this Schwab login.
        :raises StreamError: the streamer could not be reached or did not answer in time.
        """
        await super().connect()

    async def login(self) -> None:
        token = await self._tokens.for_login()
        parameters = {
            "Authorization": token,
            "SchwabClientChannel": self.info.channel,
            "SchwabClientFunctionId": self.info.function_id,
        }
        try:
            answer = await self._command("ADMIN", "LOGIN", parameters, timeout=self.login_timeout)
        except AuthError as exc:
            if self._tokens.denied_after_refresh(token):
                raise LoginRequired(
                    f"{exc}, also with an access token refreshed after the first denial. Check that the Schwab "
                    "app is approved for streaming (Trader API - Individual, Market Data Production), or log "
                    "in again with `livedata auth schwab`"
                ) from None
            raise
        self._tokens.accepted()
        self.ready = True
        self.server_status = str(answer.get("content", {}).get("msg", "")) or None
        self.log.info("logged in to the Schwab streamer at %s (%s)", url_host(self.url), self.server_status)
        self._status["streamer_login"] = self.server_status
        if self.account_activity:
            await self._subscribe_account_activity()

    async def logout(self) -> None:
        await self._command("ADMIN", "LOGOUT", {})

    async def _subscribe_account_activity(self) -> None:
        # A refusal on a live connection (11 SERVICE_NOT_AVAILABLE, 22 FAILED_COMMAND_SUBS, ...) would be refused
        # again after a reconnect: report it and keep streaming quotes. Codes that end the connection raise.
        try:
            await self._command(ACCT_ACTIVITY, "SUBS", {"keys": self.info.correl_id, "fields": "0,1,2,3"})
        except BrokerError as exc:
            if _ends_connection(exc):
                raise
            self.account_activity_subscribed = False
            self._status["account_activity"] = "refused"
            self._command_failed("account activity subscribe failed", exc, [ACCT_ACTIVITY])
            return
        self.account_activity_subscribed = True
        self._status["account_activity"] = "subscribed"

    async def events(self):
        """Yield a list of models per data frame, :data:`HEARTBEAT` for heartbeats, until the connection ends.

        Ends when the server closed the connection politely; raises the error that ended it otherwise
        (``AuthError``, ``ConnectionLimit``, ``StreamError``). Everything received before the end is yielded.
        """
        async for item in super().events():
            yield item

    async def subscribe(self, symbols: Sequence[str], kind: str = "quotes") -> None:
        """ADD subscriptions of one kind: ``quotes`` from the symbol's level-one service, ``bars`` from
        CHART_EQUITY / CHART_FUTURES, ``depth`` from NASDAQ_BOOK / NYSE_BOOK / OPTIONS_BOOK.

        :raises SymbolsRefused: some symbols were refused while the connection stays up, naming them only:
            a kind Schwab has no service for (bars of an option, depth of a future), a refused service (code 11),
            the symbol limit (code 19) or a failed ADD (a chunk refused with code 22 or 24 is asked again in
            halves until the refused symbols stand alone, so one unknown contract costs only itself). Every other symbol is subscribed.
        :raises StreamError, AuthError: a code that ends the connection.
        """
        refused: list[str] = []
        errors: list[str] = []
        groups, unsupported = self._group(symbols, kind, subscribed=False)
        if unsupported:
            refused.extend(unsupported)
            errors.append(f"Schwab streams no {kind} for {', '.join(unsupported)}")
        if kind == "quotes":
            self._book.unmute(symbols)  # still subscribed after a refused UNSUBS: their quotes resume
            self._levelone.unmute(symbols)
        for service, new in groups.items():
            parser, fields = self._parser(service)
            for chunk in _chunks(new, self.max_keys_per_command):
                failed, error = await self._add(service, parser, fields, chunk)
                if failed:
                    refused.extend(failed)
                    errors.append(error)
        if refused:
            raise SymbolsRefused(f"the Schwab streamer refused {', '.join(refused)}: {'; '.join(errors)}", refused)

    async def _add(self, service: str, parser: Any, fields: str, chunk: list[str]) -> tuple[list[str], str]:
        """ADD one chunk; the symbols refused and why (none: ``([], "")``)."""
        parser.want(chunk)
        try:
            await self._command(service, "ADD", {"keys": ",".join(chunk), "fields": fields})
        except BrokerError as exc:
            parser.forget(chunk)
            if _ends_connection(exc):
                raise
            if len(chunk) > 1 and _error_code(exc) in _SPLIT_CODES:
                # Halves until the refused symbols stand alone: a few commands for one bad contract among 300.
                refused: list[str] = []
                reasons: list[str] = []
                half = len(chunk) // 2
                for part in (chunk[:half], chunk[half:]):
                    failed, error = await self._add(service, parser, fields, part)
                    refused.extend(failed)
                    if failed:
                        reasons.append(error)
                return refused, "; ".join(dict.fromkeys(reasons))
            self._command_failed("subscribe failed", exc, chunk)
            return chunk, str(exc)
        except BaseException:
            parser.forget(chunk)
            raise
        self._subscribed[service].update(chunk)
        self.log.debug("subscribed %s: %s", service, ",".join(chunk))
        return [], ""

    async def unsubscribe(self, symbols: Sequence[str], kind: str = "quotes") -> None:
        """UNSUBS symbols of one kind. Their data stops at once; their state is dropped once the server agrees.

        A refusal on a live connection is logged and counted (``unsubscribe failed``); the symbols then stay
        subscribed, their level-one deltas still merged but not yielded, so a later :meth:`subscribe` of them
        resumes with complete quotes.
        """
        groups, _ = self._group(symbols, kind, subscribed=True)
        for service, old in groups.items():
            parser, _ = self._parser(service)
            quotes = service in FIELDS or service in options.LEVELONE_FIELDS
            for chunk in _chunks(old, self.max_keys_per_command):
                if quotes:
                    parser.mute(chunk)
                else:
                    parser.forget(chunk)
                try:
                    await self._command(service, "UNSUBS", {"keys": ",".join(chunk)})
                except BrokerError as exc:
                    if _ends_connection(exc):
                        raise
                    if not quotes:
                        parser.want(chunk)  # still subscribed: keep publishing what comes
                    self._command_failed("unsubscribe failed", exc, chunk)
                    continue
                parser.forget(chunk)
                self._subscribed[service].difference_update(chunk)
                self.log.debug("unsubscribed %s: %s", service, ",".join(chunk))

    def _parser(self, service: str) -> tuple[Any, str]:
        if service in FIELDS:
            return self._book, request_fields(service)
        return self._parsers[service]

    async def view(self, service: str, fields: Iterable[int | str]) -> None:
        """VIEW: change the field list of every symbol of a level-one service (fields we do not map are
        counted as unknown when they arrive)."""
        numbers = sorted({int(f) for f in fields} | {0})
        await self._command(service, "VIEW", {"fields": ",".join(map(str, numbers))})

    async def close(self) -> None:
        """LOGOUT (waiting briefly for its answer) and close the socket. Never raises."""
        await super().close()

    # -- commands ------------------------------------------------------------------------------------------

    async def _command(self, service: str, command: str, parameters: dict[str, Any], timeout: float | None = None) -> dict:
        """Send one request and wait for its response; raise the error its code means."""
        async with self._lock:  # one command in flight: an answer without a requestid is matched by its command
            self._requestid += 1
            rid = str(self._requestid)

            def answers(response: dict) -> bool:
                got = response.get("requestid")
                return str(got) == rid or (
                    got is None and response.get("service") == service and response.get("command") == command
                )

            answer = await self.request(
                request(self.info, rid, service, command, parameters),
                match=answers,
                timeout=timeout,
                what=f"{service} {command}",
            )
        content = answer.get("content")
        code = _code(answer)
        msg = content.get("msg") if isinstance(content, dict) else None
        error = error_for_code(code, msg, service, command, connection_limit_retry=self.connection_limit_retry)
        if error is not None:
            if isinstance(error, AuthError):
                self._tokens.rejected()
            raise error
        return answer

    # -- reading -------------------------------------------------------------------------------------------

    def on_frame(self, raw: str | bytes) -> Any:
        """Parse one frame: a list of the models it carries, or :data:`HEARTBEAT` for a heartbeat alone."""
        out, heartbeat = self._on_frame(raw, self.received_ms())  # the tap's time: a replay publishes the same
        if out:
            return out
        return HEARTBEAT if heartbeat else None

    def fail(self, error: BaseException) -> None:
        if isinstance(error, AuthError):
            self._tokens.rejected()  # code 3 on a live connection: the token expired or was revoked
        super().fail(error)

    def _on_frame(self, raw: str | bytes, received_at: int) -> tuple[list[Any], bool]:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            message = _lenient_loads(raw)  # what orjson refuses (1e400, a lone surrogate) may sit beside orders
            if message is None:
                self.stats.skip("malformed frame (not JSON)", raw[:200])
                return [], False
        if type(message) is not dict:
            self.stats.skip("malformed frame (not an object)", message)
            return [], False
        out: list[Any] = []
        heartbeat = False
        for kind, value in message.items():
            # Each part of a frame on its own: a bad notify must not cost the data next to it.
            try:
                if kind == "data":
                    self._on_data(value, received_at, out)
                elif kind == "response":
                    self._on_responses(value)
                elif kind == "notify":
                    heartbeat = self._on_notify(value) or heartbeat
                else:
                    self.stats.skip("unknown message type", kind)
            except Exception as exc:  # a parser bug: count it, keep the rest of the frame
                self.stats.skip(f"{kind} could not be parsed", f"{type(exc).__name__}: {exc}")
        return out, heartbeat

    def _on_data(self, entries: Any, received_at: int, out: list[Any]) -> None:
        if type(entries) is not list:
            self.stats.skip("data is not a list", entries)
            return
        for entry in entries:
            if type(entry) is not dict:
                self.stats.skip("data entry is not an object", entry)
                continue
            service = entry.get("service")
            if type(service) is not str:
                self.stats.skip("unknown service", service)
                continue
            # The parsers isolate errors per item; this catches the rest so other entries still count.
            try:
                if service in FIELDS:
                    out.extend(self._book.apply(service, entry.get("content"), entry.get("timestamp"), received_at))
                elif service == ACCT_ACTIVITY:
                    out.extend(self._activity.apply(entry.get("content"), entry.get("timestamp"), received_at, self.stats))
                elif service in self._parsers:
                    parser = self._parsers[service][0]
                    out.extend(parser.apply(service, entry.get("content"), entry.get("timestamp"), received_at))
                else:
                    self.stats.skip("unknown service", service)
            except Exception as exc:
                self.stats.skip(f"{service} data could not be parsed", f"{type(exc).__name__}: {exc}")

    # {"response":[{"service":"ADMIN","command":"LOGIN","requestid":"1","SchwabClientCorrelId":"5be0...",
    #   "timestamp":1669828276886,"content":{"code":0,"msg":"server=s0166bdv-1;status=PN"}}]}
    def _on_responses(self, responses: Any) -> None:
        if type(responses) is not list:
            responses = [responses]
        for answer in responses:
            if type(answer) is not dict:
                self.stats.skip("response is not an object", answer)
                continue
            code = _code(answer)
            if self.offer(answer):  # the answer to the command in flight
                pass
            elif code not in SEVERING_CODES:
                self.log.debug("response to no request in flight: %r", answer)
            if code in SEVERING_CODES:
                self.fail(self._error(answer))

    # {"notify":[{"heartbeat":"1668715930582"}]}
    # {"notify":[{"service":"ADMIN","timestamp":1595453993677,"content":{"code":30,"msg":"Stop streaming due to
    #   empty subscription"}}]}
    def _on_notify(self, notices: Any) -> bool:
        if type(notices) is not list:
            notices = [notices]
        heartbeat = False
        for notice in notices:
            if type(notice) is not dict:
                self.stats.skip("notify is not an object", notice)
            elif "heartbeat" in notice:
                heartbeat = True
            elif isinstance(notice.get("content"), dict):
                code = _code(notice)
                if code in SEVERING_CODES:
                    self.fail(self._error(notice))
                else:
                    self.log.info("streamer notice: %r", notice)
            else:
                self.stats.skip("unknown notify", notice)
        return heartbeat

    def _error(self, answer: dict) -> Exception:
        content = answer.get("content") or {}
        error = error_for_code(
            _code(answer),
            content.get("msg"),
            str(answer.get("service", "ADMIN")),
            str(answer.get("command", "")),
            connection_limit_retry=self.connection_limit_retry,
        )
        return error or StreamError("the Schwab streamer ended the connection")

    # -- helpers -------------------------------------------------------------------------------------------

    def _command_failed(self, what: str, exc: Exception, symbols: list[str]) -> None:
        # A refused command on a live connection (symbol limit, bad format) would fail the same way after a
        # reconnect, so it is reported and counted instead of ending the stream.
        self.last_command_error = f"{what}: {exc}"
        self._status["last_refused_command"] = self.last_command_error
        self.stats.skip(what, f"{exc} (symbols: {','.join(symbols)[:200]})")
        self.log.error("%s for %s: %s", what, ",".join(symbols)[:200], exc)

    def _group(self, symbols: Sequence[str], kind: str, *, subscribed: bool) -> tuple[dict[str, list[str]], list[str]]:
        """The symbols per service of ``kind`` whose subscription state is ``subscribed``, and those Schwab has
        no service of that kind for."""
        if kind not in KINDS:
            raise ValueError(f"tos streams {', '.join(KINDS)}, not {kind!r}")
        groups: dict[str, list[str]] = {}
        unsupported: list[str] = []
        for symbol in dict.fromkeys(symbols):
            if kind == "quotes":
                service = service_for(symbol)
            elif kind == "bars":
                service = bar_service(symbol)
            else:
                service = book_service(symbol, self._nyse)
                if subscribed and service is not None and symbol not in self._subscribed[service]:
                    service = next((b for b in BOOKS if symbol in self._subscribed[b]), service)
            if service is None:
                unsupported.append(symbol)
            elif (symbol in self._subscribed[service]) == subscribed:
                groups.setdefault(service, []).append(symbol)
        return groups, unsupported


def _lenient_loads(raw: str | bytes) -> Any:
    """Parse JSON that orjson refuses but the standard library reads: numbers out of float range and
    non-finite constants become ``None`` (so the parsers count them as bad values); ``None`` if not JSON at all."""
    try:
        return json.loads(raw, parse_float=_finite_or_none, parse_constant=lambda _: None)
    except ValueError:
        return None


def _finite_or_none(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _code(answer: dict) -> int | None:
    """``content.code`` of a response or notice when it is an integer (anything else is no code)."""
    content = answer.get("content")
    code = content.get("code") if isinstance(content, dict) else None
    return code if type(code) is int else None


def _error_code(exc: Exception) -> int | None:
    """The response code of a refused command (:func:`~livedata_tos.protocol.error_for_code` sets it)."""
    return getattr(exc, "code", None)


def _ends_connection(exc: Exception) -> bool:
    return isinstance(exc, (StreamError, AuthError))


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
