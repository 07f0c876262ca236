"""Per-symbol staleness: a subscribed symbol that stops updating while its market is open.

A connection can stay up, heartbeats and all, while the data of one symbol stops (a subscription the broker dropped
after a while). The runner's read loop notes when each subscribed symbol last updated (one dict store per quote,
in loop time); :class:`StalenessWatch` looks at those times a few times per ``stale_after``:

1. a symbol silent for more than ``stale_after`` seconds while its session is open (see
   :mod:`~livedata_core.runner.ops.market_hours`; silence counts from no earlier than the session's start, the connection's
   start or the subscription) is **resubscribed once** (unsubscribe, subscribe);
2. if it has still not updated ``min(stale_after / 4, 5)`` seconds later, it is **stale**: listed in its instance's
   status (``stale``: symbol -> since when), counted in metrics, failing ``/readyz``, logged, and announced on
   ``live_data:events:stale`` (:func:`~livedata_core.channels.event_channel`);
3. it stops being stale when it updates again, when its session closes, or when it is unsubscribed, each announced
   on the same channel with ``"stale": false`` and the reason.

A symbol is resubscribed once per silence: if that does not bring it back, it stays stale until it updates.
Outside its session a symbol is never stale, so a closed market raises no alarm.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs
import orjson

from ...aio_tools import within
from ...channels import event_channel
from .market_hours import SessionClass, SessionMap

__all__ = ["StalenessWatch", "SymbolStaleness", "Verdict"]

log = logging.getLogger("livedata.runner.staleness")

MAX_GRACE = 5.0
"""The most seconds a resubscribed symbol is given to update before it is reported stale."""


@attrs.define
class Verdict:
    """What one check of one instance found."""

    resubscribe: list[str] = attrs.Factory(list)
    """Symbols that just went silent past ``stale_after``: resubscribe them once."""
    stale: list[tuple[str, float, str]] = attrs.Factory(list)
    """(symbol, seconds silent, session class) that are stale from now on."""
    fresh: list[tuple[str, str]] = attrs.Factory(list)
    """(symbol, why) that are no longer stale: ``updated``, ``session closed`` or ``unsubscribed``."""


class SymbolStaleness:
    """The staleness of one instance's symbols, given when each last updated.

    :param stale_after: seconds of silence in session after which a symbol is resubscribed, then stale.
    :param sessions: the session class of each symbol.
    :param last_update: symbol -> loop time of its last update, written by the read loop (shared, not copied).
    """

    def __init__(self, stale_after: float, sessions: SessionMap, last_update: dict[str, float]) -> None:
        self.stale_after = stale_after
        self.grace = min(stale_after / 4, MAX_GRACE)
        self.sessions = sessions
        self.last_update = last_update
        self.stale: dict[str, float] = {}  # symbol -> loop time it was found stale
        self.resubscribed: dict[str, float] = {}  # symbol -> loop time it was resubscribed (waiting for an update)
        self._connection: Any = None

    def check(self, symbols: Iterable[str], now: float, wall: float, connection: Any = None) -> Verdict:
        """Compare every subscribed symbol's last update with ``now`` (loop time) and its session at ``wall``
        (seconds since the epoch). ``connection`` identifies the stream connection: a new one restarts the silence
        of every symbol not already stale (the reconnect subscribed them again)."""
        verdict = Verdict()
        symbols = set(symbols)
        last = self.last_update
        if connection != self._connection:
            self._connection = connection
            for symbol in symbols:
                if symbol not in self.stale:
                    last[symbol] = max(last.get(symbol, now), now)
            self.resubscribed.clear()
        starts: dict[SessionClass, float | None] = {}

        def session_start(symbol: str) -> tuple[SessionClass, float | None]:
            cls = self.sessions.class_of(symbol)
            if cls not in starts:
                starts[cls] = cls.session_start(wall)
            return cls, starts[cls]

        for symbol, marked in list(self.stale.items()):
            if symbol not in symbols:
                why = "unsubscribed"
            elif last.get(symbol, marked) > marked:
                why = "updated"
            elif session_start(symbol)[1] is None:
                why = "session closed"
            else:
                continue
            del self.stale[symbol]
            verdict.fresh.append((symbol, why))
        for symbol in [s for s in last if s not in symbols]:  # unsubscribed: forget
            del last[symbol]
            self.resubscribed.pop(symbol, None)
        self.sessions.forget(symbols)
        for symbol in symbols:
            if symbol in self.stale:
                continue
            seen = last.get(symbol)
            if seen is None:  # newly subscribed: its silence starts now
                last[symbol] = now
                continue
            cls, start = session_start(symbol)
            resubscribed = self.resubscribed.get(symbol)
            if resubscribed is not None and (seen > resubscribed or start is None):
                del self.resubscribed[symbol]  # it came back (or its session closed): a later silence is a new one
                resubscribed = None
            if start is None:
                continue
            silent = min(now - seen, wall - start)
            if silent <= self.stale_after:
                continue
            if resubscribed is None:
                self.resubscribed[symbol] = now
                verdict.resubscribe.append(symbol)
            elif now - resubscribed >= self.grace:
                del self.resubscribed[symbol]
                self.stale[symbol] = now
                verdict.stale.append((symbol, silent, cls.name))
        return verdict


class StalenessWatch:
    """Check the symbols of every streaming instance a few times per ``stale_after``; resubscribe, report, announce.

    :param runtimes: instance name -> :class:`~livedata_core.runner.broker_runtime.BrokerRuntime`.
    :param classes: session classes by name (the configuration's).
    :param announce: ``await announce(channel, payload)`` publishes an event (the runner's Redis connection).
    :param prefix: the deployment prefix of the event channel.
    :param clock: the wall clock that decides whether a market is open (tests set the day and hour).
    :raises ConfigError: an instance's ``market_hours`` names no session class.
    """

    def __init__(
        self,
        runtimes: Mapping[str, Any],
        classes: Mapping[str, SessionClass],
        announce: Callable[[str, bytes], Awaitable[Any]],
        prefix: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runtimes = runtimes
        self.announce = announce
        self.channel = event_channel("stale", prefix)
        self.clock = clock
        self.trackers: dict[str, SymbolStaleness] = {}
        for name, rt in runtimes.items():
            sessions = SessionMap(rt.config.market_hours, classes or None, where=f"brokers.{name}.market_hours")
            if rt.broker.has("stream") and rt.config.stale_after > 0:
                self.trackers[name] = SymbolStaleness(rt.config.stale_after, sessions, rt.last_update)
        shortest = min((t.stale_after for t in self.trackers.values()), default=4.0)
        self.interval = min(max(shortest / 8, 0.02), 1.0)

    async def run(self) -> None:
        """Check until cancelled."""
        if not self.trackers:
            return
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop the watch for the rest of the run
                log.exception("staleness check failed")
            await asyncio.sleep(self.interval)

    async def check(self) -> None:
        """One round over every instance."""
        now = asyncio.get_running_loop().time()
        wall = self.clock()
        events: list[dict[str, Any]] = []
        for name, tracker in self.trackers.items():
            rt = self.runtimes[name]
            if rt.status.state != "streaming":
                continue  # readiness reports the connection itself; silence is measured once it streams again
            verdict = tracker.check(rt.symbols, now, wall, rt.status.connected_since)
            if verdict.resubscribe:
                rt.log.warning("no update of %s for more than %gs while the market is open; resubscribing",
                               ", ".join(sorted(verdict.resubscribe)), tracker.stale_after)
                if await rt.resubscribe(verdict.resubscribe):
                    rt.status.resubscribes += len(verdict.resubscribe)
            for symbol, silent, session in verdict.stale:
                since = wall - silent
                rt.status.stale[symbol] = since
                rt.log.error("%s is stale: no update for %.1fs while its market (%s) is open, resubscribing did "
                             "not help", symbol, silent, session)  # fmt: skip
                events.append(self._event(rt, symbol, True, wall, since=since, silent_for=silent, session=session,
                                          stale_after=tracker.stale_after))
            for symbol, why in verdict.fresh:
                rt.status.stale.pop(symbol, None)
                rt.log.info("%s is no longer stale (%s)", symbol, why)
                events.append(self._event(rt, symbol, False, wall, reason=why))
        if events:
            await self._announce(events)

    def _event(self, rt: Any, symbol: str, stale: bool, wall: float, **fields: Any) -> dict[str, Any]:
        event = {"event": "stale", "stale": stale, "instance": rt.name, "plugin": rt.broker.name, "symbol": symbol,
                 "at": int(wall * 1000)}  # fmt: skip
        if "since" in fields:
            fields["since"] = int(fields["since"] * 1000)
            fields["silent_for"] = round(fields["silent_for"], 3)
        event.update(fields)
        return event

    async def _announce(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            try:
                await within(self.announce(self.channel, orjson.dumps(event)), 2.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down: status, metrics and readiness still say it
                log.warning("could not announce %s on %s: %s", "stale" if event["stale"] else "fresh",
                            self.channel, exc)  # fmt: skip
