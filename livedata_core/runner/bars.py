"""Bars with no gaps and no repeats: the dedupe and gap filler every broker's bars go through, once, in core.

A stream yields every bar it receives (:class:`~livedata_core.models.Bar`), repeats included. Per symbol,
:class:`BarKeeper` publishes each minute once and in order:

* A bar whose ``start`` is not after the last one published for its symbol is a repeat: dropped and counted
  (``bars.duplicates`` in status). Bars are ordered and deduplicated by ``start`` alone: a broker's ``seq`` is not
  an order (Schwab's CHART items carry ``seq`` 0, and a new connection numbers from the start again).
* A bar whose ``start`` jumps past the last one plus its interval (a reconnect, an outage, a restart: the last
  bar is read back from the symbol's stream in Redis the first time) leaves a gap. The keeper holds it (and the
  symbol's later bars) and asks the broker's ``fetch_bars`` hook for the missing range, publishes what comes back
  in order with ``backfilled=True``, then the held bars. The broker's history is the authority: a minute it has
  no bar for had no trades, and is not a gap; except the newest minutes, which a broker's history may not hold
  yet (Schwab's lags): when the gap ends within :data:`RECENT_MS` of now and history stops short of it, the
  keeper asks again for the rest (:data:`LAG_RETRIES` times, :data:`LAG_PAUSE` apart), then records what is still
  missing as unfilled.
* A gap the broker cannot fill (it has no ``fetch_bars``, the call failed twice) is recorded in status
  (``bars.unfilled``, the latest :data:`MAX_UNFILLED_SHOWN`) and logged, and the live bars go on: a bar is never
  invented. Of a gap longer than :data:`MAX_BACKFILL_MS` only the newest part is published; the older part is
  recorded as unfilled only where history has bars in it (a weekend, a closed market, is not a gap).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from ..aio_tools import reraise_if_cancelling, within
from ..models import Bar

__all__ = ["BarKeeper", "FETCH_TIMEOUT", "LAG_PAUSE", "LAG_RETRIES", "MAX_BACKFILL_MS", "MAX_UNFILLED_SHOWN",
           "RECENT_MS"]

MAX_BACKFILL_MS = 24 * 3600 * 1000
"""The oldest gap filled: one day (1,440 one-minute bars) before the bar that revealed it; older minutes are
recorded as unfilled where history has bars (a runner restarted after a week does not replay the week)."""
MAX_HISTORY_MS = 7 * 24 * 3600 * 1000
"""How far back history is asked, at most, to tell a closed market from missing minutes older than the window."""
RECENT_MS = 5 * 60 * 1000
"""A gap ending this close to now may end in minutes the broker's history does not hold yet."""
LAG_RETRIES = 3
LAG_PAUSE = 15.0
"""Seconds between asks for the newest minutes history did not hold yet (the live bars wait meanwhile)."""
MAX_UNFILLED_SHOWN = 20
FETCH_TIMEOUT = 30.0
FETCH_ATTEMPTS = 2
MAX_CONCURRENT_FETCHES = 4
"""History requests in flight at once per instance. After an outage every bars symbol has a gap at once; a broker
paces its REST calls (Schwab: 120 a minute), and ``FETCH_TIMEOUT`` must time the request, not the wait in that queue."""
RETRY_PAUSE = 1.0
MAX_CONCURRENT_READS = 16
"""Reads of a symbol's last published bar in flight at once (at start, every bars symbol's first bar asks)."""
MAX_HELD = 1_000
"""Live bars held per symbol while its gap is fetched, at most (then the oldest are published unfilled)."""

_SET_BAR_INSTANCE = Bar.__dict__["instance"].__set__


class _Symbol:
    __slots__ = ("last_start", "held", "filling", "primed", "gone")

    def __init__(self) -> None:
        self.last_start: int | None = None
        self.held: list[Bar] = []
        self.filling = False
        self.primed = False
        self.gone = False  # unsubscribed while its gap was being filled: nothing more of it is published


