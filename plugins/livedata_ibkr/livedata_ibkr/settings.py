"""The ``[brokers.ibkr]`` settings and the TLS context they imply."""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit, urlunsplit

import attrs

from livedata_core.errors import ConfigError
from livedata_core.plugin_kit.limits import MAX_TIMEOUT, MAX_WAIT, between, each_value, seconds
from livedata_core.redis_io.url import mask_url
from livedata_core.plugin_kit.urls import is_loopback_host, refuse_plain_text_off_this_machine

__all__ = ["IbkrSettings", "is_loopback_host", "ssl_context"]

_timeout = seconds(0, MAX_TIMEOUT, min_exclusive=True)

#: The gateway ends a market-data subscription after 10 minutes; ``renew_interval`` must be shorter.
SMD_LIFETIME = 600.0


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
    connect_timeout: float = attrs.field(default=5.0, validator=_timeout)
    request_timeout: float = attrs.field(default=15.0, validator=_timeout)
    #: Client-side pacing: requests per second across all endpoints (the gateway allows 10).
    max_requests_per_second: float = attrs.field(default=8.0, validator=between(0, 1000, min_exclusive=True))
    #: How often to retry a request answered with HTTP 429 before raising ``RateLimited``.
    rate_limit_retries: int = attrs.field(default=2, validator=between(0, 20))
    #: Seconds to wait after a 429 when the gateway gives no Retry-After.
    rate_limit_backoff: float = attrs.field(default=5.0, validator=seconds(0, MAX_WAIT))
    #: Per-endpoint pacing overrides, seconds between requests, keyed like ``"GET /iserver/account/orders"``.
    pacing_overrides: dict[str, float] = attrs.field(factory=dict, validator=each_value(seconds(0, MAX_WAIT)))
    #: When another session (TWS, mobile, web) holds this username's brokerage session, take it over
    #: (``ssodh/init`` with ``compete: true``, which logs that session out). Off: report ``LoginRequired``.
    compete: bool = False
    #: Seconds to wait for the brokerage session after ``/iserver/auth/ssodh/init``.
    login_wait: float = attrs.field(default=5.0, validator=seconds(0, MAX_TIMEOUT))
    #: Seconds ``livedata auth ibkr`` waits for you to log in through the gateway's browser page.
    browser_login_timeout: float = attrs.field(default=300.0, validator=_timeout)
    #: Invalidate the gateway's positions cache before each positions fetch (one extra request).
    invalidate_positions: bool = True
    #: Seconds between ``/tickle`` keep-alives (the session times out after ~6 minutes without requests).
    tickle_interval: float = attrs.field(default=60.0, validator=seconds(
        0, 300, min_exclusive=True, reason="the gateway ends a session after about 6 minutes without a request"))
    #: Seconds between re-sends of every ``smd`` subscription (the gateway ends them after 10 minutes).
    renew_interval: float = attrs.field(default=540.0, validator=seconds(
        0, SMD_LIFETIME, min_exclusive=True, max_exclusive=True,
        reason="the gateway ends a quote subscription after 10 minutes, and it is renewed only every renew_interval"))
    #: Seconds between ``ech+hb`` frames sent to keep the websocket open.
    echo_interval: float = attrs.field(default=50.0, validator=seconds(
        0, 60, min_exclusive=True, reason="the gateway wants an echo at least once a minute"))
    #: Seconds without any frame (the gateway sends ``system`` heartbeats every 10 s) before reconnecting.
    heartbeat_timeout: float = attrs.field(default=30.0, validator=_timeout)
    #: Seconds to wait for ``sts`` authenticated after opening the websocket.
    ws_auth_timeout: float = attrs.field(default=10.0, validator=_timeout)
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
        for key, url in (("base_url", self.base_url), ("ws_url", self.ws_url)):
            refuse_plain_text_off_this_machine(
                key, url, carries="the gateway session", hint="(with ca_bundle for the gateway's certificate)"
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
