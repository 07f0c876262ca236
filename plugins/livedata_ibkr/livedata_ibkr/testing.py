"""A fake Client Portal gateway for tests: HTTPS REST and a WSS websocket with the documented shapes.

Usage (inside a running event loop)::

    async with FakeGateway() as gw:
        settings = gw.settings(tickle_interval=0.2)      # base_url, ws_url and ca_bundle point at the fake
        ...
        await gw.push_quote(265598, {"31": "189.60", "84": "189.56"})
        await gw.lose_auth()                              # sts authenticated:false, REST 401 on /iserver
        await gw.drop_websockets()                        # forced drop (close code 1011)

REST and websocket listen on two loopback ports (the ``websockets`` server only speaks GET); both use a
certificate signed by a throwaway ``trustme`` CA, written to :attr:`FakeGateway.ca_path`. Every REST request
is recorded in :attr:`FakeGateway.requests` with its monotonic time, for pacing assertions.

State a test can change: :attr:`logged_in` (browser login; ``False`` gives 401 everywhere),
:attr:`authenticated` (brokerage session), :attr:`reauth_allowed` (whether ``ssodh/init`` re-opens it),
:attr:`cookie_auth` (``False``: ignore the ``api`` cookie and wait for the ``{"session": ...}`` frame),
:attr:`accounts`, :attr:`positions`, :attr:`ledger`, :attr:`summary`, :attr:`orders`, :attr:`conids` (what
``secdef/search`` finds: the exact symbol, else every symbol starting with the query, as the real fuzzy
search does), :attr:`search_results` (exact search replies per symbol),
:attr:`smd_ttl` (seconds before a market-data subscription silently stops), :attr:`hb_interval`,
:meth:`rate_limit` (answer the next requests to a path with 429), :meth:`hang_websockets` (stop reading the
websockets, as a hung gateway: not even a close frame is answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import tempfile
import time
from collections import defaultdict
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from .stream import QuietWebsocketLogger

__all__ = ["FakeGateway", "Recorded"]

SESSION_TOKEN = "fake-tickle-session-0123456789abcdef"
PREFIX = "/v1/api"


@attrs.define
class Recorded:
    """One REST request the fake received."""

    at: float
    method: str
    path: str
    query: dict[str, str]
    body: Any


@attrs.define(eq=False)
class _Client:
    ws: ServerConnection
    smd: dict[int, float] = attrs.field(factory=dict)  # conid -> expiry (monotonic)
    orders: bool = False
    orders_preflighted: bool = False  # GET /iserver/account/orders came before sor+{}
    sor_at: float | None = None  # monotonic time of the sor+{} frame
    sent: list[str] = attrs.field(factory=list)  # text frames received from the client


def _default_positions() -> dict[str, list[dict[str, Any]]]:
    return {
        "DU1234": [
            {"acctId": "DU1234", "conid": 756733, "contractDesc": "SPY", "assetClass": "STK", "position": 100.0,
             "mktPrice": 454.44, "mktValue": 45444.0, "currency": "USD", "avgCost": 437.43, "avgPrice": 437.43,
             "realizedPnl": 0.0, "unrealizedPnl": 1701.0, "ticker": "SPY", "listingExchange": "ARCA",
             "isUS": True, "multiplier": 0.0, "pageSize": 100},
        ]
    }


def _default_ledger() -> dict[str, dict[str, Any]]:
    return {
        "DU1234": {
            "USD": {"cashbalance": 21471.5, "settledcash": 21471.5, "netliquidationvalue": 66915.5,
                    "stockmarketvalue": 45444.0, "unrealizedpnl": 1701.0, "realizedpnl": 0.0, "currency": "USD",
                    "exchangerate": 1, "acctcode": "DU1234", "key": "LedgerList", "timestamp": 1702582321},
            "BASE": {"currency": "BASE", "netliquidationvalue": 66915.5, "cashbalance": 21471.5,
                     "key": "LedgerList", "timestamp": 1702582321},
        }
    }


def _amount(value: float) -> dict[str, Any]:
    return {"amount": value, "currency": "USD", "isNull": False, "timestamp": 1702582321000, "value": None,
            "severity": 0}


def _default_summary() -> dict[str, dict[str, Any]]:
    return {
        "DU1234": {
            "netliquidation": _amount(66915.5), "buyingpower": _amount(85886.0),
            "equitywithloanvalue": _amount(66915.5), "maintmarginreq": _amount(11361.0),
            "totalcashvalue": _amount(21471.5), "accountcode": {"amount": 0.0, "currency": None, "isNull": False,
                                                               "value": "DU1234"},
        }
    }


class FakeGateway:
    """A fake IBKR Client Portal gateway on loopback. Use as an async context manager."""

    def __init__(self, *, host: str = "127.0.0.1", hb_interval: float = 10.0, smd_ttl: float = 600.0,
                 tls: bool = True, quote_interval: float | None = None) -> None:
        self.host = host
        self.quote_interval = quote_interval
        self._ticks = 0
        self._quote_task: asyncio.Task[None] | None = None
        self.tls = tls
        self.hb_interval = hb_interval
        self.smd_ttl = smd_ttl
        self.logged_in = True
        self.authenticated = True
        self.competing = False
        self.reauth_allowed = True
        self.cookie_auth = True  # False: ignore the api cookie, always ask for the session frame
        self.session_frames = 0
        self.accounts: list[dict[str, Any]] = [
            {"id": "DU1234", "accountId": "DU1234", "accountVan": "DU1234", "displayName": "DU1234",
             "currency": "USD", "type": "DEMO", "tradingType": "PMRGN", "desc": "DU1234", "brokerageAccess": True}
        ]
        self.conids: dict[str, int] = {"AAPL": 265598, "IBM": 8314, "SPY": 756733}
        #: symbol -> the exact rows ``/iserver/secdef/search`` answers (instead of the search over conids).
        self.search_results: dict[str, list[dict[str, Any]]] = {}
        self.positions = _default_positions()
        self.ledger = _default_ledger()
        self.summary = _default_summary()
        self.orders: list[dict[str, Any]] = []
        self.orders_preflight = True
        self.requests: list[Recorded] = []
        self.clients: list[_Client] = []
        self.ws_connections = 0
        self.dropped_quotes = 0
        self._rate_limits: dict[str, int] = defaultdict(int)
        self.retry_after = "0.05"
        self._orders_called = False
        self._servers: list[Any] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._hb_task: asyncio.Task[None] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-ibkr-")
        self.ca_path = os.path.join(self._tmp.name, "ca.pem")
        self._server_ssl: ssl.SSLContext | None = None
        self.rest_port = 0
        self.ws_port = 0

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def __aenter__(self) -> FakeGateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def start(self) -> None:
        if self.tls:
            import trustme

            ca = trustme.CA()
            cert = ca.issue_cert("localhost", "127.0.0.1", "::1")
            ca.cert_pem.write_to_path(self.ca_path)
            self._server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(self._server_ssl)
        rest = await asyncio.start_server(self._serve_http, self.host, 0, ssl=self._server_ssl)
        self.rest_port = rest.sockets[0].getsockname()[1]
        # The fake's own websockets logger is quiet too: at DEBUG it would log the client's Cookie header.
        quiet = QuietWebsocketLogger(logging.getLogger("livedata_ibkr.testing.gateway"))
        ws = await serve(self._serve_ws, self.host, 0, ssl=self._server_ssl, ping_interval=None, logger=quiet)
        self.ws_port = next(iter(ws.sockets)).getsockname()[1]
        self._servers = [rest, ws]
        self._hb_task = asyncio.create_task(self._heartbeats())
        if self.quote_interval:
            self._quote_task = asyncio.create_task(self._auto_quotes())

    async def stop(self) -> None:
        self.resume_websockets()
        for task in (self._hb_task, self._quote_task):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for client in list(self.clients):
            with contextlib.suppress(Exception):
                await client.ws.close()
        for server in self._servers:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        self._tmp.cleanup()

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.rest_port}{PREFIX}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.ws_port}{PREFIX}/ws"

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """A ``[brokers.ibkr]`` settings table pointing at this gateway, verifying its certificate."""
        table: dict[str, Any] = {"base_url": self.base_url, "ws_url": self.ws_url}
        if self.tls:
            table["ca_bundle"] = self.ca_path
        table.update(overrides)
        return table

    # -- test controls -------------------------------------------------------------------------------------

    def rate_limit(self, path: str, times: int = 1, retry_after: str = "0.05") -> None:
        """Answer the next ``times`` requests to ``path`` (without ``/v1/api``) with HTTP 429 and this
        ``Retry-After`` header."""
        self._rate_limits[path] += times
        self.retry_after = retry_after

    def calls(self, path: str, method: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if r.path == path and (method is None or r.method == method)]

    def subscribed(self, conid: int) -> int:
        """How many connected clients have a live ``smd`` subscription to ``conid``."""
        now = time.monotonic()
        return sum(1 for c in self.clients if c.smd.get(conid, -1.0) >= now)

    async def push_quote(self, conid: int, fields: dict[str, Any], updated: int | None = None) -> int:
        """Send an ``smd`` frame to every client with a live subscription; return how many got it."""
        frame = {"topic": f"smd+{conid}", "conid": conid, "conidEx": str(conid), "server_id": "q0",
                 "_updated": updated if updated is not None else int(time.time() * 1000), "6119": "q0", **fields}
        text = orjson.dumps(frame).decode()
        sent = 0
        now = time.monotonic()
        for client in list(self.clients):
            expiry = client.smd.get(conid)
            if expiry is None:
                continue
            if expiry < now:
                self.dropped_quotes += 1  # the gateway silently stops an expired subscription
                continue
            with contextlib.suppress(ConnectionClosed):
                await client.ws.send(text)
                sent += 1
        return sent

    async def push_order(self, row: dict[str, Any]) -> int:
        """Send an ``sor`` frame to every client that asked for order updates, after the required pre-flight
        (``GET /iserver/account/orders`` before ``sor+{}``; without it this fake sends nothing, as gateways
        have been seen to do)."""
        text = orjson.dumps({"topic": "sor", "args": [row]}).decode()
        sent = 0
        for client in list(self.clients):
            if client.orders and (client.orders_preflighted or not self.orders_preflight):
                with contextlib.suppress(ConnectionClosed):
                    await client.ws.send(text)
                    sent += 1
        return sent

    async def send_raw(self, text: str) -> None:
        """Send any text frame to every connected client (malformed-frame tests)."""
        for client in list(self.clients):
            with contextlib.suppress(ConnectionClosed):
                await client.ws.send(text)

    async def lose_auth(self, competing: bool = False) -> None:
        """The brokerage session drops: ``sts`` authenticated false on the websocket, 401 on ``/iserver``."""
        self.authenticated = False
        self.competing = competing
        await self.send_raw(orjson.dumps(
            {"topic": "sts", "args": {"authenticated": False, "competing": competing, "fail": ""}}).decode())

    def hang_websockets(self) -> None:
        """Stop reading every websocket, as a hung gateway would: nothing is answered, not even the closing
        handshake, so only the client can end the TCP connection. :meth:`resume_websockets` (and :meth:`stop`)
        read again."""
        for client in self.clients:
            client.ws.transport.pause_reading()

    def resume_websockets(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                client.ws.transport.resume_reading()

    async def drop(self) -> None:
        """Same as :meth:`drop_websockets` (the conformance suite's name)."""
        await self.drop_websockets()

    async def drop_websockets(self) -> None:
        """Close every websocket with code 1011, as a gateway restart would.

        Returns at once: the closing handshakes finish in the background, so a caller that blocks its own
        event loop while waiting (``ServerThread.drop``) cannot deadlock with its client.
        """
        for client in list(self.clients):
            self.clients.remove(client)
            task = asyncio.create_task(client.ws.close(1011, "gateway restart"))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def wait_for(self, predicate, timeout: float = 5.0, interval: float = 0.01) -> None:
        """Wait until ``predicate()`` is true, or fail with ``AssertionError``."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met within %.1fs" % timeout)
            await asyncio.sleep(interval)

    # -- websocket -----------------------------------------------------------------------------------------

    async def _serve_ws(self, ws: ServerConnection) -> None:
        self.ws_connections += 1
        client = _Client(ws)
        cookie = ws.request.headers.get("Cookie", "") if ws.request else ""
        try:
            if not self.cookie_auth or SESSION_TOKEN not in cookie:
                await ws.send(orjson.dumps({"message": "waiting for session"}).decode())
                first = await ws.recv()
                self.session_frames += 1
                if orjson.loads(first).get("session") != SESSION_TOKEN:
                    await ws.close(1008, "bad session")
                    return
            await ws.send(orjson.dumps({"topic": "system", "success": "fakeuser", "isFT": False, "isPaper": True}).decode())
            await ws.send(orjson.dumps({"topic": "sts", "args": {"authenticated": self.authenticated,
                                                                 "competing": self.competing}}).decode())
            self.clients.append(client)
            async for message in ws:
                if isinstance(message, str):
                    await self._on_ws_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            if client in self.clients:
                self.clients.remove(client)

    async def _on_ws_message(self, client: _Client, text: str) -> None:
        client.sent.append(text)
        if text.startswith("smd+"):
            _, conid, _args = text.split("+", 2)
            new = int(conid) not in client.smd
            client.smd[int(conid)] = time.monotonic() + self.smd_ttl
            if new and self.quote_interval:
                await client.ws.send(orjson.dumps(self._auto_frame(int(conid), full=True)).decode())
        elif text.startswith("umd+"):
            client.smd.pop(int(text.split("+")[1]), None)
        elif text.startswith("sor+"):
            client.orders = True
            client.sor_at = time.monotonic()
            client.orders_preflighted = bool(self.calls("/iserver/account/orders", "GET"))
        elif text.startswith("uor+"):
            client.orders = False
        elif text.startswith("ech+"):
            await client.ws.send("ech+hb")

    def _auto_frame(self, conid: int, full: bool = False) -> dict[str, Any]:
        base = 100.0 + conid % 97 + (self._ticks % 20) / 100
        frame: dict[str, Any] = {"topic": f"smd+{conid}", "conid": conid, "_updated": int(time.time() * 1000)}
        if full or self._ticks % 2 == 0:
            frame.update({"84": f"{base - 0.01:.2f}", "86": f"{base + 0.01:.2f}", "88": "1,300", "85": "500"})
        if full or self._ticks % 2 == 1:
            frame.update({"31": f"{base:.2f}", "7059": "100", "87": "24.2M", "6509": "RpB"})
        return frame

    async def _auto_quotes(self) -> None:
        assert self.quote_interval
        while True:
            await asyncio.sleep(self.quote_interval)
            self._ticks += 1
            conids = {conid for client in self.clients for conid in client.smd}
            for conid in sorted(conids):
                frame = self._auto_frame(conid)
                await self.push_quote(conid, {k: v for k, v in frame.items() if k not in ("topic", "conid", "_updated")})

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.hb_interval)
            await self.send_raw(orjson.dumps({"topic": "system", "hb": int(time.time() * 1000)}).decode())

    # -- REST ----------------------------------------------------------------------------------------------

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0") or 0)
                raw = await reader.readexactly(length) if length else b""
                status, payload = self._route(method, target, raw)
                body = orjson.dumps(payload) if payload is not None else b""
                reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}.get(status, "X")
                head_out = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                            f"Content-Length: {len(body)}\r\n")
                if status == 429:
                    head_out += f"Retry-After: {self.retry_after}\r\n"
                writer.write(head_out.encode() + b"\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.CancelledError, ConnectionError, ssl.SSLError, ValueError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def _route(self, method: str, target: str, raw: bytes) -> tuple[int, Any]:
        parts = urlsplit(target)
        path = parts.path[len(PREFIX):] if parts.path.startswith(PREFIX) else parts.path
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        body = orjson.loads(raw) if raw else None
        self.requests.append(Recorded(time.monotonic(), method, path, query, body))
        if self._rate_limits.get(path, 0) > 0:
            self._rate_limits[path] -= 1
            return 429, {"error": "too many requests"}
        if not self.logged_in:
            return 401, {"error": "not authenticated"}
        if path == "/tickle":
            return 200, {"session": SESSION_TOKEN, "ssoExpires": 585695, "collission": False, "userId": 1,
                         "iserver": {"authStatus": self._auth_status()}}
        if path == "/iserver/auth/status":
            return 200, self._auth_status()
        if path == "/iserver/auth/ssodh/init":
            # Another session holding the brokerage session gives it up only to {"compete": true}.
            if self.reauth_allowed and (not self.competing or (body or {}).get("compete") is True):
                self.authenticated = True
                self.competing = False
            return 200, {"authenticated": self.authenticated, "connected": True, "competing": self.competing}
        if path.startswith("/iserver/") and not self.authenticated:
            return 401, {"error": "not authenticated"}
        if path == "/iserver/accounts":
            ids = [a["accountId"] for a in self.accounts]
            return 200, {"accounts": ids, "selectedAccount": ids[0] if ids else None, "isPaper": True}
        if path == "/iserver/secdef/search":
            symbol = query.get("symbol", "").upper()
            if symbol in self.search_results:
                return 200, list(self.search_results[symbol])
            # Like the real search, a symbol without an exact hit still gets the nearest ones ("AAP" -> AAPL).
            hits = [s for s in self.conids if s == symbol] or [s for s in sorted(self.conids) if s.startswith(symbol)]
            return 200, [{"conid": str(self.conids[s]), "companyHeader": f"{s} - NASDAQ",
                          "companyName": f"{s} INC", "symbol": s, "description": "NASDAQ",
                          "restricted": None, "sections": [{"secType": "STK"}]} for s in hits]
        if path == "/iserver/account/orders":
            if self.orders_preflight and not self._orders_called:
                self._orders_called = True
                return 200, {"orders": [], "snapshot": False}
            return 200, {"orders": list(self.orders), "snapshot": True}
        if path == "/portfolio/accounts":
            return 200, list(self.accounts)
        segments = path.split("/")
        if len(segments) >= 4 and segments[1] == "portfolio":
            account, what = segments[2], segments[3]
            if what == "positions" and len(segments) == 5 and segments[4] == "invalidate":
                return 200, {"message": "success"}
            if what == "positions" and len(segments) == 5:
                page = int(segments[4])
                rows = self.positions.get(account, [])
                return 200, rows[page * 100:(page + 1) * 100]
            if what == "ledger":
                return 200, self.ledger.get(account, {})
            if what == "summary":
                return 200, self.summary.get(account, {})
        return 404, {"error": f"no route {method} {path}"}

    def _auth_status(self) -> dict[str, Any]:
        return {"authenticated": self.authenticated, "competing": self.competing, "connected": True,
                "message": "", "MAC": "00:00:00:00:00:00", "serverInfo": {"serverName": "fake", "serverVersion": "0"},
                "fail": ""}
