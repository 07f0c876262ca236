"""The error types of livedata.

Every error a broker plugin raises on purpose should be one of these, so the runner can decide what to do:
re-authenticate on :class:`AuthError`, back off on :class:`RateLimited` or :class:`ConnectionLimit`,
reconnect on :class:`StreamError`, stop asking on :class:`NotSupported` or :class:`PermanentError`. Messages
never contain secrets.
"""

from __future__ import annotations


class LivedataError(Exception):
    """Base class of every livedata error."""


class ConfigError(LivedataError):
    """Configuration is missing or wrong. The message names the key and what is wrong with it."""


class InvalidIdentifier(LivedataError, ValueError):
    """A channel identifier (symbol or account id) that would break or confuse subscribers."""


class PluginError(LivedataError):
    """A plugin failed to load or broke the plugin contract."""


class NotSupported(LivedataError):
    """The broker does not declare the capability that was asked for."""


class BrokerError(LivedataError):
    """The broker answered with an error that is not about authentication or rate limits."""


class SymbolsRefused(BrokerError):
    """The broker refused to subscribe some symbols (a symbol limit, an unknown symbol); the connection is fine.

    ``symbols`` lists the refused ones; the others of the same call were subscribed.
    """

    def __init__(self, message: str, symbols: list[str]) -> None:
        super().__init__(message)
        self.symbols = list(symbols)


class AuthError(BrokerError):
    """The broker rejected the credentials or token; the runner re-authenticates before trying again."""


class LoginRequired(AuthError):
    """A person must log in again (for example ``livedata auth schwab``); retrying alone will not help."""


class RateLimited(BrokerError):
    """The broker asked us to slow down. ``retry_after`` is in seconds when the broker said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StreamError(BrokerError):
    """A stream failed or was closed by the server; the runner reconnects with backoff.

    ``retry_after`` (seconds) makes the runner wait at least that long before the next attempt, for
    example when the broker says another streamer is already connected.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConnectionLimit(StreamError):
    """The broker refused the stream because another connection for this user is open.

    Give ``retry_after`` (seconds) when the broker says how long the other connection holds the slot, or what a
    person typically needs to close it: the runner waits at least that long (at most an hour) before connecting
    again, instead of its short backoff, so two streamers do not knock each other off in a loop.
    """


class PermanentError(BrokerError):
    """Retrying will not help until a person changes something: the login is not entitled to this data, the
    account is closed, the API key was revoked for good.

    The runner stops what raised it, and only that: a stream (or ``authenticate``) raising it stops the instance's
    stream, a ``fetch_*`` hook raising it stops polling that kind for that account. The rest of the instance and
    every other instance go on. ``livedata status`` shows the instance as ``failed`` (or lists what stopped) with
    this message, so say what is wrong and what the person can do about it. A restart tries again.
    """


class NotEntitled(PermanentError):
    """The login is not entitled to the data asked for (no market-data subscription for an exchange, no API
    access for the account)."""


class PublishError(LivedataError):
    """Redis could not be reached or refused a command."""
