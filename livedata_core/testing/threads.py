"""Run an asyncio server in a thread of its own, so sync fixtures and ``asyncio.run`` tests can share it."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["ServerThread"]


class ServerThread:
    """Host an asyncio server object on a private event loop in a background thread.

    The server needs ``async start()`` and ``async stop()``; ``drop()`` is forwarded when it has one.
    Every other attribute (``url``, ``received``, ...) is read from the server itself::

        with ServerThread(FrameServer(frames)) as server:
            settings = {"url": server.url}
            ...
            server.drop()            # safe to call from any thread or event loop

    A test's own ``asyncio.run(...)`` loop keeps running while the server serves from its thread, which is
    what a fixture that outlives one event loop needs.
    """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> "ServerThread":
        """Start the loop thread and the server on it; return once the server is listening."""
        ready = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

        self._thread = threading.Thread(target=run, name=f"livedata-{type(self.server).__name__}", daemon=True)
        self._thread.start()
        ready.wait(timeout)
        self.call(self.server.start, timeout=timeout)
        return self

    def call(self, func: Callable[..., Any], *args: Any, timeout: float = 10.0) -> Any:
        """Run ``func(*args)`` on the server's loop and return its result (awaited if it is a coroutine)."""
        if self.loop is None:
            raise RuntimeError("the server thread is not started")

        async def invoke() -> Any:
            result = func(*args)
            if inspect.isawaitable(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(invoke(), self.loop).result(timeout)

    def drop(self) -> None:
        """Cut every client connection (the server's ``drop()``)."""
        self.call(self.server.drop)

    def stop(self) -> None:
        """Stop the server, then the loop and its thread."""
        if self.loop is None:
            return
        try:
            self.call(self.server.stop)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            self.loop = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.server, name)

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
