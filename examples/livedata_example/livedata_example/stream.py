"""The Example exchange's quote stream: its websocket protocol spoken as a livedata ``BrokerStream``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from livedata_core import HEARTBEAT, AuthError, BrokerStream, Quote, StreamError, now_ms

BROKER = "example"


class ExampleStream(BrokerStream):
    """One websocket connection to the Example exchange. The runner connects, subscribes, reads, closes."""

    heartbeat_timeout = 5.0

    def __init__(self, url: str, api_key: str) -> None:
        super().__init__()
        self.url = url.replace("http", "ws", 1) + "/stream"
        self._api_key = api_key
        self._ws: Any = None

    def __repr__(self) -> str:
        return f"ExampleStream({self.url!r})"  # never the key

    async def connect(self) -> None:
        try:
            self._ws = await websockets.connect(self.url, open_timeout=5)
            await self._ws.send(json.dumps({"op": "login", "key": self._api_key}))
            reply = json.loads(await self._ws.recv())
        except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
            raise StreamError(f"cannot connect to {self.url}: {type(exc).__name__}: {exc}") from None
        if reply.get("type") != "ready":
            raise AuthError(f"the Example exchange refused the login: {reply.get('message')}")

    async def subscribe(self, symbols: Sequence[str]) -> None:
        await self._send({"op": "subscribe", "symbols": list(symbols)})

    async def unsubscribe(self, symbols: Sequence[str]) -> None:
        await self._send({"op": "unsubscribe", "symbols": list(symbols)})

    async def _send(self, message: dict) -> None:
        try:
            await self._ws.send(json.dumps(message))
        except ConnectionClosed as exc:
            raise StreamError(f"connection lost: {exc}") from None

    async def events(self) -> AsyncIterator[Any]:
        try:
            async for raw in self._ws:
                frame = json.loads(raw)
                if frame.get("type") == "quote":
                    quote = self._quote(frame)
                    if quote is not None:
                        yield quote
                elif frame.get("type") == "heartbeat":
                    yield HEARTBEAT
                else:
                    self.stats.skip("unknown frame", frame)
        except ConnectionClosed as exc:
            raise StreamError(f"connection lost: {exc}") from None

    def _quote(self, frame: dict) -> Quote | None:
        try:
            return Quote(
                broker=BROKER,
                symbol=frame["symbol"],
                bid=float(frame["bid"]),
                ask=float(frame["ask"]),
                last=float(frame["last"]),
                timestamp=int(frame["time"]),
                received_at=now_ms(),
            )
        except (KeyError, TypeError, ValueError):
            self.stats.skip("malformed quote", frame)
            return None

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
