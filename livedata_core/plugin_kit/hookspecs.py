"""The hooks a broker plugin implements.

A broker plugin is a module (or object) registered through the ``livedata`` entry-point group. It marks its
functions with :data:`livedata_core.hookimpl`. Each plugin is one broker: it implements :func:`broker_info`
to say its name and capabilities, and the hooks for those capabilities. Implementations may be ``async``.

pluggy calls a hook on every plugin at once and has no async hooks, so broker hooks are never called through
``pm.hook``: core looks up the one implementation that belongs to the broker it is driving
(:meth:`livedata_core.plugin_kit.broker.Broker.call`) and awaits it if it returns an awaitable. A broker that did not
declare a capability is never asked for it: core raises :class:`~livedata_core.errors.NotSupported`.
pluggy still does the checking: an implementation whose name matches no spec, or whose arguments are not
among the spec's, is reported when the plugin loads and the plugin is skipped.

Like every pluggy spec, an implementation may take fewer arguments than the spec names.

Application hooks (:func:`token_store`) are ordinary pluggy hooks called across all plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, TypeVar

import pluggy

if TYPE_CHECKING:
    from .broker import BrokerContext, BrokerInfo
    from ..models import Account, Balance, Bar, Order, Position, Transaction
    from .streaming import BrokerStream
    from .token_stores import TokenStore

PROJECT = "livedata"
_F = TypeVar("_F", bound=Callable[..., Any])

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl: Callable[[_F], _F] = pluggy.HookimplMarker(PROJECT)  # type: ignore[assignment]


# -- Broker identity ---------------------------------------------------------------------------------------


@hookspec
def broker_info() -> BrokerInfo:
    """Declare this plugin's broker: its name, capabilities and settings class.

    Called once when the plugin loads. Every broker plugin must implement it.

    :return: a :class:`~livedata_core.plugin_kit.broker.BrokerInfo`.
    """


@hookspec
def normalize_symbol(symbol: str) -> str:
    """Turn a user's symbol into the form the broker streams, or refuse it.

    Called for every symbol from configuration and from ``livedata subscribe`` before it reaches
    :meth:`BrokerStream.subscribe`. Optional: without it, symbols are only checked for channel safety.

    :param symbol: the symbol as the user typed it.
    :return: the normalised symbol (for example upper-cased); it is also the channel identifier.
    :raises InvalidIdentifier: the symbol can never be valid for this broker.
    """


# -- Session -----------------------------------------------------------------------------------------------


@hookspec
def authenticate(ctx: BrokerContext) -> None:
    """Make the broker session usable: load and refresh tokens, check the gateway, build HTTP clients.

    Called by the runner before the first fetch or stream, and again whenever a hook raised
    :class:`~livedata_core.errors.AuthError`. Put whatever the other hooks need in ``ctx.session``.
    Capability: ``authenticate``.

    :param ctx: this broker's context (settings, token store, logger, session).
    :raises LoginRequired: a person must log in again; the message says how.
    :raises AuthError: the credentials were rejected.
    """


@hookspec
def login(ctx: BrokerContext, manual: bool) -> None:
    """Log a person in interactively and save the tokens in ``ctx.tokens``.

    Called by ``livedata auth BROKER``. Capability: ``login``.

    :param ctx: this broker's context.
    :param manual: ``True`` when the user asked for ``--manual``: print the URL and read the pasted answer
        from standard input instead of opening a browser or serving a callback.
    """


@hookspec
def shutdown(ctx: BrokerContext) -> None:
    """Release what :func:`authenticate` opened (HTTP clients, sessions). Called once when the runner stops.

    Optional and always allowed; it must not raise.
    """


# -- Streaming ---------------------------------------------------------------------------------------------


@hookspec
def stream(ctx: BrokerContext) -> BrokerStream:
    """Create a new, unconnected stream for this broker.

    Called by the runner after :func:`authenticate`, and again for every reconnect, so each connection starts
    from a fresh object. The runner connects it, subscribes every wanted symbol, reads its events, and closes
    it; reconnecting with backoff, the heartbeat watchdog and resubscribing are the runner's job.
    Capability: ``stream``.

    :return: a :class:`~livedata_core.plugin_kit.streaming.BrokerStream`.
    """


@hookspec
def replay_stream(ctx: BrokerContext) -> BrokerStream:
    """Create a stream like :func:`stream` does, for replaying a recording (``livedata replay``): without a
    session, tokens or the network, since a recording holds none of them.

    Core opens it on the recording instead of a socket (for a
    :class:`~livedata_core.plugin_kit.websocket_stream.WebSocketStream`, through its ``opener``) and drives it as the
    runner does: ``connect()`` (its login sends what it sends; the recorded answers come back), ``subscribe()``,
    ``events()``, ``close()``. REST calls its clients make are answered from the recording when they are built
    with :func:`livedata_core.recording.http.recorded_transport`. Optional: without it, an instance of this
    plugin cannot be replayed. See docs/recording.md.
    """


@hookspec
def redact_recording(kind: str, text: str) -> str:
    """Take out of a recorded frame or REST answer the secrets core's redaction does not know of, and return it.

    Core has already replaced the values of keys that name secrets (``Authorization``, ``token``, ``session``,
    ``cookie``, ``apiKey``...) in JSON and ``key=value`` text. Called in the recorder's thread for every record,
    so it must be quick and touch nothing shared. Optional.

    :param kind: ``"in"`` or ``"out"`` (a websocket frame) or ``"rest"`` (a response body).
    :param text: the record's text after core's redaction.
    """


# -- Market data -----------------------------------------------------------------------------------------


@hookspec
def fetch_bars(ctx: BrokerContext, symbol: str, interval: int, start: int, end: int) -> list[Bar]:
    """Return the completed bars of one symbol in a time range, from the broker's history. Capability:
    ``fetch_bars``.

    Called by the runner's bar gap filler (:mod:`livedata_core.runner.bars`) when minutes are missing: after a
    reconnect or an outage, or when a live bar's start jumps past the last one published plus ``interval``. The
    runner publishes what it returns with ``backfilled=True``, drops what it published already, and records in
    status the minutes still missing: never invent a bar the broker does not have.

    :param symbol: the normalised symbol, as subscribed with ``kind="bars"``.
    :param interval: the bar length in seconds (60).
    :param start: milliseconds since the epoch, inclusive (the start of the first missing bar).
    :param end: milliseconds since the epoch, exclusive.
    :return: :class:`~livedata_core.models.Bar` objects ordered by ``start``.
    """


@hookspec
def option_chain(ctx: BrokerContext, underlying: str, expiration: str | None, strikes: int | None) -> list[str]:
    """Return the option contracts of an underlying, as the symbols the stream takes. Capability: ``option_chain``.

    Called by ``livedata subscribe NAME --chain AAPL [--expiration 2026-12-18] [--strikes 10]``; the runner
    subscribes the contracts as quotes and shows the chain in status.

    :param underlying: the normalised underlying symbol.
    :param expiration: an ISO date (``"2026-12-18"``), or ``None`` for every expiration the broker returns.
    :param strikes: how many strikes around the money, or ``None`` for the broker's default.
    :return: the contract symbols (Schwab's form, e.g. ``"AAPL  261218C00200000"``).
    :raises SymbolsRefused: the broker does not know ``underlying`` (or has no options on it); the message says so.
    """


# -- Account data ------------------------------------------------------------------------------------------


@hookspec
def fetch_accounts(ctx: BrokerContext) -> list[Account]:
    """Return the accounts this login can see. Capability: ``fetch_accounts``.

    Called at start when no accounts are configured, and by ``livedata accounts BROKER``.
    """


@hookspec
def fetch_positions(ctx: BrokerContext, account_id: str) -> list[Position]:
    """Return every open position of one account. Capability: ``fetch_positions``.

    Called on the configured interval; the runner publishes only positions that changed since the last call
    (the first call is compared with the account's book in Redis),
    and a position that disappeared once with quantity 0.

    :param account_id: the account number as the user knows it (never a broker-internal hash).
    """


@hookspec
def fetch_balances(ctx: BrokerContext, account_id: str) -> list[Balance]:
    """Return the balances of one account, one per currency. Capability: ``fetch_balances``.

    Called on the configured interval; the runner publishes a balance only when it changed.
    """


@hookspec
def fetch_orders(ctx: BrokerContext, account_id: str, since: int) -> list[Order]:
    """Return the orders of one account entered or changed since a time. Capability: ``fetch_orders``.

    Called on the configured interval. The runner publishes each new order state exactly once (keyed by
    account, order id, status, ``broker_status``, event id, filled quantity, quantity and prices), so
    returning an order again is harmless, also when the broker's stream reported it already or an earlier
    run published it.

    :param since: milliseconds since the epoch: a day before the previous successful poll (first poll: before
        the runner started, or before the last event an earlier run published if that is older, but never more than
        31 days back). The
        broker may return more than asked, never less.
    """


@hookspec
def fetch_transactions(ctx: BrokerContext, account_id: str, since: int) -> list[Transaction]:
    """Return the transactions of one account since a time. Capability: ``fetch_transactions``.

    Called on the configured interval. The runner publishes each transaction id exactly once.

    :param since: milliseconds since the epoch: a day before the previous successful poll (first poll: before
        the runner started, or before the last event an earlier run published if that is older, but never more than
        31 days back). The
        broker may return more than asked, never less.
    """


# -- Application hooks -------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def token_store(broker: str, instance: str, plugin: str) -> TokenStore | None:
    """Supply the token store for one instance, for applications that keep tokens themselves (Thor's database).

    Called across all plugins, once per instance (``[brokers.NAME]`` table); the first non-``None`` answer wins.
    With no answer, core uses its default store (keyring, or a 0600 file where no keyring backend exists). An
    implementation may take any of the arguments (pluggy passes only those it names).

    :param broker: the instance's name, which is also the key its tokens are saved under (``"schwab_ira"``; in a
        one-instance setup the plugin's name, as before instances existed).
    :param instance: the same instance name, by its own name: map it to one of the application's users.
    :param plugin: the plugin the instance runs (``"schwab"``).
    """


BROKER_HOOKS = (
    "normalize_symbol",
    "authenticate",
    "login",
    "shutdown",
    "stream",
    "replay_stream",
    "redact_recording",
    "fetch_accounts",
    "fetch_positions",
    "fetch_balances",
    "fetch_orders",
    "fetch_transactions",
    "fetch_bars",
    "option_chain",
)
"""Hooks that are called for one broker only, never across plugins."""

OPTIONAL_HOOKS = frozenset({"normalize_symbol", "shutdown", "replay_stream", "redact_recording"})
"""Broker hooks that need no capability (the others are :data:`~livedata_core.plugin_kit.broker.CAPABILITIES`)."""
