"""The gateway session: auth status, opening the brokerage session, the ``/tickle`` keep-alive, and caches
(conids, order state) shared by the stream and the account fetches.

IBKR never sends an "authenticated again" event, so lost authentication is remembered here
(:attr:`IbkrSession.auth_lost`): every hook and the stream check it and raise :class:`AuthError`, and the
runner calls ``authenticate`` again, which re-opens the brokerage session or says that a person must log in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

from livedata_core.errors import AuthError, LivedataError, LoginRequired

from .client import IbkrClient
from .settings import IbkrSettings

__all__ = ["IbkrSession", "OrderBook"]

LOGIN_POLL = 0.25


class OrderBook:
    """The last known raw state of each order, so partial ``sor`` updates merge onto the full order.

    Both paths (the websocket's ``sor`` updates and the REST poll) merge onto the same rows and hand every
    state they see to the runner, which publishes each order state once (its key includes ``broker_status``,
    so PreSubmitted -> Submitted, a stop order being triggered, is a new state even though both are ``open``).
    """

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._rows: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def merge(self, row: dict[str, Any]) -> dict[str, Any]:
        key = str(row.get("orderId"))
        merged = {**self._rows.get(key, {}), **{k: v for k, v in row.items() if v is not None}}
        self._rows[key] = merged
        self._rows.move_to_end(key)
        while len(self._rows) > self.limit:
            self._rows.popitem(last=False)
        return merged


class IbkrSession:
    """One gateway session, kept in ``ctx.session`` by the ``authenticate`` hook.

    :param status: the broker context's ``status`` dict, where the keep-alive reports.
    """

    def __init__(self, settings: IbkrSettings, log: logging.Logger, status: dict[str, Any],
                 client: IbkrClient | None = None) -> None:
        self.settings = settings
        self.log = log
        self.status = status
        self.client = client or IbkrClient(settings, log)
        self.conids: dict[str, int] = {}
        self.orders = OrderBook()
        self.ws_token: str | None = None
        self.auth_lost = False
        self.authenticated = False
        self.portfolio_ready = False
        self._portfolio_accounts: list[Any] = []
        self.orders_ready = False
        self.tickles = 0
        self._tickle_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"IbkrSession({self.settings.base_url!r}, authenticated={self.authenticated})"

    @property
    def login_url(self) -> str:
        parts = urlsplit(self.settings.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    # -- authentication ------------------------------------------------------------------------------------

    async def authenticate(self) -> None:
        """Make the brokerage session usable, or raise :class:`LoginRequired` with what the user must do."""
        self.authenticated = False
        self.portfolio_ready = False
        self.orders_ready = False
        status = await self.auth_status()
        if not status.get("authenticated"):
            if self._must_not_compete(status):
                raise LoginRequired(self._login_message(status))
            self.log.info("IBKR brokerage session not open (connected=%s); opening it", status.get("connected"))
            status = await self._open_brokerage_session()
        if not status.get("authenticated"):
            raise LoginRequired(self._login_message(status))
        self.auth_lost = False
        # Pre-flight: /iserver/accounts must be called before market data and order queries.
        await self.client.get("/iserver/accounts")
        await self.tickle()
        self.authenticated = True
        self.status["session"] = "authenticated"
        self._start_tickle()

    async def auth_status(self) -> dict[str, Any]:
        try:
            data = await self.client.post("/iserver/auth/status")
        except AuthError:
            raise LoginRequired(self._login_message({})) from None
        return data if isinstance(data, dict) else {}

    async def _open_brokerage_session(self) -> dict[str, Any]:
        try:
            await self.client.post("/iserver/auth/ssodh/init", {"publish": True, "compete": self.settings.compete})
        except AuthError:
            raise LoginRequired(self._login_message({})) from None
        deadline = time.monotonic() + self.settings.login_wait
        while True:
            status = await self.auth_status()
            if status.get("authenticated") or time.monotonic() >= deadline:
                return status
            await asyncio.sleep(min(LOGIN_POLL, max(0.0, deadline - time.monotonic())))

    def _must_not_compete(self, status: dict[str, Any]) -> bool:
        """Whether another session holds the brokerage session and ``compete`` does not allow taking it over
        (that would log the user's TWS, mobile or web session out, and it would take the session back)."""
        return bool(status.get("competing")) and not status.get("authenticated") and not self.settings.compete

    async def wait_for_login(self, timeout: float, interval: float = 1.0) -> bool:
        """Poll until the brokerage session is open (re-opening it once the browser login is done), or
        ``timeout`` seconds pass. Returns whether it is open; raises :class:`LoginRequired` if another session
        still held it at the end (and ``compete`` is off)."""
        deadline = time.monotonic() + timeout
        competing: dict[str, Any] | None = None
        while True:
            try:
                status = await self.auth_status()
                if self._must_not_compete(status):
                    if competing is None:
                        self.log.warning("%s", self._login_message(status))
                    competing = status
                else:
                    competing = None
                    if not status.get("authenticated") and status.get("connected"):
                        status = await self._open_brokerage_session()
                    if status.get("authenticated"):
                        return True
            except LoginRequired:
                pass  # not logged in in the browser yet
            if time.monotonic() >= deadline:
                if competing is not None:
                    raise LoginRequired(self._login_message(competing))
                return False
            await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))

    def _login_message(self, status: dict[str, Any]) -> str:
        if status.get("competing"):
            head = ("IBKR: another IBKR session (TWS, mobile or web) holds the brokerage session for this username; ")
            if self.settings.compete:
                return head + ("brokers.ibkr.compete is on but the gateway did not hand the session over; log out "
                               "there or use a separate username for the API")
            return head + ("log out there (livedata takes the session on its next retry), use a separate username "
                           "for the API, or set brokers.ibkr.compete = true to take the session over (that logs "
                           "the other session out)")
        return (f"IBKR: the gateway is not logged in; open {self.login_url} in a browser on the gateway's machine, "
                "log in (with 2FA) and wait for 'Client login succeeds'")

    def check(self) -> None:
        """Raise :class:`AuthError` if the keep-alive or the websocket saw the session drop."""
        if self.auth_lost:
            raise AuthError("IBKR brokerage session was lost; re-authenticating")

    def mark_lost(self, why: str) -> None:
        if not self.auth_lost:
            self.log.warning("IBKR session lost: %s", why)
        self.auth_lost = True
        self.authenticated = False
        self.status["session"] = f"lost: {why}"

    # -- keep-alive ----------------------------------------------------------------------------------------

    # Sample /tickle reply:
    # {"session":"ce10...","ssoExpires":585695,"collission":false,"userId":99996016,
    #  "iserver":{"authStatus":{"authenticated":true,"competing":false,"connected":true,"message":"",...}}}
    async def tickle(self) -> None:
        """One keep-alive; remembers the websocket session value and notices a dropped session."""
        try:
            data = await self.client.post("/tickle")
        except AuthError:
            self.mark_lost("HTTP 401 on /tickle")
            raise
        self.tickles += 1
        self.status["tickle"] = f"ok at {time.strftime('%H:%M:%S')} ({self.tickles} sent)"
        if not isinstance(data, dict):
            return
        if isinstance(data.get("session"), str):
            self.ws_token = data["session"]
        auth = (data.get("iserver") or {}).get("authStatus") if isinstance(data.get("iserver"), dict) else None
        if isinstance(auth, dict) and auth.get("authenticated") is False:
            self.mark_lost("tickle reports the brokerage session is not authenticated")

    def _start_tickle(self) -> None:
        if self._tickle_task is None or self._tickle_task.done():
            self._tickle_task = asyncio.create_task(self._tickle_loop(), name="ibkr-tickle")

    async def _tickle_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tickle_interval)
            try:
                await self.tickle()
            except asyncio.CancelledError:
                raise
            except LivedataError as exc:
                self.status["tickle"] = f"failed at {time.strftime('%H:%M:%S')}: {exc}"
                self.log.warning("IBKR tickle failed: %s", exc)

    # -- pre-flights and lookups ---------------------------------------------------------------------------

    async def portfolio_accounts(self) -> list[Any]:
        """The rows of ``/portfolio/accounts``, fetched once per authentication: it must be called before the
        other ``/portfolio`` endpoints and is limited to one request per 5 seconds."""
        self.check()
        if not self.portfolio_ready:
            data = await self.client.get("/portfolio/accounts")
            self._portfolio_accounts = data if isinstance(data, list) else []
            self.portfolio_ready = True
        return self._portfolio_accounts

    async def resolve(self, ticker: str) -> int | None:
        """The conid of a ticker (``default_sec_type``), cached for the life of the process.

        Only a search row whose symbol is exactly ``ticker`` (and, when the row lists its sections, one of
        them of ``default_sec_type``) counts: the search is fuzzy ("AAP" finds AAPL), and streaming the nearest
        hit would publish another instrument's quotes under the user's symbol. ``None`` when nothing matches.
        """
        conid = self.conids.get(ticker)
        if conid is not None:
            return conid
        self.check()
        sec_type = self.settings.default_sec_type.strip().upper()
        # Sample: [{"conid":"265598","companyName":"APPLE INC","symbol":"AAPL","description":"NASDAQ",
        #           "sections":[{"secType":"STK"},{"secType":"OPT","months":"..."}]}]
        rows = await self.client.get("/iserver/secdef/search", symbol=ticker, secType=self.settings.default_sec_type)
        rows = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
        for row in rows:
            if str(row.get("symbol", "")).strip().upper() != ticker or not _has_sec_type(row, sec_type):
                continue
            try:
                conid = int(str(row.get("conid")))
            except ValueError:
                continue
            self.conids[ticker] = conid
            return conid
        near = sorted({f"{r.get('symbol')}" for r in rows})[:5]
        self.log.info("IBKR symbol search for %r (%s) has no exact match%s; it is not streamed", ticker, sec_type,
                      f" (nearest: {', '.join(near)})" if near else "")
        return None

    async def close(self) -> None:
        if self._tickle_task is not None:
            self._tickle_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._tickle_task
            self._tickle_task = None
        await self.client.close()
        self.status["session"] = "closed"


def _has_sec_type(row: dict[str, Any], sec_type: str) -> bool:
    """Whether a search row offers ``sec_type``; a row without a ``sections`` list is taken at its word."""
    sections = row.get("sections")
    if not sec_type or not isinstance(sections, list) or not sections:
        return True
    return any(isinstance(s, dict) and str(s.get("secType", "")).upper() == sec_type for s in sections)
