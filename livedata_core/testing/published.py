"""Collect what livedata publishes on a Redis server, for assertions in tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis

from ..channels import parse_channel, pattern
from ..models import from_dict, model_for
from ..redis_io.subscriber import Message

__all__ = ["PublishedCollector"]


class PublishedCollector:
    """Subscribe to ``live_data:*`` on one Redis and keep every payload published there.

    A background thread reads the subscription, so the collector works both in plain test functions and while
    an event loop (a :class:`~livedata_core.runner.Runner`) runs in the test's thread. Payloads become
    :class:`~livedata_core.redis_io.subscriber.Message` objects whose ``data`` is a model (``Quote``, ``Order``, ...),
    or the plain dict when it does not fit the model.

    :param url: the Redis to listen to.
    :param prefix: the deployment prefix, if the publisher uses one.
    """

    def __init__(self, url: str, prefix: str = "") -> None:
        self.url = url
        self.prefix = prefix
        self.messages: list[Message] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: redis.Redis | None = None
        self._pubsub: Any = None

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self, timeout: float = 5.0) -> "PublishedCollector":
        """Subscribe and return once Redis has confirmed the subscription (nothing published after is missed)."""
        self._client = redis.Redis.from_url(self.url)
        self._pubsub = self._client.pubsub()
        self._pubsub.psubscribe(pattern("*", self.prefix))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self._pubsub.get_message(timeout=0.1)
            if message is not None and message["type"] == "psubscribe":
                break
        else:
            raise TimeoutError(f"Redis at {self.url} did not confirm the subscription within {timeout}s")
        self._thread = threading.Thread(target=self._read, name="livedata-published", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop listening and close the connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._pubsub is not None:
            self._pubsub.close()
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> "PublishedCollector":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self._pubsub.get_message(timeout=0.05)
            except (redis.ConnectionError, ValueError, OSError):
                return  # the server went away or the collector was closed
            if raw is None or raw.get("type") != "pmessage":
                continue
            message = self._decode(raw)
            if message is not None:
                with self._changed:
                    self.messages.append(message)
                    self._changed.notify_all()

    def _decode(self, raw: dict[str, Any]) -> Message | None:
        channel = raw["channel"].decode() if isinstance(raw["channel"], bytes) else raw["channel"]
        try:
            kind, identifier = parse_channel(channel, self.prefix)
        except ValueError:
            return None  # the control channel, not data
        data = orjson.loads(raw["data"])
        try:
            data = from_dict(model_for(kind, data), data)
        except Exception:
            pass  # keep the dict; a conformance check will say what is wrong with it
        return Message(kind, identifier, channel, data)

    # -- reading -------------------------------------------------------------------------------------------

    def of(self, kind: str, identifier: str | None = None) -> list[Any]:
        """The payloads (models) published so far on one type of channel, optionally for one identifier."""
        with self._changed:
            return [m.data for m in self.messages if m.kind == kind and (identifier is None or m.identifier == identifier)]

    quotes = property(lambda self: self.of("quotes"), doc="The quotes published so far.")
    positions = property(lambda self: self.of("positions"), doc="The positions published so far.")
    balances = property(lambda self: self.of("balances"), doc="The balances published so far.")
    orders = property(lambda self: self.of("orders"), doc="The orders published so far.")
    transactions = property(lambda self: self.of("transactions"), doc="The transactions published so far.")

    def clear(self) -> None:
        """Forget everything collected so far."""
        with self._changed:
            self.messages.clear()

    def _matching(
        self, kind: str | None, identifier: str | None, where: Callable[[Any], bool] | None, after: int
    ) -> list[Any]:
        out = []
        for m in list(self.messages[after:]):
            if kind is not None and m.kind != kind:
                continue
            if identifier is not None and m.identifier != identifier:
                continue
            if where is not None and not where(m.data):
                continue
            out.append(m.data)
        return out

    def _failure(self, kind: str | None, identifier: str | None, count: int, found: int, timeout: float) -> str:
        seen: dict[str, int] = {}
        for m in list(self.messages):
            seen[f"{m.kind}:{m.identifier}"] = seen.get(f"{m.kind}:{m.identifier}", 0) + 1
        what = f"{kind or '*'}:{identifier or '*'}"
        return (
            f"waited {timeout:g}s for {count} payload(s) on {what}, got {found}; "
            f"published so far: {seen or 'nothing'}"
        )

    def wait_for(
        self,
        kind: str | None = None,
        identifier: str | None = None,
        *,
        count: int = 1,
        where: Callable[[Any], bool] | None = None,
        after: int = 0,
        timeout: float = 5.0,
    ) -> list[Any]:
        """Block until ``count`` matching payloads were published and return them all.

        Do not call this from a coroutine whose event loop must keep running (use :meth:`wait_for_async`).

        :param kind: ``quotes``, ``positions``, ... (``None``: any).
        :param identifier: a symbol or account id (``None``: any).
        :param where: a further test on the payload, e.g. ``lambda q: q.bid is not None``.
        :param after: look only at messages from this index of :attr:`messages` on (``len(c.messages)``
            taken before an action: only what was published after it).
        :raises AssertionError: on timeout, listing what was published.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = self._matching(kind, identifier, where, after)
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(self._failure(kind, identifier, count, len(found), timeout))
                self._changed.wait(min(left, 0.1))

    async def wait_for_async(
        self,
        kind: str | None = None,
        identifier: str | None = None,
        *,
        count: int = 1,
        where: Callable[[Any], bool] | None = None,
        after: int = 0,
        timeout: float = 5.0,
    ) -> list[Any]:
        """:meth:`wait_for` for use inside a running event loop: it sleeps instead of blocking."""
        deadline = time.monotonic() + timeout
        while True:
            found = self._matching(kind, identifier, where, after)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(self._failure(kind, identifier, count, len(found), timeout))
            await asyncio.sleep(0.02)
