"""The ``[brokers.tos]`` settings. Every field has a default, so ``TosSettings()`` always constructs.

The streamer logs in with a Schwab login. ``schwab = "<instance>"`` in the table names the Schwab instance whose
login it uses (core removes that string and links the instance: ``ctx.login``); without it, the instance named
``schwab`` is used when configured. Only when no Schwab instance is linked does ``schwab`` hold this broker's own
Schwab app settings (``[brokers.tos.schwab]``, or the ``LIVEDATA_SCHWAB_APP_KEY`` / ``LIVEDATA_SCHWAB_APP_SECRET``
environment), with the tokens under the key ``schwab`` (``livedata auth tos`` or ``livedata auth schwab``).
"""

from __future__ import annotations

import attrs
from livedata_schwab.settings import SchwabSettings

from livedata_core.errors import ConfigError
from livedata_core.plugin_kit.limits import MAX_TIMEOUT, MAX_WAIT, between, seconds
from livedata_core.redis_io.url import mask_url
from livedata_core.plugin_kit.urls import refuse_plain_text_off_this_machine

__all__ = ["TosSettings"]

_timeout = seconds(0, MAX_TIMEOUT, min_exclusive=True)


def _ws_url(instance: object, attribute: attrs.Attribute, value: str | None) -> None:
    if value is None:
        return
    if not value.startswith(("ws://", "wss://")):
        raise ValueError(f"streamer_url must start with ws:// or wss://, was {mask_url(value)!r}")
    refuse_plain_text_off_this_machine(attribute.name, value, carries="the access token")


@attrs.frozen(kw_only=True)
class TosSettings:
    """Settings of the thinkorswim streamer broker."""

    schwab: SchwabSettings = attrs.field(factory=SchwabSettings)
    """The Schwab app whose login the streamer uses when no Schwab instance is linked (tokens under the key
    ``schwab``)."""
    streamer_url: str | None = attrs.field(default=None, validator=_ws_url, repr=lambda v: repr(v and mask_url(v)))
    """Connect here instead of ``streamerInfo.streamerSocketUrl`` (tests, proxies)."""
    account_activity: bool = True
    """Subscribe to ACCT_ACTIVITY and publish order events on ``orders:{account}``."""
    login_timeout: float = attrs.field(default=10.0, validator=_timeout)
    """Seconds to wait for the answer to LOGIN."""
    command_timeout: float = attrs.field(default=10.0, validator=_timeout)
    """Seconds to wait for the answer to SUBS/ADD/UNSUBS (LOGOUT waits at most 0.8 s); unanswered, the connection is re-made."""
    open_timeout: float = attrs.field(default=10.0, validator=_timeout)
    """Seconds to open the websocket."""
    heartbeat_timeout: float = attrs.field(default=60.0, validator=_timeout)
    """Seconds without data or heartbeat after which the runner reconnects."""
    connection_limit_retry: float = attrs.field(default=60.0, validator=seconds(0, MAX_WAIT, min_exclusive=True))
    """Seconds to wait before trying again when another streamer holds the one connection Schwab allows."""
    max_keys_per_command: int = attrs.field(default=300, validator=between(
        1, 500, reason="the streamer holds about 500 keys per service"))
    """Symbols per ADD/UNSUBS request."""
    nyse_book: list[str] = attrs.field(factory=list)
    """Equities whose depth comes from NYSE_BOOK; the others' comes from NASDAQ_BOOK (options': OPTIONS_BOOK)."""

    def check_config(self, login: object = None) -> None:
        """Called by livedata once the ``[brokers.tos]`` table is loaded: the Schwab app key and secret the
        streamer's login refreshes with must be known (``[brokers.tos.schwab]`` or the environment). An instance
        linked to a Schwab instance (``login``, that instance's context) uses that instance's settings, checked there.

        :raises ConfigError: one is missing; the message names the environment variables and the table keys.
        """
        if login is not None:
            return
        try:
            self.schwab.check_config()
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("[brokers.schwab]", "[brokers.tos.schwab]")) from None
