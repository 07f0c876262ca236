"""The ``[brokers.ibkr]`` settings and the TLS context they imply."""

from __future__ import annotations

import ipaddress
import ssl
from urllib.parse import urlsplit, urlunsplit

import attrs
from attrs import validators as v

from livedata_core.errors import ConfigError
from livedata_core.redis_url import mask_url

__all__ = ["IbkrSettings", "is_loopback_host", "ssl_context"]

_positive = v.gt(0)

#: The gateway ends a market-data subscription after 10 minutes; ``renew_interval`` must be shorter.
SMD_LIFETIME = 600.0


def _below_smd_lifetime(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not value < SMD_LIFETIME:
        raise ValueError(
            f"{attribute.name} must be below {SMD_LIFETIME:g} seconds (the gateway ends a quote subscription "
            f"after 10 minutes, and it is renewed only every {attribute.name}), was {value:g}"
        )


@attrs.frozen
class IbkrSettings:
    """Settings of the Interactive Brokers plugin (Client Portal Web API through the local gateway).

    Every attribute is a key of the ``[brokers.ibkr]`` TOML table; ``docs/brokers/ibkr.md`` describes them.
    """

    base_url: str = "https://localhost:5000/v1/api"
    #: ``wss://.../v1/api/ws`` derived from ``base_url`` when empty.
    ws_url: str = ""
    #: PEM file of the CA (or the gateway's own certificate) to verify the gateway against.
    ca_bundle: str = ""
    #: Accept the gateway's self-signed certificate without verification. Only for a loopback host.
    allow_self_signed: bool = False
    connect_timeout: float = attrs.field(default=5.0, validator=_positive)
    request_timeout: float = attrs.field(default=15.0, validator=_positive)
    #: Client-side pacing: requests per second across all endpoints (the gateway allows 10).
    max_requests_per_second: float = attrs.field(default=8.0, validator=_positive)
    #: How often to retry a request answered with HTTP 429 before raising ``RateLimited``.
    rate_limit_retries: int = attrs.field(default=2, validator=v.ge(0))
    #: Seconds to wait after a 429 when the gateway gives no Retry-After.
    rate_limit_backoff: float = attrs.field(default=5.0, validator=v.ge(0))
    #: Per-endpoint pacing overrides, seconds between requests, keyed like ``"GET /iserver/account/orders"``.
    pacing_overrides: dict[str, float] = attrs.field(factory=dict)
    #: When another session (TWS, mobile, web) holds this username's brokerage session, take it over
    #: (``ssodh/init`` with ``compete: true``, which logs that session out). Off: report ``LoginRequired``.
    compete: bool = False
    #: Seconds to wait for the brokerage session after ``/iserver/auth/ssodh/init``.
    login_wait: float = attrs.field(default=5.0, validator=v.ge(0))
    #: Seconds ``livedata auth ibkr`` waits for you to log in through the gateway's browser page.
    browser_login_timeout: float = attrs.field(default=300.0, validator=_positive)
    #: Invalidate the gateway's positions cache before each positions fetch (one extra request).
    invalidate_positions: bool = True
    #: Seconds between ``/tickle`` keep-alives (the session times out after ~6 minutes without requests).
    tickle_interval: float = attrs.field(default=60.0, validator=_positive)
    #: Seconds between re-sends of every ``smd`` subscription (the gateway ends them after 10 minutes).
    renew_interval: float = attrs.field(default=540.0, validator=[_positive, _below_smd_lifetime])
    #: Seconds between ``ech+hb`` frames sent to keep the websocket open.
    echo_interval: float = attrs.field(default=50.0, validator=_positive)
    #: Seconds without any frame (the gateway sends ``system`` heartbeats every 10 s) before reconnecting.
    heartbeat_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: Seconds to wait for ``sts`` authenticated after opening the websocket.
    ws_auth_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Security type used when resolving a plain symbol to a conid.
    default_sec_type: str = "STK"
    #: Subscribe to live order updates (``sor``) on the websocket.
    stream_orders: bool = True

    def __attrs_post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"base_url must be an http(s) URL with a host, was {mask_url(self.base_url)!r}")
        if self.ws_url:
            ws = urlsplit(self.ws_url)
            if ws.scheme not in ("ws", "wss") or not ws.hostname:
                raise ConfigError(f"ws_url must be a ws(s) URL with a host, was {mask_url(self.ws_url)!r}")
        for key, url, plain in (("base_url", self.base_url, "http"), ("ws_url", self.ws_url, "ws")):
            parts = urlsplit(url)
            if url and parts.scheme == plain and not is_loopback_host(parts.hostname or ""):
                raise ConfigError(
                    f"{key} {mask_url(url)!r} is unencrypted {plain}:// to {parts.hostname}, which would send the "
                    f"gateway session across the network in clear text; use {plain}s:// (with ca_bundle for the "
                    f"gateway's certificate), or {plain}:// only for a gateway on this machine (localhost, "
                    "127.0.0.1, ::1)"
                )
        if self.allow_self_signed and not self._all_loopback():
            raise ConfigError(
                "allow_self_signed is only allowed for a gateway on this machine (localhost, "
                "127.0.0.1, ::1); for a remote gateway give its certificate with brokers.ibkr.ca_bundle"
            )
        if self.allow_self_signed and self.ca_bundle:
            raise ConfigError("brokers.ibkr: set either ca_bundle or allow_self_signed, not both")

    def _all_loopback(self) -> bool:
        hosts = [urlsplit(self.base_url).hostname]
        if self.ws_url:
            hosts.append(urlsplit(self.ws_url).hostname)
        return all(is_loopback_host(h or "") for h in hosts)

    @property
    def websocket_url(self) -> str:
        """The websocket URL: ``ws_url``, or ``base_url`` with ``wss``/``ws`` and ``/ws`` appended."""
        if self.ws_url:
            return self.ws_url
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", "", ""))


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names this machine: ``localhost`` or a loopback address."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ssl_context(settings: IbkrSettings) -> ssl.SSLContext:
    """The TLS context for REST and websocket: verify against ``ca_bundle`` or the system store, or (opt-in,
    loopback only) accept the gateway's self-signed certificate."""
    if settings.allow_self_signed:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    try:
        return ssl.create_default_context(cafile=settings.ca_bundle or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"brokers.ibkr.ca_bundle {settings.ca_bundle!r} could not be read: {exc}") from None
