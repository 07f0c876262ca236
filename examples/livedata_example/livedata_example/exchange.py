"""The Example exchange, small enough to run in a test: quotes over a websocket, accounts over HTTP.

One port serves both. HTTP requests carry the API key in the ``X-Api-Key`` header::

    GET /accounts                      [{"id": "ACC-1", "type": "cash"}]
    GET /accounts/ACC-1/positions      [{"symbol": "AAPL", "qty": 10, "avg_price": 150.0}]
    GET /accounts/ACC-1/balances       {"cash": 1000.0, "currency": "USD"}

The websocket is at ``/stream``. Every request carries an ``id`` its reply repeats. Every ``interval`` seconds
the exchange sends a trade or a quote (alternately) per subscribed symbol: only what changed. It sends no
heartbeats (a quiet client pings)::

    > {"id": 1, "op": "login", "key": "..."}                < {"id": 1, "ok": true}  or  {"id": 1, "ok": false, "error": "..."}
    > {"id": 2, "op": "subscribe", "symbols": ["AAPL", "ZZZZ"]}   < {"id": 2, "ok": true, "refused": ["ZZZZ"]}
    > {"id": 3, "op": "unsubscribe", "symbols": ["AAPL"]}   < {"id": 3, "ok": true}
    < {"type": "trade", "symbol": "AAPL", "price": 150.13, "size": 100, "volume": 120400, "time": 1718000000000}
    < {"type": "quote", "symbol": "AAPL", "bid": 150.12, "ask": 150.14, "time": 1718000000050}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

ACCOUNTS = {
    "ACC-1": {
        "type": "cash",
        "positions": [{"symbol": "AAPL", "qty": 10, "avg_price": 150.0}],
        "balances": {"cash": 1000.0, "currency": "USD"},
    }
}
UNLISTED = {"ZZZZ"}  # symbols the exchange refuses


class Exchange:
    """A local Example exchange on 127.0.0.1 and a free port. ``drop()`` cuts every websocket."""

    def __init__(self, api_key: str, interval: float = 0.05, seed: int = 1) -> None:
        self.api_key = api_key
        self.interval = interval
        self.rng = random.Random(seed)
        self.prices: dict[str, float] = {}
        self.volumes: dict[str, int] = {}
        self.clients: set[ServerConnection] = set()
        self.port = 0
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await serve(self._stream, "127.0.0.1", 0, process_request=self._http)
        self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def drop(self) -> None:
        for connection in list(self.clients):
            connection.transport.abort()

    def _http(self, connection: ServerConnection, request):
        if request.path == "/stream":
            return None  # go on with the websocket handshake
        if request.headers.get("X-Api-Key") != self.api_key:
            return connection.respond(401, json.dumps({"error": "bad api key"}))
        parts = request.path.strip("/").split("/")
        if parts == ["accounts"]:
            return connection.respond(200, json.dumps([{"id": i, "type": a["type"]} for i, a in ACCOUNTS.items()]))
        if len(parts) == 3 and parts[0] == "accounts" and parts[1] in ACCOUNTS and parts[2] in ("positions", "balances"):
            return connection.respond(200, json.dumps(ACCOUNTS[parts[1]][parts[2]]))
        return connection.respond(404, json.dumps({"error": f"no such resource {request.path}"}))

    async def _stream(self, connection: ServerConnection) -> None:
        symbols: set[str] = set()
        ticker = None
        try:
            async for message in connection:
                request = json.loads(message)
                reply = {"id": request.get("id"), "ok": True}
                if ticker is None:  # the first request must be a good login
                    if request.get("op") != "login" or request.get("key") != self.api_key:
                        await connection.send(json.dumps({**reply, "ok": False, "error": "login refused"}))
                        return
                    self.clients.add(connection)
                    ticker = asyncio.create_task(self._tick(connection, symbols))
                elif request.get("op") == "subscribe":
                    reply["refused"] = [s for s in request["symbols"] if s in UNLISTED]
                    symbols.update(set(request["symbols"]) - UNLISTED)
                elif request.get("op") == "unsubscribe":
                    symbols.difference_update(request["symbols"])
                await connection.send(json.dumps(reply))
        except ConnectionClosed:
            pass
        finally:
            if ticker is not None:
                ticker.cancel()
            self.clients.discard(connection)

    async def _tick(self, connection: ServerConnection, symbols: set[str]) -> None:
        with contextlib.suppress(ConnectionClosed):
            for n in range(10**9):
                await asyncio.sleep(self.interval)
                for symbol in sorted(symbols):
                    await connection.send(json.dumps(self._update(symbol, trade=n % 2 == 0)))

    def _update(self, symbol: str, trade: bool) -> dict:
        last = self.prices.get(symbol) or round(self.rng.uniform(20, 500), 2)
        now = int(time.time() * 1000)
        if not trade:
            return {"type": "quote", "symbol": symbol, "bid": round(last - 0.01, 2), "ask": round(last + 0.01, 2), "time": now}
        last = self.prices[symbol] = round(max(0.05, last + self.rng.choice((-0.01, 0.0, 0.01))), 2)
        size = self.rng.choice((100, 200, 500))
        self.volumes[symbol] = self.volumes.get(symbol, 0) + size
        return {"type": "trade", "symbol": symbol, "price": last, "size": size, "volume": self.volumes[symbol], "time": now}
