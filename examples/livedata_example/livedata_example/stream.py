"""The Example exchange's quote stream, on livedata's ``WebSocketStream``.

The base owns the socket: its reader, the request/reply matching, pings for heartbeats, closing. This class
speaks the protocol: login and subscriptions are requests answered by id, and trades and quotes are partial
updates merged per symbol in the instance's merge book (``ctx.quotes``), which outlives the connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from livedata_core import AuthError, BrokerError, SymbolsRefused
from livedata_core.plugin_kit.merge import MergeBook
from livedata_core.plugin_kit.websocket_stream import WebSocketStream

BROKER = "example"
# Which fields of each update type carry which quote field.
UPDATES = {"trade": {"price": "last", "size": "last_size", "volume": "volume"}, "quote": {"bid": "bid", "ask": "ask"}}


class ExampleStream(WebSocketStream):
    """One websocket connection to the Example exchange. The runner connects, subscribes, reads, closes."""

    name = "the Example exchange"
    heartbeat_timeout = 5.0
    ping_interval = 1.0  # the exchange sends no heartbeats: each pong is one

    def __init__(self, url: str, api_key: str, quotes: MergeBook) -> None:
        super().__init__(url.replace("http", "ws", 1) + "/stream")
        self._api_key = api_key  # never in a message or repr
        self._quotes = quotes
        self._symbols: set[str] = set()
        self._next_id = 0

    async def login(self) -> None:
        await self._call("login", key=self._api_key)

    async def subscribe(self, symbols: Sequence[str]) -> None:
        self._symbols.update(symbols)
        refused = (await self._call("subscribe", symbols=list(symbols))).get("refused") or []
        if refused:
            self._symbols.difference_update(refused)
            raise SymbolsRefused(f"the Example exchange does not list {', '.join(refused)}", refused)

    async def unsubscribe(self, symbols: Sequence[str]) -> None:
        self._symbols.difference_update(symbols)
        await self._call("unsubscribe", symbols=list(symbols))
        self._quotes.forget(symbols)

    async def _call(self, op: str, **fields: Any) -> dict:
        """One request; its reply carries the same id."""
        self._next_id += 1
        reply = await self.request({"id": self._next_id, "op": op, **fields}, key=self._next_id, what=op)
        if not reply.get("ok"):
            error = AuthError if op == "login" else BrokerError
            raise error(f"the Example exchange refused {op}: {reply.get('error')}")
        return reply

    def on_frame(self, raw: str | bytes) -> Any:
        frame = self.decode(raw)
        if not isinstance(frame, dict):
            return None
        if "id" in frame:
            self.resolve(frame["id"], frame)
            return None
        fields = UPDATES.get(frame.get("type"))
        symbol = frame.get("symbol")
        if fields is None or symbol not in self._symbols:
            self.stats.skip("unknown frame or symbol", frame)
            return None
        update = {name: frame[key] for key, name in fields.items() if key in frame}
        time = frame.get("time")
        return self._quotes.merge(symbol, update, timestamp=time if type(time) is int else None, stats=self.stats)
