"""Schwab OAuth tokens: the saved record, the token endpoint, and refreshing once for everyone.

Schwab access tokens live 30 minutes; the refresh token lives 7 days from the login that issued it and
refreshing does not extend it. Creating new tokens invalidates the old ones, so a refresh must happen once
even when many tasks (and several processes sharing one token store) notice the expiry together: an
``asyncio.Lock`` serialises this process, :func:`livedata_core.plugin_kit.tokens.token_lock` the others, and the store
is read again after taking each lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import attrs
import httpx

from livedata_core.errors import AuthError, BrokerError, LoginRequired, RateLimited
from livedata_core.plugin_kit.retry_after import parse_retry_after
from livedata_core.plugin_kit.tokens import TokenStore, token_lock

from .settings import SchwabSettings

__all__ = ["TOKEN_KEY", "TokenManager", "TokenRecord", "TokenRefused", "login_hint", "request_tokens"]

TOKEN_KEY = "schwab"
"""The token-store key of the instance named ``schwab``; every other instance saves under its own name."""
STATUS_KEY = "refresh_token"
DAY = 86400.0


def login_hint(key: str = TOKEN_KEY, first: bool = False) -> str:
    """What to run to log the instance whose tokens live under ``key`` in (its token key is its name)."""
    if first:
        return f"run `livedata auth {key}` to log in"  # nothing was ever saved: no "again"
    return f"run `livedata auth {key}` to log in again"



@attrs.frozen
class TokenRecord:
    """One Schwab login's tokens. Times are milliseconds since the epoch. Secrets are hidden from ``repr``."""

    access_token: str = attrs.field(repr=False)
    refresh_token: str = attrs.field(repr=False)
    access_expires_at: int
    refresh_issued_at: int | None
    """When the refresh token was issued (its login); ``None`` when the token store cannot keep it."""
    token_type: str = "Bearer"
    scope: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenRecord:
        """The record in ``data``; ``ValueError`` if a field is missing or of the wrong type."""
        try:
            return cls(
                access_token=_str(data["access_token"]),
                refresh_token=_str(data["refresh_token"]),
                access_expires_at=int(data["access_expires_at"]),
                refresh_issued_at=None if data.get("refresh_issued_at", 0) is None else int(data["refresh_issued_at"]),
                token_type=str(data.get("token_type") or "Bearer"),
                scope=data.get("scope"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"saved Schwab tokens are incomplete ({type(exc).__name__}: {exc.args[0]!r})") from None


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("empty token")
    return value


class TokenRefused(AuthError):
    """Schwab's token endpoint refused the grant. ``error`` is its OAuth error code (``invalid_grant``...)."""

    def __init__(self, message: str, status: int, error: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text[:300]


# Token endpoint answer (values shortened):
# {"expires_in":1800,"token_type":"Bearer","scope":"api","refresh_token":"1PIe...@",
#  "access_token":"I0.b2F1...@","id_token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9..."}
# Refused: HTTP 400 {"error":"invalid_client","error_description":"Unauthorized"}
#          HTTP 400 {"error":"unsupported_token_type","error_description":"400 Bad Request: ... refresh_token_authentication_error ..."}
async def request_tokens(
    http: httpx.AsyncClient,
    settings: SchwabSettings,
    form: dict[str, str],
    *,
    refresh_issued_at: int | None = None,
    now: float | None = None,
) -> TokenRecord:
    """POST ``form`` to the token endpoint with HTTP Basic client authentication and return the new record.

    :param refresh_issued_at: for a refresh, the issue time to keep (a refresh does not renew the refresh token's
        7 days; ``None`` stays unknown); a new login (any other grant) is issued now.
    :raises TokenRefused: Schwab refused the grant (4xx with an OAuth error).
    :raises RateLimited: 429. :raises BrokerError: a server or network failure (try again later).
    """
    key, secret = settings.credentials()
    secrets = [secret, form.get("code", ""), form.get("refresh_token", "")]
    url = settings.auth_base_url.rstrip("/") + "/token"
    try:
        response = await http.post(url, data=form, auth=(key, secret), headers={"Accept": "application/json"})
    except httpx.TimeoutException:
        raise BrokerError(f"Schwab's token endpoint {url} did not answer in time; try again") from None
    except httpx.TransportError as exc:
        raise BrokerError(f"could not reach Schwab's token endpoint {url}: {type(exc).__name__}") from None
    if response.status_code == 429:
        raise RateLimited("Schwab's token endpoint asked us to slow down (429)", parse_retry_after(response.headers.get("Retry-After")))
    if response.status_code >= 500:
        raise BrokerError(f"Schwab's token endpoint failed with HTTP {response.status_code}; try again later")
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
        error = body.get("error") if isinstance(body, dict) else None
        description = body.get("error_description") if isinstance(body, dict) else None
        detail = _scrub(f"{error or 'no error code'}: {description or response.text[:200]}", secrets)
        raise TokenRefused(f"Schwab refused the token request (HTTP {response.status_code}, {detail})", response.status_code, error)
    now = time.time() if now is None else now
    try:
        expires_in = float(body.get("expires_in") or 1800)
        return TokenRecord(
            access_token=_str(body["access_token"]),
            refresh_token=_str(body.get("refresh_token") or form.get("refresh_token")),
            access_expires_at=int((now + expires_in) * 1000),
            refresh_issued_at=refresh_issued_at if form.get("grant_type") == "refresh_token" else int(now * 1000),
            token_type=str(body.get("token_type") or "Bearer"),
            scope=body.get("scope"),
        )
    except (KeyError, TypeError, ValueError):
        raise BrokerError("Schwab's token endpoint answered 200 without usable tokens; try again") from None


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {rest // 60}m"


class TokenManager:
    """Hand out a valid access token, refreshing it once when it is about to expire.

    :param status: a dict to put a ``refresh_token`` line in for ``livedata status`` (``ctx.status``).
    :param key: the token-store key of this login (``ctx.token_key``: the instance's name).
    """

    def __init__(
        self,
        settings: SchwabSettings,
        store: TokenStore,
        http: httpx.AsyncClient,
        log: logging.Logger,
        status: dict[str, Any] | None = None,
        clock=time.time,
        key: str = TOKEN_KEY,
    ) -> None:
        self.settings = settings
        self.store = store
        self.key = key
        self.hint = login_hint(key)
        self.http = http
        self.log = log
        self.status = status if status is not None else {}
        self.clock = clock
        self.refresh_count = 0
        self._record: TokenRecord | None = None
        self._lock = asyncio.Lock()
        self._warned_at = 0.0

    def __repr__(self) -> str:
        return f"TokenManager(store={self.store!r}, key={self.key!r})"

    def load(self) -> TokenRecord:
        """The record in the store (read again every time).

        :raises LoginRequired: there is none, or it is unreadable.
        """
        data = self.store.load(self.key)
        if data is None:
            first = login_hint(self.key, first=True)
            self.status[STATUS_KEY] = f"none saved: {first}"
            raise LoginRequired(f"no Schwab tokens saved yet: {first}")
        try:
            record = TokenRecord.from_dict(data)
        except ValueError as exc:
            raise LoginRequired(f"{exc}: {self.hint}") from None
        self._record = record
        return record

    def _fresh(self, record: TokenRecord) -> bool:
        return record.access_expires_at / 1000 - self.clock() > self.settings.refresh_margin

    def check_refresh_age(self, record: TokenRecord) -> None:
        """Record how long the refresh token has left; warn from ``refresh_warn_days``.

        :raises LoginRequired: it is older than ``refresh_max_days``.
        """
        if record.refresh_issued_at is None:
            self.status[STATUS_KEY] = (
                f"issue time unknown (the token store keeps none); Schwab refuses the refresh token "
                f"{self.settings.refresh_max_days:g} days after its login"
            )
            return
        now = self.clock()
        age = now - record.refresh_issued_at / 1000
        left = self.settings.refresh_max_days * DAY - age
        until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(record.refresh_issued_at / 1000 + self.settings.refresh_max_days * DAY))
        self.status["refresh_token_expires_at"] = record.refresh_issued_at / 1000 + self.settings.refresh_max_days * DAY
        if left <= 0:
            self.status[STATUS_KEY] = f"expired at {until}: {self.hint}"
            raise LoginRequired(f"the Schwab refresh token expired at {until} (they last 7 days): {self.hint}")
        if age >= self.settings.refresh_warn_days * DAY:
            self.status[STATUS_KEY] = f"expires in {_duration(left)} ({until}): {self.hint} before then"
            if now - self._warned_at >= 3600:
                self._warned_at = now
                self.log.warning("Schwab refresh token expires in %s (%s): %s before then", _duration(left), until, self.hint)
        else:
            self.status[STATUS_KEY] = f"valid for {_duration(left)} (until {until})"

    async def access_token(self) -> str:
        """A valid access token, refreshed first if it expires within ``refresh_margin`` seconds."""
        record = self._record or self.load()
        if self._fresh(record):
            try:
                self.check_refresh_age(record)
            except LoginRequired:
                record = self.load()  # `livedata auth <instance>` may have saved a new login meanwhile
                if not self._fresh(record):
                    return await self._refresh(stale=record.access_token, forced=False)
                self.check_refresh_age(record)
            return record.access_token
        return await self._refresh(stale=record.access_token, forced=False)

    async def refresh(self, stale: str | None = None) -> str:
        """Refresh now, unless someone else already replaced ``stale`` (default: the current token)."""
        if stale is None:
            stale = (self._record or self.load()).access_token
        return await self._refresh(stale=stale, forced=True)

    def _already_replaced(self, record: TokenRecord, stale: str, forced: bool) -> bool:
        if not self._fresh(record):
            return False
        return record.access_token != stale or not forced

    async def _refresh(self, stale: str, forced: bool) -> str:
        async with self._lock:
            record = self.load()  # another task or process may have refreshed while we waited
            if self._already_replaced(record, stale, forced):
                self.check_refresh_age(record)
                return record.access_token
            lock = token_lock(self.store, self.key)
            await _acquire_in_thread(lock)
            try:
                record = self.load()
                if self._already_replaced(record, stale, forced):
                    self.check_refresh_age(record)
                    return record.access_token
                self.check_refresh_age(record)
                self.log.debug("refreshing the Schwab access token")
                try:
                    new = await request_tokens(
                        self.http,
                        self.settings,
                        {"grant_type": "refresh_token", "refresh_token": record.refresh_token},
                        refresh_issued_at=record.refresh_issued_at,
                        now=self.clock(),
                    )
                except TokenRefused as exc:
                    self.status[STATUS_KEY] = f"refused by Schwab: {self.hint}"
                    raise LoginRequired(
                        f"{exc}. The refresh token is no longer valid (expired, or replaced by a newer login "
                        f"elsewhere): {self.hint}"
                    ) from None
                self.store.save(self.key, new.to_dict())
                self._record = new
                self.refresh_count += 1
                self.log.info("refreshed the Schwab access token; valid for %d s", (new.access_expires_at / 1000 - self.clock()))
                self.check_refresh_age(new)
                return new.access_token
            finally:
                lock.release()


async def _acquire_in_thread(lock: Any, timeout: float = 60.0) -> None:
    """Take a blocking cross-process lock without blocking the event loop; never leak it on cancellation."""
    task = asyncio.ensure_future(asyncio.to_thread(lock.acquire, timeout))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(lambda t: lock.release() if not t.cancelled() and t.exception() is None else None)
        raise
    except TimeoutError:
        raise BrokerError("another process has been refreshing the Schwab tokens for 60 s; try again") from None
