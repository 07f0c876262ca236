"""The REST client for the Client Portal gateway: paced requests, errors turned into livedata errors.

One ``httpx.AsyncClient`` per session keeps the gateway's cookies for the whole session. Nothing here logs
request or response bodies, cookies or the tickle ``session`` value.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import orjson

from livedata_core.errors import AuthError, BrokerError, RateLimited, StreamError
from livedata_core.plugin_kit.retry_after import parse_retry_after
from livedata_core.recording.http import recorded_transport
from livedata_core.redis_io.url import mask_url

from .pacing import ENDPOINT_INTERVALS, Pacer
from .settings import IbkrSettings, ssl_context

__all__ = ["IbkrClient"]

USER_AGENT = "livedata-ibkr/0.1"


class IbkrClient:
    """Paced JSON requests to the gateway's ``/v1/api``.

    Errors: transport failures raise :class:`StreamError` (the runner retries with backoff), HTTP 401 raises
    :class:`AuthError`, HTTP 429 is retried ``rate_limit_retries`` times and then raises
    :class:`RateLimited`, any other non-2xx raises :class:`BrokerError` with the status and the path.
    """

    def __init__(self, settings: IbkrSettings, log: logging.Logger | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.log = log or logging.getLogger("livedata.broker.ibkr")
        self.ssl = ssl_context(settings) if settings.base_url.startswith("https") else None
        self.pacer = Pacer(settings.max_requests_per_second, {**ENDPOINT_INTERVALS, **settings.pacing_overrides})
        self.requests = 0
        self.http = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/"),
            verify=self.ssl if self.ssl is not None else True,
            timeout=httpx.Timeout(settings.request_timeout, connect=settings.connect_timeout),
            headers={"User-Agent": USER_AGENT},
            # Its REST answers go into a recording (livedata run --record) and come back from one (livedata replay).
            transport=recorded_transport(transport, verify=self.ssl if self.ssl is not None else True),
        )

    def __repr__(self) -> str:
        return f"IbkrClient({self.settings.base_url!r})"

    async def close(self) -> None:
        await self.http.aclose()

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params=params or None)

    async def post(self, path: str, body: Any = None) -> Any:
        return await self.request("POST", path, json=body)

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None) -> Any:
        """Send one request under the pacer and return the decoded JSON (``None`` for an empty body)."""
        attempt = 0
        while True:
            await self.pacer.wait(method, path)
            self.requests += 1
            try:
                response = await self.http.request(method, path, params=params, json=json)
            except httpx.TimeoutException as exc:
                raise StreamError(f"IBKR gateway did not answer {method} {path} in time ({type(exc).__name__})") from None
            except httpx.TransportError as exc:
                raise StreamError(
                    f"IBKR gateway at {mask_url(self.settings.base_url)} is not reachable ({type(exc).__name__}: {exc}); "
                    "is the Client Portal gateway running?"
                ) from None
            status = response.status_code
            if status == 429:
                wait = parse_retry_after(response.headers.get("Retry-After")) or self.settings.rate_limit_backoff
                self.pacer.penalize(method, path, wait)
                if attempt < self.settings.rate_limit_retries:
                    attempt += 1
                    self.log.warning("IBKR rate limit on %s %s; retrying in %.1fs", method, path, wait)
                    continue
                raise RateLimited(f"IBKR gateway rate limit on {method} {path} (HTTP 429)", retry_after=wait)
            if status == 401:
                raise AuthError(f"IBKR gateway session is not authenticated (HTTP 401 on {method} {path})")
            if status == 403:
                raise BrokerError(
                    f"IBKR gateway refused {method} {path} (HTTP 403): check the gateway's ips.allow list in "
                    "conf.yaml and that the brokerage session is open"
                )
            if status >= 400:
                raise BrokerError(f"IBKR gateway error on {method} {path}: HTTP {status} {_error_text(response)}")
            if not response.content:
                return None
            try:
                return orjson.loads(response.content)
            except orjson.JSONDecodeError:
                raise BrokerError(f"IBKR gateway sent a body that is not JSON for {method} {path}") from None


def _error_text(response: httpx.Response) -> str:
    # Gateway errors look like {"error": "..."}; show only that short text, never a whole body.
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return ""
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"][:200]
    return ""