class BarKeeper:
    """The bars of one instance: dedupe, gap filling and their status (see the module docstring).

    :param instance: the instance's name, stamped on bars that come without one.
    :param publish: queues a bar on the publisher (raises for a bar that cannot be published).
    :param fetch: ``fetch(symbol, interval, start, end)`` awaits the broker's history (the ``fetch_bars`` hook), or
        ``None`` when the broker has none.
    :param last_published: ``last_published(symbol)`` awaits the newest bar in the symbol's stream in Redis (a dict,
        or ``None``), so a restart neither repeats nor skips minutes; ``None``: start from the first bar received.
    :param skip: counts and logs a bar that cannot be published (``skip(reason, bar, exc)``).
    :param clock: the time now in seconds (tells the newest minutes, which history may not hold yet).
    """

    def __init__(
        self,
        instance: str,
        publish: Callable[[Bar], None],
        fetch: Callable[[str, int, int, int], Awaitable[list[Any]]] | None,
        last_published: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None,
        skip: Callable[..., None] | None = None,
        log: logging.Logger | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.instance = instance
        self._publish = publish
        self._fetch = fetch
        self._last_published = last_published
        self._skip = skip or (lambda reason, what, exc=None: None)
        self.log = log or logging.getLogger(f"livedata.runner.{instance}.bars")
        self._clock = clock
        self._symbols: dict[str, _Symbol] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._fetching: asyncio.Semaphore | None = None  # made in the loop, at the first gap
        self._reading: asyncio.Semaphore | None = None  # reads of the last published bar (one connection each)
        self.published = 0
        self.backfilled = 0
        self.duplicates = 0
        self.gaps_filled = 0
        self.unfilled: deque[dict[str, Any]] = deque(maxlen=MAX_UNFILLED_SHOWN)
        self.unfilled_total = 0

    # -- live bars -------------------------------------------------------------------------------------------

    def receive(self, bar: Bar) -> int:
        """Take one live bar: publish it now, drop it as a repeat, or hold it until its symbol's gap is filled.
        Returns how many bars were published now."""
        state = self._symbols.get(bar.symbol)
        if state is None:
            state = self._symbols[bar.symbol] = _Symbol()
        if state.filling:
            if len(state.held) >= MAX_HELD:
                self._release_oldest(state)
            state.held.append(bar)
            return 0
        if not state.primed and self._last_published is not None:
            # The first bar of a symbol in this process: what did an earlier run publish last?
            state.primed = True
            state.filling = True
            state.held.append(bar)
            self._spawn(self._prime_and_fill(bar.symbol, state))
            return 0
        state.primed = True
        return self._take(state, bar)

    def _take(self, state: _Symbol, bar: Bar) -> int:
        """Publish ``bar`` if it is new and follows the last one, else drop it or start filling the gap before it."""
        if self._repeat(state, bar):
            return 0
        interval_ms = bar.interval * 1000
        if state.last_start is not None and bar.start > state.last_start + interval_ms and interval_ms > 0:
            state.filling = True
            state.held.append(bar)
            self._spawn(self._fill(bar.symbol, state, bar.interval, state.last_start + interval_ms, bar.start))
            return 0
        return self._out(state, bar)

    def _repeat(self, state: _Symbol, bar: Bar) -> bool:
        if state.last_start is not None and bar.start <= state.last_start:
            self.duplicates += 1
            return True
        return False

    def _out(self, state: _Symbol, bar: Bar) -> int:
        if state.gone:
            return 0
        if bar.instance is None:
            _SET_BAR_INSTANCE(bar, self.instance)
        try:
            self._publish(bar)
        except Exception as exc:  # a bad value from the broker: counted and logged, the next bar goes on
            self._skip("bar refused", bar, exc)
            return 0
        state.last_start = bar.start
        self.published += 1
        if bar.backfilled:
            self.backfilled += 1
        return 1

    def forget(self, symbols: list[str]) -> None:
        """Unsubscribed: nothing more of these symbols is published (a fill in flight publishes neither what it fetches
        nor the bars it held), and a later subscription starts over (from what the stream in Redis holds)."""
        for symbol in symbols:
            state = self._symbols.pop(symbol, None)
            if state is not None:
                state.gone = True
                state.held.clear()

    # -- gap filling ---------------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prime_and_fill(self, symbol: str, state: _Symbol) -> None:
        try:
            last = None
            assert self._last_published is not None
            if self._reading is None:
                self._reading = asyncio.Semaphore(MAX_CONCURRENT_READS)
            try:
                async with self._reading:
                    last = await self._last_published(symbol)
            except Exception as exc:
                reraise_if_cancelling()
                self.log.warning("cannot read the last published bar of %s (%s); starting from the live bars", symbol, exc)
            if isinstance(last, dict) and type(last.get("start")) is int:
                state.last_start = last["start"]
            if not state.held:
                return  # forgotten meanwhile
            first = state.held[0]
            interval_ms = first.interval * 1000
            if state.last_start is not None and interval_ms > 0 and first.start > state.last_start + interval_ms:
                await self._fetch_gap(symbol, state, first.interval, state.last_start + interval_ms, first.start)
        finally:
            self._release(state)

    async def _fill(self, symbol: str, state: _Symbol, interval: int, start: int, end: int) -> None:
        try:
            await self._fetch_gap(symbol, state, interval, start, end)
        finally:
            self._release(state)

    async def _fetch_gap(self, symbol: str, state: _Symbol, interval: int, start: int, end: int) -> None:
        """Publish the broker's bars of ``[start, end)``; record what cannot be filled. Either way the gap is settled:
        a bar of it arriving later would be out of order, and is dropped as a repeat."""
        try:
            await self._fetch_range(symbol, state, interval, start, end)
        finally:
            settled = end - interval * 1000
            if state.last_start is None or state.last_start < settled:
                state.last_start = settled

    async def _fetch_range(self, symbol: str, state: _Symbol, interval: int, start: int, end: int) -> None:
        interval_ms = interval * 1000
        oldest = end - MAX_BACKFILL_MS  # published from here on
        if start < end - MAX_HISTORY_MS:
            self._unfilled(symbol, start, end - MAX_HISTORY_MS, f"older than {MAX_HISTORY_MS // 86_400_000} days, not asked")
            start = end - MAX_HISTORY_MS
        if self._fetch is None:
            self._unfilled(symbol, start, end, "the broker has no bar history (fetch_bars)")
            return
        bars = await self._ask(symbol, interval, start, end)
        if bars is None:
            return
        old = [b for b in bars if b.start < oldest]
        if old:  # history has bars there: minutes with trades that are not published
            self._unfilled(symbol, old[0].start, min(old[-1].start + interval_ms, oldest),
                           f"older than the backfill window of {MAX_BACKFILL_MS // 3_600_000} h "
                           f"({len(old)} bar(s) of history not published)")  # fmt: skip
        n = self._publish_backfill(state, [b for b in bars if b.start >= oldest])
        # The newest minutes: a broker's history may not hold them yet. Ask again for what it stopped short of.
        newest = bars[-1].start if bars else start - interval_ms
        retries = 0
        while (not state.gone and newest + interval_ms < end and end >= self._clock() * 1000 - RECENT_MS
               and retries < LAG_RETRIES):  # fmt: skip
            retries += 1
            await asyncio.sleep(LAG_PAUSE)
            more = await self._ask(symbol, interval, newest + interval_ms, end)
            if more is None:
                return
            n += self._publish_backfill(state, more)
            if more:
                newest = more[-1].start
        if newest + interval_ms < end and retries:
            self._unfilled(symbol, max(newest + interval_ms, start), end,
                           f"history has no bar for them {retries} times {LAG_PAUSE:g}s apart "
                           "(its newest minutes lag; or no trades)")  # fmt: skip
        self.gaps_filled += 1
        self.log.info("filled the gap of %s from %s to %s with %d backfilled bar(s)", symbol, _t(start), _t(end), n)

    async def _ask(self, symbol: str, interval: int, start: int, end: int) -> list[Bar] | None:
        """The broker's good bars of ``[start, end)`` in order, or ``None`` (recorded as unfilled) when it cannot say."""
        assert self._fetch is not None
        error = ""
        if self._fetching is None:
            self._fetching = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)
        for attempt in range(FETCH_ATTEMPTS):
            try:
                async with self._fetching:
                    bars = await within(self._fetch(symbol, interval, start, end), FETCH_TIMEOUT)
                break
            except asyncio.TimeoutError:
                error = f"no answer within {FETCH_TIMEOUT:g}s"
            except Exception as exc:
                reraise_if_cancelling()
                error = f"{type(exc).__name__}: {exc}"
            if attempt + 1 < FETCH_ATTEMPTS:
                await asyncio.sleep(RETRY_PAUSE)
        else:
            self._unfilled(symbol, start, end, f"fetch_bars failed: {error}")
            return None
        if not isinstance(bars, list):
            self._unfilled(symbol, start, end, f"fetch_bars returned {type(bars).__name__}, not a list")
            return None
        good = []
        for bar in bars:
            if type(bar) is not Bar or bar.symbol != symbol or bar.interval != interval:
                self._skip("backfill bar refused", bar, ValueError(f"not a {interval}s Bar of {symbol}"))
                continue
            if start <= bar.start < end:
                good.append(bar)
        good.sort(key=lambda b: b.start)
        return good

    def _publish_backfill(self, state: _Symbol, bars: list[Bar]) -> int:
        n = 0
        for bar in bars:
            if not self._repeat(state, bar):
                n += self._out(state, attrs.evolve(bar, backfilled=True, instance=bar.instance or self.instance))
        return n

    def _unfilled(self, symbol: str, start: int, end: int, reason: str) -> None:
        self.unfilled_total += 1
        self.unfilled.append({"symbol": symbol, "start": start, "end": end, "reason": reason})
        self.log.warning("bars of %s from %s to %s are missing and not filled: %s", symbol, _t(start), _t(end), reason)

    def _release(self, state: _Symbol) -> None:
        """The gap is settled: publish the held live bars in order (a new gap among them starts a new fill)."""
        state.filling = False
        held, state.held = state.held, []
        for i, bar in enumerate(held):
            self._take(state, bar)
            if state.filling:  # another gap: the rest wait behind it
                state.held.extend(held[i + 1:])
                return

    def _release_oldest(self, state: _Symbol) -> None:
        bar = state.held.pop(0)
        if not self._repeat(state, bar):
            self._out(state, bar)

    async def settled(self, timeout: float) -> bool:
        """Wait until no gap is being filled (a replay's connection ended: its fills publish before the replay
        ends), at most ``timeout`` seconds; returns whether none is."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks:
            left = deadline - loop.time()
            if left <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=left)
        return True

    def close(self) -> None:
        """Stop filling (the runner is stopping): each fill ends as it takes the cancellation, publishing the bars it
        held (unfilled)."""
        for task in list(self._tasks):
            task.cancel()

    def status(self) -> dict[str, Any]:
        """The figures ``livedata status`` shows under ``bars``."""
        return {
            "published": self.published,
            "backfilled": self.backfilled,
            "duplicates": self.duplicates,
            "gaps_filled": self.gaps_filled,
            "unfilled": self.unfilled_total,
            "unfilled_recent": list(self.unfilled),
            "filling": sorted(s for s, st in self._symbols.items() if st.filling),
        }


def _t(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
