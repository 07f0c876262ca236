"""A minimal pattern subscriber for latency measurements: a raw socket and hiredis, no client library.

redis-py spends tens of microseconds per message in Python; when a frame fans out into 50 messages, the
last one would wait half a millisecond for the subscriber itself, which is not the pipeline's latency.
This reads and parses replies in bulk and stamps each message with the time its bytes arrived.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import hiredis


def messages(port: int, pattern: str, timeout: float, ready: Callable[[], None] | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield ``(arrival time in microseconds, payload)`` for each message on ``pattern`` until ``timeout``."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    p = pattern.encode()
    sock.sendall(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$%d\r\n%b\r\n" % (len(p), p))
    reader = hiredis.Reader()
    deadline = time.monotonic() + timeout
    subscribed = False
    sock.settimeout(0.5)
    try:
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                return
            arrived = time.time_ns() // 1000
            reader.feed(chunk)
            while (reply := reader.gets()) is not False:
                if reply[0] == b"pmessage":
                    yield arrived, reply[3]
                elif reply[0] == b"psubscribe" and not subscribed:
                    subscribed = True
                    if ready is not None:
                        ready()
    finally:
        sock.close()
