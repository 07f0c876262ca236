"""The stream contract between a broker plugin and the runner.

A plugin's :func:`~livedata_core.plugin_kit.hookspecs.stream` hook returns a :class:`BrokerStream`. The plugin speaks its
broker's protocol; the runner owns the lifecycle that every broker needs:

==========================  ===================================================================
Method                      Requirement
==========================  ===================================================================
``connect()``               required: open the connection and log in; return when ready
``events()``                required: async iterator of models, lists of models and heartbeats
``subscribe(symbols,``      required for each kind the broker declares (:attr:`BrokerInfo.kinds`):
``kind="quotes")``          start streaming these (already normalised)
``unsubscribe(symbols,``    stop streaming these
``kind="quotes")``
``close()``                 recommended: log out politely and close; must not raise
``heartbeat_timeout``       seconds of silence after which the runner reconnects (``None``: never)
==========================  ===================================================================

After ``close()`` the runner iterates ``events()`` once more, for at most half a second, and publishes the
orders and transactions it yields (quotes are dropped): a stream that had received account events it had not
yet handed over gives them up there, so nothing is lost at shutdown or reconnect. A stream with nothing
buffered just ends.

The runner calls ``connect()``, then ``subscribe()`` with every wanted symbol, then reads ``events()`` until
it ends or raises. ``subscribe``/``unsubscribe`` may also be called while ``events()`` is being read (live
control), so they must be safe to run concurrently with it. When ``events()`` ends (the server closed) or
raises, the runner closes the stream, waits with exponential backoff and jitter, asks the plugin for a new
stream, and subscribes again. A :class:`~livedata_core.errors.AuthError` makes it re-authenticate first.

Kinds: the runner calls ``subscribe(symbols)`` (no ``kind`` argument) for quotes, so streams written before kinds
existed keep working, and ``subscribe(symbols, kind="bars")`` / ``kind="depth"`` for the other kinds a broker
declares in :attr:`~livedata_core.plugin_kit.broker.BrokerInfo.kinds`. For bars, yield every bar the broker sends
(repeats included): the runner drops those it published already (by ``seq``, and by a ``start`` not after the last
one published for the symbol) and fills gaps through the ``fetch_bars`` hook.

``events()`` yields :class:`~livedata_core.models.Quote` (:class:`~livedata_core.models.OptionQuote` for options),
:class:`~livedata_core.models.Bar`, :class:`~livedata_core.models.Depth`, :class:`~livedata_core.models.Order`,
:class:`~livedata_core.models.Transaction` (and positions or balances if the broker streams them), a
``list`` of those for a frame that carries many, or :data:`HEARTBEAT` when the broker sent a heartbeat and
nothing else. Anything yielded resets the watchdog. A malformed frame is the plugin's to log and count
(:meth:`StreamStats.skip`); it must not end the stream.

Timeouts inside a plugin: prefer ``asyncio.timeout()`` (or :func:`livedata_core.aio_tools.within`) to
``asyncio.wait_for``, which on Python 3.11 can drop a cancellation and keep a stopped stream running.
"""

from __future__ import annotations

import abc
import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

__all__ = ["HEARTBEAT", "BrokerStream", "Heartbeat", "StreamStats"]


class Heartbeat:
    """The type of :data:`HEARTBEAT`: the broker is alive but sent no data."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "HEARTBEAT"


HEARTBEAT = Heartbeat()


class StreamStats:
    """Counters a stream keeps about frames it could not use; shown by ``livedata status``.

    :attr:`skipped` holds the counts since the runner last collected them: each status snapshot, and the end
    of each connection, adds them to the broker's status (``livedata status`` shows the totals) and clears
    them. Logging is limited on separate counts kept per logger for the life of the process, so neither
    those snapshots nor a reconnect (a new stream, a new ``StreamStats``) start the warnings over: the first
    :attr:`LOG_FIRST` skips of a reason are logged, then every :attr:`LOG_EVERY`-th. At most
    :attr:`MAX_REASONS` reasons per logger are remembered for this; skips of further reasons share one
    allowance.
    """

    LOG_FIRST = 5
    LOG_EVERY = 1000
    MAX_REASONS = 1000

    def __init__(self, log: logging.Logger | None = None) -> None:
        self.skipped: Counter[str] = Counter()
        self._log = log or logging.getLogger("livedata.stream")
        self._lifetime = _LIFETIME_SKIPS.setdefault(self._log.name, Counter())

    def skip(self, reason: str, detail: Any = None) -> None:
        """Count a skipped frame or field under ``reason`` and log it at warning level (the first
        :attr:`LOG_FIRST` per reason in this process, then every :attr:`LOG_EVERY`-th). ``reason`` should be a
        fixed text: it is a key of the status figures."""
        self.skipped[reason] += 1
        lifetime = self._lifetime
        key = reason if reason in lifetime or len(lifetime) < self.MAX_REASONS else _OTHER_REASONS
        lifetime[key] += 1
        n = lifetime[key]
        if n <= self.LOG_FIRST or n % self.LOG_EVERY == 0:
            text = repr(detail)
            if len(text) > 300:
                text = text[:300] + "..."
            more = f"; from now on every {self.LOG_EVERY}th is logged" if n == self.LOG_FIRST else ""
            self._log.warning("skipped (%s, %d so far)%s: %s", reason, n, more, text)


#: Logger name -> skips per reason over the life of the process, for :meth:`StreamStats.skip`'s rate limit.
_LIFETIME_SKIPS: dict[str, Counter[str]] = {}
_OTHER_REASONS = "(other reasons)"


class BrokerStream(abc.ABC):
    """Base class of a broker's stream. See the module docstring for the contract."""

    heartbeat_timeout: float | None = 30.0

    def __init__(self) -> None:
        self.stats = StreamStats()

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection and log in. Raise ``AuthError`` if the broker rejects the token."""

    @abc.abstractmethod
    def events(self) -> AsyncIterator[Any]:
        """Yield models, lists of models and :data:`HEARTBEAT` until the connection ends."""

    async def subscribe(self, symbols: Sequence[str], kind: str = "quotes") -> None:
        """Start streaming ``symbols`` of ``kind`` (``"quotes"``, ``"bars"``, ``"depth"``). The default refuses,
        for brokers that stream no quotes.

        Raise :class:`~livedata_core.errors.SymbolsRefused` naming the symbols the broker refused while the
        connection stays usable (the rest of the call still subscribed); ``StreamError`` when the connection broke.
        """
        if symbols:
            raise NotImplementedError(f"{type(self).__name__} does not stream {kind}")

    async def unsubscribe(self, symbols: Sequence[str], kind: str = "quotes") -> None:
        """Stop streaming ``symbols`` of ``kind``."""
        if symbols:
            raise NotImplementedError(f"{type(self).__name__} does not stream {kind}")

    async def close(self) -> None:
        """Log out and close the connection. Must not raise."""
