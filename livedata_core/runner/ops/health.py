"""The opt-in HTTP server of a runner: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``.

It runs on the runner's event loop (so it reads the runner's state between two steps of the publish path, never in
the middle of one) and answers ``GET`` (and ``HEAD``) only:

``/healthz``
    200 while the process runs and Redis answers a ``PING`` within :data:`PROBE_TIMEOUT` seconds, else 503.
``/readyz``
    200 when, besides that, every instance does its job: an instance that streams is ``streaming``, one that only
    polls is ``polling``; none is in ``login_required``, none has given something up for good (``failed``) and no
    subscribed symbol is stale while its market is open (:mod:`livedata_core.runner.ops.staleness`); with ``[ha]``,
    it holds the lease (a standby is healthy, not ready). Else 503.
``/metrics``
    The Prometheus text format (:mod:`livedata_core.runner.ops.metrics`).

Both health answers are JSON: ``{"status": "ok" | "unavailable", "reasons": [...], ...}``, each reason a sentence
naming the instance, what is wrong, and the last error where there is one (secrets masked).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ...aio_tools import within
from ...errors import ConfigError
from ...logs import mask_secrets
from .metrics import RunnerMetrics

__all__ = ["PROBE_TIMEOUT", "OpsServer", "health_reasons", "readiness_reasons"]

log = logging.getLogger("livedata.runner.ops")

PROBE_TIMEOUT = 1.0
"""Seconds Redis has to answer the health probe's ``PING``."""
REQUEST_TIMEOUT = 5.0
MAX_HEADER_LINES = 100
MAX_STALE_NAMED = 10
PATHS = ("/metrics", "/healthz", "/readyz")
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request", 503: "Service Unavailable"}


async def probe_redis(runner: Any) -> str | None:
    """``None`` if Redis answers ``PING`` in time, else what went wrong (masked)."""
    try:
        await within(runner.control.redis.ping(), PROBE_TIMEOUT)
        return None
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        return f"no answer to PING within {PROBE_TIMEOUT:g}s"
    except Exception as exc:
        return mask_secrets(f"{type(exc).__name__}: {exc}")


def health_reasons(redis_problem: str | None) -> list[str]:
    """Why the process is not healthy (empty: it is)."""
    return [] if redis_problem is None else [f"redis unreachable: {redis_problem}"]


def readiness_reasons(runner: Any, status: dict[str, Any], redis_problem: str | None) -> list[str]:
    """Why the runner is not ready (empty: it is): see the module docstring."""
    reasons = health_reasons(redis_problem)
    ha = getattr(runner, "ha", None)
    if ha is not None and ha.role != "leader":  # a hot standby is healthy, and not ready until it leads
        reasons.append(f"{ha.role}: {ha.leader or 'another runner'} holds the lease (epoch {ha.leader_epoch})")
        return reasons  # its instances have not started: nothing more to say about them
    now = status.get("now") or 0.0
    for name, b in status["brokers"].items():
        rt = runner.runtimes[name]
        streams = rt.broker.has("stream")
        polls = bool(runner.pollers[name].kinds())
        state = b["state"]
        error = f" (last error: {b['last_error']})" if b.get("last_error") else ""
        if state == "login_required":
            reasons.append(f"{name}: login required{error}")
        elif streams and state != "streaming":
            reasons.append(f"{name}: not streaming, {state}{error}")
        elif not streams and polls and state != "polling":
            reasons.append(f"{name}: not polling yet, {state}{error}")
        for what, why in sorted((b.get("failed") or {}).items()):
            reasons.append(f"{name}: {what} stopped for good: {why}")
        stale = b.get("stale") or {}
        if stale:
            named = ", ".join(f"{symbol} (silent {max(0.0, now - since):.0f}s)"
                              for symbol, since in sorted(stale.items())[:MAX_STALE_NAMED])  # fmt: skip
            more = f" and {len(stale) - MAX_STALE_NAMED} more" if len(stale) > MAX_STALE_NAMED else ""
            reasons.append(f"{name}: {len(stale)} stale symbol{'s' if len(stale) != 1 else ''} while the market is "
                           f"open: {named}{more}")  # fmt: skip
    return reasons


class OpsServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` for one runner on ``host:port`` (``port`` 0: a free one;
    :attr:`port` is the one bound after :meth:`start`)."""

    def __init__(self, runner: Any, host: str, port: int) -> None:
        self.runner = runner
        self.host = host
        self.port = port
        self.metrics = RunnerMetrics(runner)
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Listen, and start sampling the publish latency.

        :raises ConfigError: the address cannot be listened on (in use, not this machine's), naming ``[metrics]``.
        """
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            raise ConfigError(f"metrics: cannot listen on {self.host}:{self.port} ([metrics] host and port, or "
                              f"--metrics-port): {exc.strerror or exc}") from None  # fmt: skip
        self.port = self._server.sockets[0].getsockname()[1]
        self.metrics.start()
        log.info("metrics and health on %s (/metrics, /healthz, /readyz)", self.url)

    async def close(self) -> None:
        await self.metrics.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await within(self._server.wait_closed(), 1.0)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                method, path = await within(self._read_request(reader), REQUEST_TIMEOUT)
            except (TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                await self._send(writer, "GET", 400, {"error": "bad request"})
                return
            if path not in PATHS:
                await self._send(writer, method, 404, {"error": f"no such path {path[:64]!r}", "paths": list(PATHS)})
                return
            if method not in ("GET", "HEAD"):
                await self._send(writer, method, 405, {"error": f"{method[:16]} is not allowed; use GET"})
                return
            await self._answer(writer, method, path)
        except (ConnectionError, OSError):
            pass  # the client went away
        except Exception:
            log.exception("the metrics/health server failed to answer")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await within(writer.wait_closed(), 1.0)

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str]:
        line = (await reader.readline()).decode("latin-1").split()
        if len(line) != 3 or not line[2].startswith("HTTP/"):
            raise ValueError("not an HTTP request line")
        for _ in range(MAX_HEADER_LINES):
            if (await reader.readline()) in (b"\r\n", b"\n", b""):
                return line[0].upper(), line[1].split("?", 1)[0]
        raise ValueError("too many header lines")

    async def _answer(self, writer: asyncio.StreamWriter, method: str, path: str) -> None:
        problem = await probe_redis(self.runner)
        if path == "/metrics":
            self.metrics.collector.redis_up = problem is None
            await self._send(writer, method, 200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST)
            return
        status = self.runner.status()
        if path == "/healthz":
            reasons = health_reasons(problem)
            body = {"redis": "reachable" if problem is None else "unreachable"}
        else:
            reasons = readiness_reasons(self.runner, status, problem)
            body = {"brokers": {name: b["state"] for name, b in status["brokers"].items()},
                    "stale": {name: sorted(b.get("stale") or ()) for name, b in status["brokers"].items() if b.get("stale")}}  # fmt: skip
        answer = {"status": "unavailable" if reasons else "ok", "reasons": reasons, **body}
        await self._send(writer, method, 503 if reasons else 200, answer)

    async def _send(self, writer: asyncio.StreamWriter, method: str, code: int, body: Any,
                    content_type: str = "application/json") -> None:  # fmt: skip
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        head = (f"HTTP/1.1 {code} {_REASONS[code]}\r\nContent-Type: {content_type}\r\nContent-Length: {len(data)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n")  # fmt: skip
        writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else data))
        await writer.drain()
