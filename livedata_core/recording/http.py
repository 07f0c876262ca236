"""REST answers into the recording, and out of it in a replay: one httpx transport for every plugin.

A plugin builds its ``httpx.AsyncClient`` with ``transport=recorded_transport(...)``. The transport looks up,
per request, what the task it runs in is doing (a context variable the runner sets for each instance's tasks):

- nothing (the default, and every command but ``livedata run --record`` and ``livedata replay``): the request
  goes to the inner transport, at the cost of one context-variable read;
- recording: the answer is read, then handed to the instance's recorder (method, URL with secret query
  parameters masked, status, body; request headers and bodies, where credentials travel, never);
- replaying: the answer comes from the recording (:class:`RestReplay`), and nothing goes on the network.
"""

from __future__ import annotations

import contextvars
import time
from collections import defaultdict, deque
from typing import Any

import httpx

from .redaction import is_secret_key

__all__ = ["HTTP_RECORDING", "RestReplay", "RecordingTransport", "recorded_transport", "request_key"]

HTTP_RECORDING: contextvars.ContextVar[Any] = contextvars.ContextVar("livedata_http_recording", default=None)
"""The instance recorder (:class:`~livedata_core.recording.writer.InstanceRecorder`) or :class:`RestReplay` of the
task making a request; ``None``: neither."""


_TIME_PARAM_NAMES = frozenset({"from", "to", "start", "end", "since", "until", "period", "days"})
_TIME_PARAM_ENDINGS = ("time", "date", "timestamp")


def _is_time_param(name: str) -> bool:
    n = name.lower().replace("-", "").replace("_", "")
    return n in _TIME_PARAM_NAMES or n.endswith(_TIME_PARAM_ENDINGS)


def request_key(method: str, url: httpx.URL | str) -> tuple[Any, ...]:
    """What a REST answer is looked up by in a replay: the method, the path and the query parameters that name
    what is asked (``symbol``, ``conid``, ``accountId``, ``fields``...), in any order. Parameters of a time
    (``startDate``, ``fromEnteredTime``, ``period``...: names of :data:`_TIME_PARAM_NAMES` or ending in
    :data:`_TIME_PARAM_ENDINGS`) are left out, as a replay asks for its own times; secret ones (redacted in the
    recording, placeholders in a replay) too."""
    url = httpx.URL(url)
    params = sorted((k, v) for k, v in url.params.multi_items() if not _is_time_param(k) and not is_secret_key(k))
    return (method.upper(), url.path, tuple(params))


class RestReplay:
    """REST answers from a recording, by :func:`request_key` (method, path, the query parameters naming what is
    asked: two ``/pricehistory?symbol=`` of different symbols are never answered with each other's), each in the
    order recorded; when a key's answers run out, its last one is given again. A request the recording has no
    answer for gets HTTP 404 with ``{"error": "not in the recording"}`` and is counted (:attr:`missing`)."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self._answers: dict[tuple[Any, ...], deque[dict[str, Any]]] = defaultdict(deque)
        for r in records:
            self._answers[request_key(r["method"], r["url"])].append(r)
        self.served = 0
        self.missing = 0

    def answer(self, request: httpx.Request) -> httpx.Response:
        answers = self._answers.get(request_key(request.method, request.url))
        if not answers:
            self.missing += 1
            return httpx.Response(404, json={"error": "not in the recording"}, request=request)
        record = answers.popleft() if len(answers) > 1 else answers[0]
        self.served += 1
        body = record.get("body") or ""
        return httpx.Response(record["status"], content=body.encode(), request=request,
                              headers={"Content-Type": "application/json"} if body[:1] in ("{", "[") else None)  # fmt: skip


class RecordingTransport(httpx.AsyncBaseTransport):
    """Wraps a transport: records answers, or replays them, as :data:`HTTP_RECORDING` says (see the module)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        mode = HTTP_RECORDING.get()
        if mode is None:
            return await self.inner.handle_async_request(request)
        if type(mode) is RestReplay:
            return mode.answer(request)
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        try:
            mode.rest(request.method, str(request.url), response.status_code, body, time.time())
        except Exception:  # never a reason to fail a request
            pass
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def recorded_transport(inner: httpx.AsyncBaseTransport | None = None, **options: Any) -> RecordingTransport:
    """The transport for a plugin's ``httpx.AsyncClient(transport=...)``: ``inner`` (a test's), else an
    ``httpx.AsyncHTTPTransport(**options)`` (``verify=``, ``cert=``...: a client given a transport ignores its own
    TLS arguments, so they go here)."""
    return RecordingTransport(inner if inner is not None else httpx.AsyncHTTPTransport(**options))
