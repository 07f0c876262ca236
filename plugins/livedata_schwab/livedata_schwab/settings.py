"""Settings of the Schwab broker: the ``[brokers.schwab]`` table, every field defaulted.

The app key and secret come from ``LIVEDATA_SCHWAB_APP_KEY`` / ``LIVEDATA_SCHWAB_APP_SECRET`` unless given in
the table; they are masked in ``repr``. ``SchwabSettings()`` always constructs; livedata calls
:meth:`SchwabSettings.check_config` when it loads the ``[brokers.schwab]`` table, so a missing key or secret
stops ``livedata run`` before anything starts.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import attrs

from livedata_core.errors import ConfigError
from livedata_core.plugin_kit.limits import MAX_TIMEOUT, MAX_WAIT, between, seconds
from livedata_core.redis_io.url import mask_url
from livedata_core.plugin_kit.urls import refuse_plain_text_off_this_machine

__all__ = ["APP_KEY_ENV", "APP_SECRET_ENV", "SchwabSettings", "TRANSACTION_TYPES"]

APP_KEY_ENV = "LIVEDATA_SCHWAB_APP_KEY"
APP_SECRET_ENV = "LIVEDATA_SCHWAB_APP_SECRET"

TRANSACTION_TYPES = (
    "TRADE",
    "RECEIVE_AND_DELIVER",
    "DIVIDEND_OR_INTEREST",
    "ACH_RECEIPT",
    "ACH_DISBURSEMENT",
    "CASH_RECEIPT",
    "CASH_DISBURSEMENT",
    "ELECTRONIC_FUND",
    "WIRE_OUT",
    "WIRE_IN",
    "JOURNAL",
    "MEMORANDUM",
    "MARGIN_CALL",
    "MONEY_MARKET",
    "SMA_ADJUSTMENT",
)
"""Every transaction type the Trader API knows (its ``types`` query parameter is required)."""

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _masked(value: str | None) -> str:
    return "None" if not value else "'***'"


_timeout = seconds(0, MAX_TIMEOUT, min_exclusive=True)
_wait = seconds(0, MAX_WAIT)
_TOKEN_DAYS = "Schwab refuses a refresh token older than 7 days"


def _api_url(instance: object, attribute: attrs.Attribute, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{attribute.name} must be an https:// URL with a host, was {mask_url(value)!r}")
    refuse_plain_text_off_this_machine(attribute.name, value, carries="the app secret and the tokens",
                                       hint="(with ca_file for a TLS-inspecting proxy)")  # fmt: skip


def _https_loopback(instance: object, attribute: attrs.Attribute, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme != "https" or parts.hostname not in _LOOPBACK:
        raise ValueError(
            f"callback_url must be https on this machine (like https://127.0.0.1:8182) and match the callback "
            f"registered for your app at developer.schwab.com exactly; was {value!r}"
        )


def _known_types(instance: object, attribute: attrs.Attribute, value: list[str]) -> None:
    unknown = sorted(set(value) - set(TRANSACTION_TYPES))
    if unknown or not value:
        raise ValueError(f"transaction_types: unknown {unknown or 'empty list'}; known: {', '.join(TRANSACTION_TYPES)}")


@attrs.frozen(kw_only=True)
class SchwabSettings:
    """Everything the Schwab plugin can be told. Construct with no arguments for the defaults."""

    app_key: str | None = attrs.field(default=None, repr=_masked)
    """The app's key from developer.schwab.com; default ``$LIVEDATA_SCHWAB_APP_KEY``."""
    app_secret: str | None = attrs.field(default=None, repr=_masked)
    """The app's secret; default ``$LIVEDATA_SCHWAB_APP_SECRET``."""
    callback_url: str = attrs.field(default="https://127.0.0.1:8182", validator=_https_loopback)
    """Exactly the callback URL registered for the app (https, this machine, a port above 1024)."""
    api_base_url: str = attrs.field(default="https://api.schwabapi.com/trader/v1", validator=_api_url)
    """The Trader API; plain ``http://`` only to this machine (a test server)."""
    auth_base_url: str = attrs.field(default="https://api.schwabapi.com/v1/oauth", validator=_api_url)
    """The OAuth endpoints; plain ``http://`` only to this machine."""
    market_data_base_url: str | None = attrs.field(default=None, validator=attrs.validators.optional(_api_url))
    """The Market Data API (``/pricehistory``, ``/chains``); by default ``api_base_url`` with ``/trader/v1``
    replaced by ``/marketdata/v1`` (``https://api.schwabapi.com/marketdata/v1``)."""
    ca_file: str | None = None
    """A PEM file of extra certificate authorities to trust for the API (a TLS-inspecting proxy)."""
    requests_per_minute: float = attrs.field(default=120.0, validator=between(0, 60_000, min_exclusive=True))
    """Client-side limit on REST requests (Schwab allows about 120 a minute)."""
    request_timeout: float = attrs.field(default=15.0, validator=_timeout)
    """Seconds to wait for one HTTP request."""
    max_retries: int = attrs.field(default=3, validator=between(0, 20))
    """How often a request answered with 429, a 5xx or a network error is tried again."""
    retry_backoff: float = attrs.field(default=1.0, validator=_wait)
    """Seconds before the first retry when Schwab gives no Retry-After; doubles each time."""
    retry_backoff_max: float = attrs.field(default=30.0, validator=_wait)
    refresh_margin: float = attrs.field(default=300.0, validator=seconds(
        0, 1800, max_exclusive=True, reason="the access token lives 30 minutes"))
    """Refresh the 30-minute access token this many seconds before it expires."""
    refresh_401_backoff: float = attrs.field(default=60.0, validator=_wait)
    """After a token refresh did not cure a 401, requests answered 401 within this many seconds fail at once
    instead of refreshing again (a persistent 401 must not hammer the token endpoint)."""
    refresh_warn_days: float = attrs.field(default=5.0, validator=between(0, 7, unit="days", reason=_TOKEN_DAYS))
    """Warn (log and ``livedata status``) once the refresh token is this many days old."""
    refresh_max_days: float = attrs.field(default=7.0, validator=between(
        0, 7, min_exclusive=True, unit="days", reason=_TOKEN_DAYS))
    """Schwab rejects refresh tokens older than 7 days: past this age, ask for ``livedata auth schwab``."""
    login_timeout: float = attrs.field(default=300.0, validator=_timeout)
    """Seconds ``livedata auth schwab`` waits for the browser to come back to the callback URL."""
    open_browser: bool = True
    """Open the login page in a browser (otherwise only print its URL)."""
    account_cache_seconds: float = attrs.field(default=2.0, validator=_wait)
    """The positions and the balances poll share one ``GET /accounts/{hash}?fields=positions``: an answer
    younger than this is reused, so a positions and a balances poll cost one request. ``0`` asks every time."""
    orders_lookback_days: float = attrs.field(default=60.0, validator=between(
        0, 364, unit="days", reason="Schwab answers for at most a year of orders"))
    """Orders entered up to this many days ago are asked for on every poll, so status changes of older
    working orders (GTC) are seen too."""
    transaction_types: list[str] = attrs.field(factory=lambda: list(TRANSACTION_TYPES), validator=_known_types)

    @property
    def market_data_url(self) -> str:
        """The Market Data API's base URL (:attr:`market_data_base_url`, or the one beside the Trader API)."""
        if self.market_data_base_url:
            return self.market_data_base_url.rstrip("/")
        base = self.api_base_url.rstrip("/")
        if base.endswith("/trader/v1"):
            return base[: -len("/trader/v1")] + "/marketdata/v1"
        return base.rsplit("/", 2)[0] + "/marketdata/v1"

    def check_config(self) -> None:
        """Called by livedata once the ``[brokers.schwab]`` table is loaded: the app key and secret must be known.

        :raises ConfigError: one is missing; the message names the environment variables and the table keys.
        """
        self.credentials()

    def credentials(self) -> tuple[str, str]:
        """The app key and secret, from the settings or the environment.

        :raises ConfigError: one is missing; the message names the environment variable.
        """
        key = self.app_key or os.environ.get(APP_KEY_ENV, "").strip()
        secret = self.app_secret or os.environ.get(APP_SECRET_ENV, "").strip()
        missing = [(env, setting) for env, setting, value in ((APP_KEY_ENV, "app_key", key),
                                                              (APP_SECRET_ENV, "app_secret", secret)) if not value]
        if missing:
            what = "key and secret are" if len(missing) == 2 else f"{missing[0][1].split('_')[1]} is"
            raise ConfigError(
                f"Schwab app {what} missing: set {' and '.join(env for env, _ in missing)} to the "
                f"values shown for your app at developer.schwab.com, or {' and '.join(s for _, s in missing)} in "
                "[brokers.schwab]"
            )
        return key, secret
