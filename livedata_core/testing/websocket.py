"""A local websocket server that replays recorded broker frames, to test a plugin's stream against."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import Callable, Iterable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

__all__ = ["FrameServer"]

Frame = Any
"""A frame to send: ``str`` (text), ``bytes`` (binary), or anything else, sent as JSON text."""


def encode_frame(frame: Frame) -> str | bytes:
    """The websocket message for ``frame``: strings and bytes as they are, anything else as JSON."""
    if isinstance(frame, (str, bytes)):
        return frame
    return json.dumps(frame)


class FrameServer:
    """A websocket server on 127.0.0.1 (a free port) that plays a list of frames to every client.

    Use it in a coroutine (``async with FrameServer(frames) as server:``) or, from fixtures and sync tests,
    in its own thread: ``with ServerThread(FrameServer(frames)) as server:``.

    :param frames: what to send to each client after it connects, in order.
    :param on_message: called with every message a client sends (``str`` or ``bytes``); may be async. What it
        returns (``None``, a frame or a list of frames) is sent back to that client. Use it to answer logins
        and subscriptions the way the broker does.
    :param interval: seconds to wait before each frame.
    :param repeat: play the frames again and again until the client goes.
    :param wait_for_message: start playing only after the client's first message (for example its login).
    :param close_after: close the connection (code 1000) once the frames are played.
    """

    def __init__(
        self,
        frames: Iterable[Frame] = (),
        *,
        on_message: Callable[[str | bytes], Any] | None = None,
        interval: float = 0.0,
        repeat: bool = False,
        wait_for_message: bool = False,
        close_after: bool = False,
    ) -> None:
        self.frames = list(frames)
        self.on_message = on_message
        self.interval = interval
        self.repeat = repeat
        self.wait_for_message = wait_for_message
        self.close_after = close_after
        self.received: list[str | bytes] = []
        self.connections_total = 0
        self.clients: set[ServerConnection] = set()
        self.port = 0
        self._server: Server | None = None

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT``; any path is accepted."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def received_json(self) -> list[Any]:
        """The client messages that were JSON, decoded."""
        out = []
        for message in self.received:
            with contextlib.suppress(ValueError):
                out.append(json.loads(message))
        return out

    async def start(self) -> "FrameServer":
        self._server = await serve(self._handle, "127.0.0.1", 0)
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def drop(self) -> None:
        """Cut every open connection at once, without a close handshake, as a network failure would."""
        for connection in list(self.clients):
            connection.transport.abort()

    async def send(self, frame: Frame) -> None:
        """Send one frame to every connected client now."""
        for connection in list(self.clients):
            with contextlib.suppress(ConnectionClosed):
                await connection.send(encode_frame(frame))

    async def wait_for_clients(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until ``count`` connections were accepted since the server started."""
        async with asyncio.timeout(timeout):
            while self.connections_total < count:
                await asyncio.sleep(0.01)

    async def __aenter__(self) -> "FrameServer":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, connection: ServerConnection) -> None:
        self.connections_total += 1
        self.clients.add(connection)
        first_message = asyncio.Event()
        reader = asyncio.create_task(self._read(connection, first_message))
        try:
            if self.wait_for_message:
                await first_message.wait()
            await self._play(connection)
            if self.close_after:
                await connection.close()
            await connection.wait_closed()
        except ConnectionClosed:
            pass
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self.clients.discard(connection)

    async def _play(self, connection: ServerConnection) -> None:
        while True:
            for frame in self.frames:
                if self.interval:
                    await asyncio.sleep(self.interval)
                await connection.send(encode_frame(frame))
            if not self.repeat or not self.frames:
                return

    async def _read(self, connection: ServerConnection, first_message: asyncio.Event) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in connection:
                self.received.append(message)
                first_message.set()
                if self.on_message is None:
                    continue
                reply = self.on_message(message)
                if inspect.isawaitable(reply):
                    reply = await reply
                if reply is None:
                    continue
                for frame in reply if isinstance(reply, list) else [reply]:
                    await connection.send(encode_frame(frame))
