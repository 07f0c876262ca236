"""A minimal asyncio Redis connection that sends pre-encoded pipelines.

The publish hot path writes thousands of commands per batch. redis-py's pipeline builds each command in
Python and tops out near 95k PUBLISH/s on a 2-core machine; encoding RESP directly and parsing replies with
hiredis reaches several hundred thousand. Everything else (subscribing, control, tests) uses redis-py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import hiredis

from ...errors import PublishError
from ..url import RedisTarget, mask_url, tls_hint
from ...aio_tools import within

__all__ = ["RespConnection", "command"]


def command(*args: bytes) -> bytes:
    """One command in RESP form."""
    return b"*%d\r\n" % len(args) + b"".join([b"$%d\r\n%b\r\n" % (len(a), a) for a in args])


class RespConnection:
    """One connection; ``execute`` writes pre-encoded commands and returns their replies in order.

    Error replies come back as ``hiredis.ReplyError`` objects in the list, not raised; a broken connection
    raises :class:`~livedata_core.errors.PublishError`.
    """

    def __init__(self, target: RedisTarget, connect_timeout: float = 5.0) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = hiredis.Reader()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        t = self.target
        try:
            if t.unix_path:
                coro = asyncio.open_unix_connection(t.unix_path)
            else:
                ctx = t.tls_options.ssl_context() if t.tls else None
                coro = asyncio.open_connection(t.host, t.port, ssl=ctx)
            self._reader, self._writer = await within(coro, self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:  # OSError includes ssl.SSLError
            reason = str(exc) or type(exc).__name__
            hint = tls_hint(t.url, reason)
            raise PublishError(f"cannot connect to Redis at {mask_url(t.url)}: {reason}{hint}") from None
        self._parser = hiredis.Reader()
        hello: list[bytes] = []
        if t.password is not None:
            if t.username:
                hello.append(command(b"AUTH", t.username.encode(), t.password.encode()))
            else:
                hello.append(command(b"AUTH", t.password.encode()))
        if t.db:
            hello.append(command(b"SELECT", str(t.db).encode()))
        hello.append(command(b"CLIENT", b"SETNAME", b"livedata-publisher"))
        # PING last: a server that wants a password we lack (NOAUTH), is full (max clients) or is not Redis
        # at all fails here, not later on every published event.
        hello.append(command(b"PING"))
        try:
            replies = await within(self.execute(b"".join(hello), len(hello)), self.connect_timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise PublishError(f"Redis at {mask_url(t.url)} accepted the connection but did not answer") from None
        except PublishError as exc:
            await self.close()
            # With TLS 1.3 a server refuses a client certificate (or its absence) only after the handshake.
            raise PublishError(f"{exc}{tls_hint(t.url, str(exc))}") from None
        for index, reply in enumerate(replies):
            if isinstance(reply, hiredis.ReplyError) and index != len(replies) - 2:  # SETNAME may be refused by proxies
                await self.close()
                raise PublishError(f"Redis at {mask_url(t.url)} refused the connection: {reply}")

    async def execute(self, data: bytes, count: int) -> list:
        """Send ``data`` (``count`` commands) and return ``count`` replies."""
        await self.send(data)
        replies: list = []
        while len(replies) < count:
            replies.extend(await self.replies())
        return replies

    async def send(self, data: bytes) -> None:
        """Write pre-encoded commands without waiting for their replies (read them with :meth:`replies`)."""
        if self._writer is None:
            raise PublishError("not connected to Redis")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as exc:
            await self.close()
            raise PublishError(f"lost the connection to Redis at {mask_url(self.target.url)}: {exc}") from None

    def push_replies(self, on_replies: Callable[[list], None], on_lost: Callable[[PublishError], None]) -> None:
        """From now on hand the replies to ``on_replies`` as they arrive, in order, a list per read of the socket,
        from the event loop's read callback: no task wakes up and nothing is buffered twice. ``on_lost`` is called
        once when the connection ends (Redis closed it, it broke, or something that is not Redis answered).
        :meth:`replies` and :meth:`execute` are not for a connection in this mode."""
        if self._writer is None:
            raise PublishError("not connected to Redis")
        transport = self._writer.transport
        described = f"lost the connection to Redis at {mask_url(self.target.url)}"
        transport.set_protocol(_PushedReplies(transport, self._parser, on_replies, on_lost, described))

    async def replies(self) -> list:
        """Wait for the next replies that arrive (at least one) and return them in order."""
        if self._reader is None:
            raise PublishError("not connected to Redis")
        parser = self._parser
        out: list = []
        try:
            while not out:
                reply = parser.gets()
                while reply is not False:
                    out.append(reply)
                    reply = parser.gets()
                if out:
                    break
                chunk = await self._reader.read(262144)
                if not chunk:
                    raise ConnectionResetError("Redis closed the connection")
                parser.feed(chunk)
        except (OSError, hiredis.ProtocolError) as exc:  # ProtocolError: something that is not Redis answered
            await self.close()
            raise PublishError(f"lost the connection to Redis at {mask_url(self.target.url)}: {exc}") from None
        return out

    def abort(self) -> None:
        """Close the socket at once, dropping what is buffered and not yet sent (no FIN after pending data)."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.transport.abort()

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await within(writer.wait_closed(), 1.0)
            except (OSError, asyncio.TimeoutError):
                pass


class _PushedReplies(asyncio.Protocol):
    """Stands in for the stream's protocol once replies are pushed: parses what arrives and hands it over at once.
    Flow control and the end of the connection still reach the stream's own protocol, so that the writer's
    ``drain()`` and ``wait_closed()`` work as before."""

    def __init__(self, transport: Any, parser: Any, on_replies: Callable[[list], None],
                 on_lost: Callable[[PublishError], None], described: str) -> None:  # fmt: skip
        self._transport = transport
        self._inner = transport.get_protocol()
        self._parser = parser
        self._on_replies = on_replies
        self._on_lost = on_lost
        self._described = described
        self._ended = False

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        out: list = []
        try:
            parser.feed(data)
            reply = parser.gets()
            while reply is not False:
                out.append(reply)
                reply = parser.gets()
        except hiredis.ProtocolError as exc:  # something that is not Redis answered
            self._end(f"{self._described}: {exc}")
            self._transport.abort()
            return
        if out:
            self._on_replies(out)

    def eof_received(self) -> bool:
        self._end(f"{self._described}: Redis closed the connection")
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(f"{self._described}: {exc or 'Redis closed the connection'}")
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _end(self, reason: str) -> None:
        if not self._ended:
            self._ended = True
            self._on_lost(PublishError(reason))
