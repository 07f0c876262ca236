"""What a broker is doing, as ``livedata status`` shows it."""

from __future__ import annotations

import time
from typing import Any

import attrs


@attrs.define
class BrokerStatus:
    """Live counters and state of one instance in the runner (``livedata status`` shows one row per instance).

    ``broker`` and ``plugin`` are the plugin's name (as in payloads), ``instance`` the ``[brokers.NAME]`` table's.
    """

    broker: str
    instance: str | None = None
    plugin: str | None = None
    state: str = "starting"
    connected_since: float | None = None
    messages: int = 0
    last_message_at: float | None = None
    last_heartbeat_at: float | None = None
    reconnects: int = 0
    auth_failures: int = 0
    """Times the broker refused the login (``AuthError``, ``LoginRequired``), seen by the stream or a poll."""
    resubscribes: int = 0
    """Symbols resubscribed because they were silent past ``stale_after`` while their market was open."""
    stale: dict[str, float] = attrs.field(factory=dict)
    """Subscribed symbols silent past ``stale_after`` while their market is open: symbol -> since when (the last
    update, or when watching began; seconds since the epoch). See :mod:`livedata_core.runner.ops.staleness`."""
    account_events: dict[str, int] = attrs.field(factory=dict)
    """Account events published, per type (``orders``...); quotes are ``messages`` less these and ``market_events``."""
    market_events: dict[str, int] = attrs.field(factory=dict)
    """Bars and order books published (``bars``, ``depth``); option quotes count as quotes."""
    last_error: str | None = None
    last_error_at: float | None = None
    polls: dict[str, int] = attrs.field(factory=dict)
    skipped: dict[str, int] = attrs.field(factory=dict)
    extra: dict[str, Any] = attrs.field(factory=dict)
    failed: dict[str, str] = attrs.field(factory=dict)
    """What stopped for good after a :class:`~livedata_core.errors.PermanentError` (``"stream"``,
    ``"fetch_orders(ACC-1)"``), with its message; the rest of the instance goes on."""

    def error(self, message: str) -> None:
        from ..logs import mask_secrets

        self.last_error = mask_secrets(message)  # shown by `livedata status` and stored in Redis
        self.last_error_at = time.time()

    def fail(self, what: str, message: str) -> None:
        """Record that ``what`` stopped for good, with why (also as the last error)."""
        from ..logs import mask_secrets

        self.error(f"{what} stopped: {message}")
        self.failed[what] = mask_secrets(message)

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)
