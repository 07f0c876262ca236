"""The core's bar dedupe and gap filler (livedata_core.runner.bars) on its own: what reaches the publisher, in what
order, and what status says when a gap cannot be filled."""

import asyncio

import pytest

from livedata_core.models import Bar
from livedata_core.runner.bars import BarKeeper

T0 = 1_700_000_040_000
MINUTE = 60_000


def bar(minute, symbol="/ES", seq=None, close=None, **over):
    return Bar(broker="t", symbol=symbol, interval=60, start=T0 + minute * MINUTE, open=1.0, high=1.0, low=1.0,
               close=float(minute) if close is None else close, seq=minute if seq is None else seq, **over)


class Sink:
    def __init__(self):
        self.bars = []
        self.skips = []

    def publish(self, b):
        if b.close < 0:
            raise ValueError("refused")
        self.bars.append(b)

    def skip(self, reason, what, exc=None):
        self.skips.append(reason)

    def starts(self):
        return [(b.start - T0) // MINUTE for b in self.bars]


async def settle(keeper):
    for _ in range(50):
        await asyncio.sleep(0)
    while keeper._tasks:
        await asyncio.sleep(0.01)


def run(coro):
    return asyncio.run(coro)


def test_repeats_by_start_are_dropped_and_counted():
    async def go():
        sink = Sink()
        keeper = BarKeeper("i", sink.publish, None, skip=sink.skip)
        for b in (bar(0), bar(1), bar(1), bar(0), bar(2), bar(3, seq=2)):
            keeper.receive(b)
        return sink, keeper

    sink, keeper = run(go())
    assert sink.starts() == [0, 1, 2, 3] and keeper.duplicates == 2  # seq 2 again, but a new minute: published
    assert all(b.instance == "i" and not b.backfilled for b in sink.bars)


def test_bars_that_all_carry_seq_0_as_schwabs_do_are_each_published():
    async def go():
        sink = Sink()
        keeper = BarKeeper("i", sink.publish, None, skip=sink.skip)
        for m in (0, 1, 2, 2, 3):
            keeper.receive(bar(m, seq=0))
        return sink, keeper

    sink, keeper = run(go())
    assert sink.starts() == [0, 1, 2, 3] and keeper.duplicates == 1


def test_a_seq_that_starts_over_after_a_reconnect_drops_no_bar():
    async def fetch(symbol, interval, start, end):
        return [bar(m, seq=7) for m in range((start - T0) // MINUTE, (end - T0) // MINUTE)]

    async def go():
        sink = Sink()
        keeper = BarKeeper("i", sink.publish, fetch, skip=sink.skip)
        for m in range(4):
            keeper.receive(bar(m, seq=m))
        # Reconnected: the broker numbers from 0 again; minutes 1-3 are sent again (repeats), so new minute 4 comes
        # with seq 3, the seq of the last bar published; 5 is new, 7 leaves a gap filled from history.
        for m, seq in ((1, 0), (2, 1), (3, 2), (4, 3), (5, 4), (7, 5)):
            keeper.receive(bar(m, seq=seq))
        await settle(keeper)
        return sink, keeper

    sink, keeper = run(go())
    assert sink.starts() == [0, 1, 2, 3, 4, 5, 6, 7] and keeper.duplicates == 3
    assert [b.backfilled for b in sink.bars].count(True) == 1


def test_unsubscribing_a_symbol_mid_fill_publishes_nothing_more_of_it():
    release = None

    async def fetch(symbol, interval, start, end):
        await release.wait()
        return [bar(m, symbol) for m in range((start - T0) // MINUTE, (end - T0) // MINUTE)]

    async def go():
        nonlocal release
        release = asyncio.Event()
        sink = Sink()
        keeper = BarKeeper("i", sink.publish, fetch, skip=sink.skip)
        keeper.receive(bar(0))
        keeper.receive(bar(3))  # a gap: 3 held while 1-2 are fetched
        keeper.receive(bar(4))
        await asyncio.sleep(0.01)
        keeper.forget(["/ES"])
        release.set()
        await settle(keeper)
        published_after_forget = sink.starts()
        keeper.receive(bar(9))  # subscribed again later: starts over
        return published_after_forget, sink, keeper

    after, sink, keeper = run(go())
    assert after == [0]
    assert sink.starts() == [0, 9] and keeper.status()["filling"] == []


def test_a_gap_is_filled_from_history_before_the_bar_that_revealed_it_and_the_bars_held_meanwhile():
    calls = []

    async def fetch(symbol, interval, start, end):
        calls.append((symbol, interval, (start - T0) // MINUTE, (end - T0) // MINUTE))
        await asyncio.sleep(0.05)
        # History may repeat what was published and go beyond the range: the keeper keeps only what is missing.
        return [bar(m, seq=100 + m) for m in range(0, 8)][::-1]

    async def go():
        sink = Sink()
        keeper = BarKeeper("i", sink.publish, fetch, skip=sink.skip)
        keeper.receive(bar(0))
        keeper.receive(bar(1))
        keeper.receive(bar(5))  # minutes 2, 3 and 4 are missing
        keeper.receive(bar(6))  # held behind the fill
        keeper.receive(bar(5))  # a repeat of a held bar
        await settle(keeper)
        return sink, keeper

    sink, keeper = run(go())
    assert calls == [("/ES", 60, 2, 5)]
    assert sink.starts() == [0, 1, 2, 3, 4, 5, 6]
    assert [b.backfilled for b in sink.bars] == [False, False, True, True, True, False, False]
    assert keeper.status()["gaps_filled"] == 1 and keeper.backfilled == 3 and keeper.duplicates == 1


@pytest.mark.parametrize("fetch, reason", [
    (None, "the broker has no bar history"),
    ("raises", "fetch_bars failed: BrokerError: history down"),
    ("junk", "fetch_bars returned str, not a list"),
])
def test_a_gap_that_cannot_be_filled_is_recorded_and_the_live_bars_go_on(fetch, reason, monkeypatch, caplog):
    from livedata_core.errors import BrokerError
    from livedata_core.runner import bars as bars_module

    monkeypatch.setattr(bars_module, "RETRY_PAUSE", 0.01)
    attempts = []

    async def failing(symbol, interval, start, end):
        attempts.append(start)
        raise BrokerError("history down")

    async def junk(symbol, interval, start, end):
        return "bars"

    async def go():
        sink = Sink()
        keeper = BarKeeper("i", sink.publish, {None: None, "raises": failing, "junk": junk}[fetch], skip=sink.skip)
        keeper.receive(bar(0))
        keeper.receive(bar(4))
        await settle(keeper)
        return sink, keeper

    sink, keeper = run(go())
    assert sink.starts() == [0, 4]  # nothing invented
    status = keeper.status()
    assert status["unfilled"] == 1 and status["unfilled_recent"][0]["reason"].startswith(reason)
    assert status["unfilled_recent"][0]["start"] == T0 + MINUTE and status["unfilled_recent"][0]["end"] == T0 + 4 * MINUTE
    assert "bars of /ES from" in caplog.text and "missing and not filled" in caplog.text
    if fetch == "raises":
        assert len(attempts) == 2  # tried again once


def test_bad_bars_from_history_or_the_stream_are_counted_skips():
    async def fetch(symbol, interval, start, end):
        return [bar(1, symbol="/NQ"), {"start": T0 + MINUTE}, bar(2, close=-1.0), bar(3)]

    async def go():
        sink = Sink()
        keeper = BarKeeper("i", sink.publish, fetch, skip=sink.skip)
        keeper.receive(bar(0))
        keeper.receive(bar(4))
        await settle(keeper)
        keeper.receive(bar(5, close=-1.0))  # refused by the publisher: skipped, not the last published
        keeper.receive(bar(6))
        return sink, keeper

    sink, keeper = run(go())
    assert sink.starts() == [0, 3, 4, 6]
    # Minute 5 was refused, so bar 6 asked history for it again (which has only the same bad bars).
    assert sink.skips.count("bar refused") == 2 and sink.skips.count("backfill bar refused") == 4


def test_the_first_bar_of_a_symbol_continues_from_what_an_earlier_run_published():
    async def last_published(symbol):
        return {"start": T0 + 2 * MINUTE, "seq": 2} if symbol == "/ES" else None

    async def fetch(symbol, interval, start, end):
        return [bar(m, symbol) for m in range((start - T0) // MINUTE, (end - T0) // MINUTE)]

    async def go():
        sink = Sink()
        keeper = BarKeeper("i", sink.publish, fetch, last_published, skip=sink.skip)
        keeper.receive(bar(2))  # the earlier run published it
        keeper.receive(bar(6))
        keeper.receive(bar(6, symbol="/NQ"))  # nothing earlier: starts here
        await settle(keeper)
        return sink, keeper

    sink, keeper = run(go())
    assert [(b.start - T0) // MINUTE for b in sink.bars if b.symbol == "/ES"] == [3, 4, 5, 6]
    assert [(b.start - T0) // MINUTE for b in sink.bars if b.symbol == "/NQ"] == [6]
    assert keeper.duplicates == 1


def test_a_gap_older_than_the_backfill_window_is_filled_only_within_it(monkeypatch):
    from livedata_core.runner import bars as bars_module

    monkeypatch.setattr(bars_module, "MAX_BACKFILL_MS", 3 * MINUTE)
    asked = []

    async def fetch(symbol, interval, start, end):
        asked.append(((start - T0) // MINUTE, (end - T0) // MINUTE))
        return [bar(m) for m in range((start - T0) // MINUTE, (end - T0) // MINUTE)]

    async def go():
        sink = Sink()
        keeper = BarKeeper("i", sink.publish, fetch, skip=sink.skip)
        keeper.receive(bar(0))
        keeper.receive(bar(10))
        await settle(keeper)
        return sink, keeper

    sink, keeper = run(go())
    # History is asked for the whole gap; what it has before the window is recorded as not published.
    assert asked == [(1, 10)] and sink.starts() == [0, 7, 8, 9, 10]
    (unfilled,) = keeper.status()["unfilled_recent"]
    assert "older than the backfill window" in unfilled["reason"] and "6 bar(s)" in unfilled["reason"]
    assert (unfilled["start"], unfilled["end"]) == (T0 + MINUTE, T0 + 7 * MINUTE)


def test_a_closed_market_older_than_the_backfill_window_is_not_a_gap(monkeypatch):
    # A weekend: the market closed after minute 0 and opened at minute 8; history has no bar in between.
    from livedata_core.runner import bars as bars_module

    monkeypatch.setattr(bars_module, "MAX_BACKFILL_MS", 3 * MINUTE)

    async def fetch(symbol, interval, start, end):
        return [bar(m) for m in range(8, (end - T0) // MINUTE)]

    async def go():
        sink = Sink()
        keeper = BarKeeper("i", sink.publish, fetch, skip=sink.skip)
        keeper.receive(bar(0))
        keeper.receive(bar(10))
        await settle(keeper)
        return sink, keeper

    sink, keeper = run(go())
    assert sink.starts() == [0, 8, 9, 10]
    assert keeper.unfilled_total == 0 and keeper.gaps_filled == 1


@pytest.mark.parametrize("catches_up", [True, False])
def test_the_newest_minutes_history_does_not_hold_yet_are_asked_again_then_recorded(catches_up, monkeypatch):
    # Schwab's history lags the newest minutes: a gap ending now is first answered short of its end.
    from livedata_core.runner import bars as bars_module

    monkeypatch.setattr(bars_module, "LAG_PAUSE", 0.01)
    asked = []

    async def fetch(symbol, interval, start, end):
        first, stop = (start - T0) // MINUTE, (end - T0) // MINUTE
        asked.append((first, stop))
        upto = 4 if len(asked) == 1 else stop if catches_up else 4
        return [bar(m) for m in range(first, min(stop, upto))]

    async def go():
        sink = Sink()
        now = (T0 + 7 * MINUTE) / 1000
        keeper = BarKeeper("i", sink.publish, fetch, skip=sink.skip, clock=lambda: now)
        keeper.receive(bar(0))
        keeper.receive(bar(6))  # minutes 1-5 missing; history has only 1-3 at first
        keeper.receive(bar(7))
        await settle(keeper)
        return sink, keeper

    sink, keeper = run(go())
    if catches_up:
        assert asked == [(1, 6), (4, 6)] and sink.starts() == list(range(8)) and keeper.unfilled_total == 0
    else:
        assert asked == [(1, 6)] + [(4, 6)] * bars_module.LAG_RETRIES and sink.starts() == [0, 1, 2, 3, 6, 7]
        (unfilled,) = keeper.status()["unfilled_recent"]
        assert (unfilled["start"], unfilled["end"]) == (T0 + 4 * MINUTE, T0 + 6 * MINUTE)
        assert "lag" in unfilled["reason"]


def test_an_old_gap_that_history_answers_short_is_not_asked_again():
    # Far from now, a minute history has no bar for had no trades: asked once, nothing recorded.
    asked = []

    async def fetch(symbol, interval, start, end):
        asked.append(start)
        return [bar(1)]

    async def go():
        sink = Sink()
        keeper = BarKeeper("i", sink.publish, fetch, skip=sink.skip)
        keeper.receive(bar(0))
        keeper.receive(bar(4))
        await settle(keeper)
        return sink, keeper

    sink, keeper = run(go())
    assert len(asked) == 1 and sink.starts() == [0, 1, 4] and keeper.unfilled_total == 0


def test_after_an_outage_the_gaps_of_many_symbols_are_fetched_a_few_at_a_time(monkeypatch):
    # A broker paces its history requests (one at a time, 0.05 s apart here, as Schwab's 120 a minute); the core
    # asks a few at a time, so each request's timeout times the request, not the queue behind the pacing: 40 symbols
    # (2 s of requests) with a 1 s timeout are all filled. Asked all at once, the last ones would time out.
    from livedata_core.runner import bars as bars_module

    monkeypatch.setattr(bars_module, "FETCH_TIMEOUT", 1.0)
    in_flight, most = 0, 0

    async def go():
        pacing = asyncio.Lock()

        async def paced(symbol, interval, start, end):
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                async with pacing:
                    await asyncio.sleep(0.05)
            finally:
                in_flight -= 1
            return [bar(m, symbol) for m in range((start - T0) // MINUTE, (end - T0) // MINUTE)]

        sink = Sink()
        keeper = BarKeeper("i", sink.publish, paced, skip=sink.skip)
        symbols = [f"S{i}" for i in range(40)]
        for symbol in symbols:
            keeper.receive(bar(0, symbol))
        for symbol in symbols:
            keeper.receive(bar(3, symbol))
        await settle(keeper)
        return sink, keeper

    sink, keeper = run(go())
    assert most == bars_module.MAX_CONCURRENT_FETCHES
    assert keeper.gaps_filled == 40 and keeper.unfilled_total == 0 and keeper.backfilled == 80
    assert all([(b.start - T0) // MINUTE for b in sink.bars if b.symbol == s] == [0, 1, 2, 3] for s in ("S0", "S39"))
