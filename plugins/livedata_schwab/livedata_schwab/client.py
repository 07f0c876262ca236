"""The Schwab Trader REST client: bearer tokens, a rate limit, retries, and account-number hashes.

Other plugins (the thinkorswim streamer) use :class:`SchwabClient` for ``access_token``, ``refresh`` and
``user_preference``; this plugin's hooks use the account methods.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any

import httpx

from livedata_core.errors import AuthError, BrokerError, ConfigError, RateLimited
from livedata_core.plugin_kit.retry_after import parse_retry_after
from livedata_core.recording.http import recorded_transport
from livedata_core.plugin_kit.tokens import TokenStore

from .ratelimit import RateLimiter
from .settings import SchwabSettings
from .tokens import TOKEN_KEY, TokenManager

__all__ = ["SchwabClient", "iso_ms", "parse_retry_after"]


def _as_list(data: Any, endpoint: str) -> list[Any]:
    # An empty body means none; anything else that is not a list is an answer we cannot read, and must not be
    # taken for "no orders" (that would stop polling an account, or hide its orders, without a word).
    if data is None or data == "":
        return []
    if not isinstance(data, list):
        raise BrokerError(f"Schwab {endpoint} answered with {type(data).__name__} instead of a list")
    return data


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as Schwab's required ``yyyy-MM-dd'T'HH:mm:ss.SSSZ`` (UTC, literal ``Z``)."""
    seconds, millis = divmod(int(ms), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _verify(settings: SchwabSettings) -> ssl.SSLContext | bool:
    if not settings.ca_file:
        return True
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[brokers.schwab] ca_file {settings.ca_file!r} cannot be loaded: {exc}") from None
    return context


def make_http(settings: SchwabSettings) -> httpx.AsyncClient:
    """The HTTP client for Schwab: timeouts from the settings, the extra CA file if given."""
    verify = _verify(settings)
    # recorded_transport: its REST answers go into a recording (livedata run --record) and come back from one.
    return httpx.AsyncClient(timeout=settings.request_timeout, verify=verify, follow_redirects=False,
                             transport=recorded_transport(verify=verify))


class SchwabClient:
    """An authenticated client for the Schwab Trader API.

    :param settings: the plugin's settings (``SchwabSettings()`` for the defaults).
    :param tokens: the store holding the Schwab tokens under ``token_key``.
    :param status: a dict for ``livedata status`` lines (``ctx.status``).
    :param token_key: the key of this login's tokens in ``tokens``: the instance's ``ctx.token_key`` (its name;
        ``"schwab"`` for the instance named ``schwab``).
    """

    def __init__(
        self,
        settings: SchwabSettings,
        tokens: TokenStore,
        log: logging.Logger | None = None,
        *,
        status: dict[str, Any] | None = None,
        token_key: str = TOKEN_KEY,
    ) -> None:
        self.settings = settings
        self.log = log or logging.getLogger(f"livedata.broker.{token_key}")
        self.http = make_http(settings)
        self.tokens = TokenManager(settings, tokens, self.http, self.log, status, key=token_key)
        self.limiter = RateLimiter(settings.requests_per_minute)
        self._hashes: dict[str, str] | None = None
        self._hash_lock = asyncio.Lock()
        self.requests = 0
        self._refresh_failed_at: float | None = None  # monotonic time a 401-forced refresh did not help
        self._account_cache: dict[str, tuple[float, dict]] = {}  # account number: (monotonic time asked, answer)
        self._account_locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"SchwabClient(api={self.settings.api_base_url!r}, token_key={self.tokens.key!r})"

    # -- tokens ------------------------------------------------------------------------------------------------

    async def access_token(self) -> str:
        """A valid access token, refreshed first if it expires soon."""
        return await self.tokens.access_token()

    async def refresh(self) -> str:
        """Force a refresh now (for example: the streamer denied our login). Concurrent calls refresh once."""
        return await self.tokens.refresh()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self.http.aclose()

    # -- requests ----------------------------------------------------------------------------------------------

    async def get(self, path: str, params: dict[str, Any] | None = None, *, base: str | None = None) -> Any:
        """GET ``{api_base_url}{path}`` (or ``{base}{path}``) and return the decoded JSON.

        Waits for the rate limiter; retries 429 (honouring ``Retry-After``), 5xx and network errors with
        backoff up to ``max_retries`` times; on 401 refreshes the token and tries once more, unless Schwab says
        "Client not authorized" (the app lacks an API product: no token helps) or a 401-forced refresh failed
        to help less than ``refresh_401_backoff`` seconds ago.

        :raises AuthError: 401 "Client not authorized", still 401 after a refresh, or 401 while refreshing is
            backed off. :raises LoginRequired: the refresh token is gone.
        :raises RateLimited: still 429 after the retries. :raises BrokerError: any other failure.
        """
        url = (base or self.settings.api_base_url).rstrip("/") + path
        refreshed = False
        attempt = 0
        while True:
            token = await self.access_token()
            await self.limiter.acquire()
            self.requests += 1
            try:
                response = await self.http.get(url, params=params, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
            except httpx.TransportError as exc:
                what = "timed out" if isinstance(exc, httpx.TimeoutException) else f"failed ({type(exc).__name__})"
                if attempt < self.settings.max_retries:
                    attempt += 1
                    delay = self._backoff(attempt)
                    self.log.warning("GET %s %s; retry %d in %.1f s", path, what, attempt, delay)
                    await asyncio.sleep(delay)
                    continue
                raise BrokerError(f"Schwab GET {path} {what} after {attempt + 1} tries") from None
            status = response.status_code
            if status == 200:
                try:
                    return response.json()
                except ValueError:
                    raise BrokerError(f"Schwab GET {path} answered 200 with a body that is not JSON") from None
            if status == 401:
                message = _message(response)
                if _client_not_authorized(response):
                    # The app lacks an API product (or is not approved yet): a new token cannot help, and
                    # refreshing on every poll would only hammer the token endpoint.
                    raise AuthError(
                        f"Schwab refused GET {path} with 401 ({message}): the app is not allowed to use this API. "
                        f"{APP_ADVICE}. livedata does not refresh the token for this error; it tries again at the "
                        "next poll"
                    )
                if refreshed:
                    self._refresh_failed_at = time.monotonic()
                    raise AuthError(
                        f"Schwab refused GET {path} with 401 even after a token refresh ({message}). {APP_ADVICE}, "
                        f"or {self.tokens.hint}"
                    )
                blocked = self._refresh_blocked_for()
                if blocked > 0:
                    # A refresh a moment ago did not cure a 401: do not refresh again on every request. Only
                    # pick up a token another process may have saved meanwhile.
                    current = self.tokens.load().access_token
                    if current != token:
                        refreshed = True
                        continue
                    raise AuthError(
                        f"Schwab refused GET {path} with 401 ({message}); a token refresh "
                        f"{self.settings.refresh_401_backoff - blocked:.0f} s ago did not help, so the next one "
                        f"waits {blocked:.0f} s (refresh_401_backoff). {APP_ADVICE}, or {self.tokens.hint}"
                    )
                self.log.info("GET %s: 401, refreshing the access token and trying once more", path)
                refreshed = True
                await self.tokens.refresh(stale=token)
                continue
            if status == 429 or status >= 500:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                if attempt < self.settings.max_retries:
                    attempt += 1
                    delay = retry_after if retry_after is not None else self._backoff(attempt)
                    self.log.warning("GET %s: HTTP %d; retry %d in %.1f s", path, status, attempt, delay)
                    await asyncio.sleep(delay)
                    continue
                if status == 429:
                    raise RateLimited(f"Schwab GET {path}: rate limited (429) after {attempt + 1} tries", retry_after)
                raise BrokerError(f"Schwab GET {path}: HTTP {status} after {attempt + 1} tries ({_message(response)})")
            message = _message(response)
            if status in (400, 404) and "/accounts/" in path and "account" in message.lower():
                # "Invalid account number": the cached hash went stale (Schwab re-issues them); map afresh next time.
                self._hashes = None
            raise BrokerError(f"Schwab GET {path}: HTTP {status} ({message})")

    def _refresh_blocked_for(self) -> float:
        """Seconds until a 401 may force a token refresh again (0: now), after one that did not help."""
        if self._refresh_failed_at is None:
            return 0.0
        return max(0.0, self._refresh_failed_at + self.settings.refresh_401_backoff - time.monotonic())

    def _backoff(self, attempt: int) -> float:
        return min(self.settings.retry_backoff_max, self.settings.retry_backoff * 2 ** (attempt - 1))

    # -- endpoints ---------------------------------------------------------------------------------------------

    async def user_preference(self) -> dict:
        """Raw JSON of ``GET /userPreference`` (accounts, ``streamerInfo``, offers)."""
        data = await self.get("/userPreference")
        if not isinstance(data, dict):
            raise BrokerError("Schwab /userPreference answered with something other than an object")
        return data

    async def account_hashes(self, refresh: bool = False) -> dict[str, str]:
        """Plain account number to Schwab's hash value (the only form accepted in URLs), cached."""
        async with self._hash_lock:
            if self._hashes is None or refresh:
                from .parsers import parse_account_hashes

                self._hashes = parse_account_hashes(await self.get("/accounts/accountNumbers"), self.log)
            return dict(self._hashes)

    async def account_hash(self, account_number: str) -> str:
        """The hash for ``account_number``; asks Schwab again once if it is not cached (a new account).

        :raises ConfigError: this login has no such account.
        """
        hashes = await self.account_hashes()
        if account_number not in hashes:
            hashes = await self.account_hashes(refresh=True)
        try:
            return hashes[account_number]
        except KeyError:
            known = ", ".join(sorted(hashes)) or "none"
            raise ConfigError(f"Schwab account {account_number!r} is not visible to this login; accounts: {known}") from None

    async def accounts(self, positions: bool = False) -> list[Any]:
        """Raw ``GET /accounts`` (every account, with positions if asked)."""
        data = await self.get("/accounts", {"fields": "positions"} if positions else None)
        return _as_list(data, "/accounts")

    async def account(self, account_number: str, positions: bool = False) -> dict:
        """Raw ``GET /accounts/{hash}`` for one account."""
        hash_value = await self.account_hash(account_number)
        data = await self.get(f"/accounts/{hash_value}", {"fields": "positions"} if positions else None)
        if not isinstance(data, dict):
            raise BrokerError("Schwab /accounts/{hash} answered with something other than an object")
        return data

    async def account_snapshot(self, account_number: str) -> dict:
        """``GET /accounts/{hash}?fields=positions`` (balances and positions), shared by the positions and the
        balances poll: an answer asked for less than ``account_cache_seconds`` ago is reused, and concurrent
        callers wait for one request. Failures are not cached."""
        lock = self._account_locks.setdefault(account_number, asyncio.Lock())
        async with lock:
            max_age = self.settings.account_cache_seconds
            cached = self._account_cache.get(account_number)
            if cached is not None and max_age > 0 and time.monotonic() - cached[0] < max_age:
                return cached[1]
            asked = time.monotonic()
            data = await self.account(account_number, positions=True)
            self._account_cache[account_number] = (asked, data)
            return data

    async def orders(self, account_number: str, from_ms: int, to_ms: int) -> list[Any]:
        """Raw ``GET /accounts/{hash}/orders`` for orders entered between two times."""
        hash_value = await self.account_hash(account_number)
        params = {"fromEnteredTime": iso_ms(from_ms), "toEnteredTime": iso_ms(to_ms), "maxResults": 3000}
        data = await self.get(f"/accounts/{hash_value}/orders", params)
        return _as_list(data, "/accounts/{hash}/orders")

    async def transactions(self, account_number: str, start_ms: int, end_ms: int, types: list[str]) -> list[Any]:
        """Raw ``GET /accounts/{hash}/transactions`` between two times, of the given types."""
        hash_value = await self.account_hash(account_number)
        params = {"startDate": iso_ms(start_ms), "endDate": iso_ms(end_ms), "types": ",".join(types)}
        data = await self.get(f"/accounts/{hash_value}/transactions", params)
        return _as_list(data, "/accounts/{hash}/transactions")

    # -- market data ---------------------------------------------------------------------------------------

    async def price_history(self, symbol: str, start_ms: int, end_ms: int, *, extended_hours: bool = True) -> dict:
        """Raw ``GET /marketdata/v1/pricehistory`` of 1-minute candles between two times in ms
        (``frequencyType=minute``, ``frequency=1``, ``startDate``/``endDate`` in ms since the epoch)."""
        params = {"symbol": symbol, "periodType": "day", "frequencyType": "minute", "frequency": 1,
                  "startDate": int(start_ms), "endDate": int(end_ms),
                  "needExtendedHoursData": "true" if extended_hours else "false"}  # fmt: skip
        data = await self.get("/pricehistory", params, base=self.settings.market_data_url)
        if not isinstance(data, dict):
            raise BrokerError("Schwab /pricehistory answered with something other than an object")
        return data

    async def option_chain(self, symbol: str, *, from_date: str | None = None, to_date: str | None = None,
                           strike_count: int | None = None) -> dict:  # fmt: skip
        """Raw ``GET /marketdata/v1/chains`` of one underlying (``contractType=ALL``; expirations between
        ``fromDate`` and ``toDate``, ``yyyy-MM-dd``; ``strikeCount`` strikes around the money)."""
        params: dict[str, Any] = {"symbol": symbol, "contractType": "ALL"}
        if from_date:
            params["fromDate"] = from_date
        if to_date:
            params["toDate"] = to_date
        if strike_count:
            params["strikeCount"] = int(strike_count)
        data = await self.get("/chains", params, base=self.settings.market_data_url)
        if not isinstance(data, dict):
            raise BrokerError("Schwab /chains answered with something other than an object")
        return data


APP_ADVICE = (
    "Check that your app at developer.schwab.com has both API products 'Accounts and Trading Production' and "
    "'Market Data Production' and that its status is 'Ready For Use'"
)


def _client_not_authorized(response: httpx.Response) -> bool:
    """Schwab's 401 for an app without the API product (not an expired token): "Client not authorized"."""
    return "client not authorized" in response.text.lower()


def _message(response: httpx.Response) -> str:
    # Schwab errors look like {"message":"Invalid account number","errors":["..."]}; never echo headers.
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or "no details"
    if isinstance(body, dict):
        parts = [str(body.get("message") or body.get("error") or "")]
        errors = body.get("errors")
        if isinstance(errors, list):
            parts += [str(e)[:200] for e in errors[:3]]
        text = "; ".join(p for p in parts if p)
        return text[:300] or "no details"
    return str(body)[:200]
