"""Market data beyond level-one equities and futures (issue 15), over a real websocket against the fake streamer:
options with Greeks, futures options, forex, 1-minute bars, book depth, and what is refused or skipped."""

from __future__ import annotations

import asyncio

import pytest

from livedata_core.errors import InvalidIdentifier, SymbolsRefused
from livedata_core.models import Bar, Depth, OptionQuote, Quote, check_model, to_dict
from livedata_tos.symbols import normalize_symbol
from livedata_tos.testing import FakeStreamer, book_item, chart_item, open_stream

OPTION = "AAPL  261218C00200000"
FOP = "./OZCZ25C565"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def collect(events, n: int, timeout: float = 3.0) -> list:
    """The next ``n`` models (lists flattened, heartbeats skipped)."""
    out: list = []
    while len(out) < n:
        item = await asyncio.wait_for(events.__anext__(), timeout)
        if isinstance(item, list):
            out.extend(item)
        elif item is not None and not isinstance(item, str):
            out.append(item)
    return out


def test_symbols_of_every_asset_class_are_normalised_and_bad_ones_refused():
    assert normalize_symbol("aapl 261218c00200000") == OPTION  # the root padded to six, as Schwab keys it
    assert normalize_symbol("AAPL261218C00200000") == OPTION
    assert normalize_symbol("./ozcz25c565") == FOP
    assert normalize_symbol("eur/usd") == "EUR/USD"
    for bad in ("./", "./OZC", "AAPL  2612C002", "EUR/USD/JPY"):
        with pytest.raises(InvalidIdentifier):
            normalize_symbol(bad)


def test_option_futures_option_and_forex_quotes_merge_deltas_into_complete_quotes():
    async def main():
        async with FakeStreamer() as fake, open_stream(fake, [OPTION, FOP, "EUR/USD", "AAPL"]) as stream:
            assert fake.subscriptions["LEVELONE_OPTIONS"] == {OPTION}
            assert fake.subscriptions["LEVELONE_FUTURES_OPTIONS"] == {FOP}
            assert fake.subscriptions["LEVELONE_FOREX"] == {"EUR/USD"}
            assert fake.subscriptions["LEVELONE_EQUITIES"] == {"AAPL"}
            fields = dict((s, p.get("fields")) for s, c, p in fake.commands() if c == "ADD")
            assert fields["LEVELONE_OPTIONS"].split(",")[:4] == ["0", "2", "3", "4"]
            assert {"28", "29", "30", "31", "32", "34", "35"} <= set(fields["LEVELONE_OPTIONS"].split(","))
            events = stream.events()

            await fake.send_data("LEVELONE_OPTIONS", [{
                "key": OPTION, "delayed": False, "assetMainType": "OPTION", "2": 12.5, "3": 12.75, "4": 12.6,
                "8": 310, "9": 1520, "10": 28.4, "13": 100, "16": 5, "17": 7, "21": "C", "22": "AAPL", "28": 0.55,
                "29": 0.012, "30": -0.031, "31": 0.41, "32": 0.2, "34": 12.62, "35": 205.1, "37": 12.625,
                "38": 1765000000000}])  # fmt: skip
            (first,) = await collect(events, 1)
            assert type(first) is OptionQuote
            check_model(first)
            assert (first.bid, first.ask, first.last, first.volume, first.bid_size) == (12.5, 12.75, 12.6, 310, 5)
            assert (first.open_interest, first.implied_volatility) == (1520, 0.284)  # Schwab's percent, as a fraction
            assert (first.delta, first.gamma, first.theta, first.vega, first.rho) == (0.55, 0.012, -0.031, 0.41, 0.2)
            assert (first.theoretical_value, first.underlying_price, first.mark) == (12.62, 205.1, 12.625)
            assert (first.strike, first.expiration, first.put_call) == (200.0, "2026-12-18", "call")
            assert (first.multiplier, first.underlying, first.timestamp) == (100.0, "AAPL", 1765000000000)

            # CHANGE delivery: only what changed arrives; the rest is kept. -999 is "not computed": null.
            await fake.send_data("LEVELONE_OPTIONS", [{"key": OPTION, "2": 12.55, "28": 0.56, "29": -999.0}])
            (second,) = await collect(events, 1)
            assert (second.bid, second.ask, second.delta, second.gamma, second.vega) == (12.55, 12.75, 0.56, None, 0.41)

            await fake.send_data("LEVELONE_FUTURES_OPTIONS", [{
                "key": FOP, "1": 10.25, "2": 10.5, "3": 10.375, "4": 3, "5": 4, "8": 120, "10": 1765000001000,
                "18": 4410, "19": 10.4, "22": 50, "24": "/ZCZ25", "25": 565, "26": 1763769600000,
                "28": "C"}])  # fmt: skip
            (fop,) = await collect(events, 1)
            assert type(fop) is OptionQuote
            check_model(fop)
            assert (fop.bid, fop.ask, fop.last, fop.open_interest, fop.mark) == (10.25, 10.5, 10.375, 4410, 10.4)
            assert (fop.strike, fop.put_call, fop.multiplier, fop.underlying) == (565.0, "call", 50.0, "/ZCZ25")
            assert fop.expiration == "2025-11-21" and fop.delta is None  # Schwab streams no futures-option Greeks

            await fake.send_data("LEVELONE_FOREX", [{"key": "EUR/USD", "1": 1.0841, "2": 1.0843, "3": 1.0842,
                                                      "8": 1765000002000, "29": 1.0842}])  # fmt: skip
            (fx,) = await collect(events, 1)
            assert type(fx) is Quote and (fx.bid, fx.ask, fx.mark, fx.timestamp) == (1.0841, 1.0843, 1.0842, 1765000002000)
            await fake.send_data("LEVELONE_FOREX", [{"key": "EUR/USD", "2": 1.0844}])
            (fx2,) = await collect(events, 1)
            assert (fx2.bid, fx2.ask) == (1.0841, 1.0844)

            # An equity quote stays a plain Quote: its payload does not grow.
            await fake.send_data("LEVELONE_EQUITIES", [{"key": "AAPL", "1": 205.0, "2": 205.1}])
            (eq,) = await collect(events, 1)
            assert type(eq) is Quote and "strike" not in to_dict(eq)

            # An unsubscribed option stops at once; subscribed again, it starts afresh from what arrives.
            await stream.unsubscribe([FOP])
            assert fake.subscriptions["LEVELONE_FUTURES_OPTIONS"] == set()
            await fake.send_data("LEVELONE_FUTURES_OPTIONS", [{"key": FOP, "1": 10.3}])
            await fake.wait_for(lambda: stream.stats.skipped["level-one data for a symbol not subscribed"] == 1)
            await stream.subscribe([FOP])
            await fake.send_data("LEVELONE_FUTURES_OPTIONS", [{"key": FOP, "2": 10.6}])
            (again,) = await collect(events, 1)
            assert (again.bid, again.ask, again.strike) == (None, 10.6, None)

            # A bad value is counted and the field keeps its last value.
            await fake.send_data("LEVELONE_OPTIONS", [{"key": OPTION, "2": "x", "3": 12.8}])
            (third,) = await collect(events, 1)
            assert (third.bid, third.ask) == (12.55, 12.8)
            assert stream.stats.skipped["LEVELONE_OPTIONS bad value"] == 1

    run(main())


def test_option_state_outlives_the_connection():
    async def main():
        states: dict = {}
        async with FakeStreamer() as fake:
            async with open_stream(fake, [OPTION], levelone=states) as stream:
                events = stream.events()
                await fake.send_data("LEVELONE_OPTIONS", [{"key": OPTION, "2": 1.0, "3": 1.2, "28": 0.3}])
                await collect(events, 1)
            async with open_stream(fake, [OPTION], levelone=states) as stream:
                events = stream.events()
                await fake.send_data("LEVELONE_OPTIONS", [{"key": OPTION, "2": 1.1}])
                (quote,) = await collect(events, 1)
                assert (quote.bid, quote.ask, quote.delta) == (1.1, 1.2, 0.3)

    run(main())


def test_bars_from_chart_equity_and_chart_futures_with_their_own_field_orders():
    async def main():
        async with FakeStreamer() as fake, open_stream(fake) as stream:
            await stream.subscribe(["AAPL", "/ES"], kind="bars")
            assert fake.subscriptions["CHART_EQUITY"] == {"AAPL"}
            assert fake.subscriptions["CHART_FUTURES"] == {"/ES"}
            events = stream.events()
            # The streamer answers a chart subscription with the last bar that ended: one each.
            first = await collect(events, 2)
            assert {b.symbol for b in first} == {"AAPL", "/ES"} and all(type(b) is Bar for b in first)

            # The recorded CHART_EQUITY sample (schwab-py's test): 1 is the minute of the day, 2..6 OHLCV, 7 time.
            await fake.send_data("CHART_EQUITY", [{"seq": 0, "key": "AAPL", "1": 779, "2": 421.65, "3": 421.79,
                                                   "4": 421.65, "5": 421.755, "6": 26.0, "7": 1715903940000,
                                                   "8": 19859}])  # fmt: skip
            (bar,) = await collect(events, 1)
            check_model(bar)
            assert (bar.symbol, bar.interval, bar.start, bar.seq) == ("AAPL", 60, 1715903940000, 0)
            assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (421.65, 421.79, 421.65, 421.755, 26.0)
            assert bar.backfilled is False
            # CHART_FUTURES (Schwabdev's sample): 1 is the time.
            await fake.send_data("CHART_FUTURES", [{"1": 1765307160000, "2": 6858.25, "3": 6858.75, "4": 6857.75,
                                                    "5": 6858.5, "6": 897, "seq": 2224, "key": "/ES"}])  # fmt: skip
            (es,) = await collect(events, 1)
            assert (es.start, es.open, es.high, es.low, es.close, es.volume, es.seq) == (
                1765307160000, 6858.25, 6858.75, 6857.75, 6858.5, 897.0, 2224)

            # Minutes passing on the fake's clock: one bar per symbol per minute; a repeat (same seq) is yielded
            # as it comes (the runner drops repeats).
            await fake.advance(120)
            bars = await collect(events, 4)
            assert sorted((b.symbol, b.start) for b in bars) == sorted(
                (s, fake.clock.ms - m * 60_000) for s in ("AAPL", "/ES") for m in (2, 1))
            await fake.send_bars(fake.clock.ms - 60_000, {"CHART_EQUITY": ["AAPL"]})
            (repeat,) = await collect(events, 1)
            assert repeat.seq == fake.bars_sent[-1][3]

            # Malformed bars are counted and skipped; the good one beside them is yielded.
            good = chart_item("CHART_EQUITY", "AAPL", fake.clock.ms, 99)
            await fake.send_data("CHART_EQUITY", [
                {**good, "2": None}, {**good, "3": 1.0, "4": 2.0}, {**good, "7": "soon"}, "junk", good])  # fmt: skip
            (ok,) = await collect(events, 1)
            assert ok.seq == 99
            assert stream.stats.skipped["malformed bar"] == 4

            await stream.unsubscribe(["AAPL"], kind="bars")
            assert fake.subscriptions["CHART_EQUITY"] == set()

    run(main())


def test_depth_from_the_books_best_levels_first_and_malformed_books_skipped():
    async def main():
        async with FakeStreamer() as fake, open_stream(fake, nyse_book=["ibm"]) as stream:
            await stream.subscribe(["AAPL", "IBM", OPTION], kind="depth")
            assert fake.subscriptions["NASDAQ_BOOK"] == {"AAPL"}
            assert fake.subscriptions["NYSE_BOOK"] == {"IBM"}
            assert fake.subscriptions["OPTIONS_BOOK"] == {OPTION}
            events = stream.events()
            await fake.send_data("NASDAQ_BOOK", [book_item(
                "AAPL", bids=[(189.49, 300, 2), (189.5, 200, 3), (189.48, 100, 1)],
                asks=[(189.53, 400, 4), (189.52, 100, 1), (189.54, 50, 1)], time_ms=1765000000000)])  # fmt: skip
            (depth,) = await collect(events, 1)
            assert type(depth) is Depth
            check_model(depth)
            assert depth.book == "NASDAQ" and depth.timestamp == 1765000000000
            # Every level, best first (the runner keeps the top depth_levels).
            assert [(lv.price, lv.size, lv.count) for lv in depth.bids] == [(189.5, 200, 3), (189.49, 300, 2),
                                                                            (189.48, 100, 1)]  # fmt: skip
            assert [(lv.price, lv.size, lv.count) for lv in depth.asks] == [(189.52, 100, 1), (189.53, 400, 4),
                                                                            (189.54, 50, 1)]  # fmt: skip

            await fake.send_data("NYSE_BOOK", [book_item("IBM", [(150.0, 100, 1)], [])])
            (ibm,) = await collect(events, 1)
            assert (ibm.book, ibm.asks) == ("NYSE", [])

            bad_level = book_item("AAPL", [(189.5, 200, 2)], [(189.52, 100, 1)])
            bad_level["2"][0]["1"] = "lots"
            await fake.send_data("NASDAQ_BOOK", [bad_level, {"key": "AAPL", "2": "x"},
                                                 book_item("AAPL", [(189.6, 1, 1)], [(189.7, 1, 1)])])  # fmt: skip
            (last,) = await collect(events, 1)
            assert last.bids[0].price == 189.6
            assert stream.stats.skipped["malformed book"] == 2

            # Unsubscribed: the book stops at once, what still arrives for it is counted, not yielded.
            await stream.unsubscribe(["AAPL", "IBM"], kind="depth")
            assert fake.subscriptions["NASDAQ_BOOK"] == set() and fake.subscriptions["NYSE_BOOK"] == set()
            await fake.send_data("NASDAQ_BOOK", [book_item("AAPL", [(1.0, 1, 1)], [])])
            await fake.send_data("OPTIONS_BOOK", [book_item(OPTION, [(12.5, 10, 2)], [(12.75, 5, 1)])])
            (option_book,) = await collect(events, 1)
            assert (option_book.symbol, option_book.book) == (OPTION, "OPTIONS")
            assert stream.stats.skipped["book for a symbol not subscribed"] == 1

    run(main())


def test_a_kind_schwab_has_no_service_for_and_an_unknown_contract_are_refused_alone():
    async def main():
        async with FakeStreamer() as fake, open_stream(fake) as stream:
            with pytest.raises(SymbolsRefused) as refused:
                await stream.subscribe(["/ES", "EUR/USD", "AAPL"], kind="depth")
            assert refused.value.symbols == ["/ES", "EUR/USD"] and "no depth" in str(refused.value)
            assert fake.subscriptions["NASDAQ_BOOK"] == {"AAPL"}
            with pytest.raises(SymbolsRefused) as refused:
                await stream.subscribe([OPTION], kind="bars")
            assert refused.value.symbols == [OPTION]

            # One contract that does not exist: the chunk is asked again one by one, the others subscribed.
            bogus = "AAPL  261218C09990000"
            fake.unknown_symbols = {bogus}
            with pytest.raises(SymbolsRefused) as refused:
                await stream.subscribe([OPTION, bogus, "AAPL  261218P00200000"])
            assert refused.value.symbols == [bogus] and "code 24" in str(refused.value)
            assert fake.subscriptions["LEVELONE_OPTIONS"] == {OPTION, "AAPL  261218P00200000"}

            # A service the login may not use (code 11): its symbols are refused, the stream keeps going.
            fake.command_codes[("NYSE_BOOK", "ADD")] = (11, "SERVICE_NOT_AVAILABLE")
            stream._nyse = frozenset({"IBM"})
            with pytest.raises(SymbolsRefused) as refused:
                await stream.subscribe(["IBM", "MSFT"], kind="depth")
            assert refused.value.symbols == ["IBM"]
            assert fake.subscriptions["NASDAQ_BOOK"] == {"AAPL", "MSFT"}
            assert "SERVICE_NOT_AVAILABLE" in stream.last_command_error
            events = stream.events()
            await fake.send_data("LEVELONE_OPTIONS", [{"key": OPTION, "2": 1.0}])
            (quote,) = await collect(events, 1)
            assert quote.symbol == OPTION

    run(main())


def test_fetch_bars_and_option_chain_hooks_read_schwab_market_data(monkeypatch):
    from livedata_core.plugin_kit.plugins import get_broker
    from livedata_core.plugin_kit.tokens import MemoryTokenStore
    from livedata_schwab.testing import fake_candle
    from livedata_tos import plugin
    from livedata_tos.testing import FakeSchwabClient

    async def main():
        async with FakeStreamer() as fake:
            client = FakeSchwabClient(fake)
            monkeypatch.setattr(plugin, "make_client", lambda *a, **kw: client)
            broker = get_broker("tos")
            ctx = broker.make_context({"streamer_url": fake.url}, MemoryTokenStore())
            await fake.advance(300)
            end = fake.clock.ms
            bars = await broker.call("fetch_bars", ctx=ctx, symbol="/ES", interval=60, start=end - 300_000, end=end)
            assert [b.start for b in bars] == [end - m * 60_000 for m in (5, 4, 3, 2, 1)]
            assert all(not b.backfilled and b.close == fake_candle("/ES", b.start)["close"] for b in bars)
            chain = await broker.call("option_chain", ctx=ctx, underlying="AAPL", expiration="2027-01-15", strikes=1)
            assert chain == ["AAPL  270115C00200000", "AAPL  270115P00200000"]
            with pytest.raises(SymbolsRefused, match="NOPE"):
                await broker.call("option_chain", ctx=ctx, underlying="NOPE", expiration=None, strikes=None)

    run(main())


def test_a_chain_contract_the_streamer_cannot_take_is_left_out_and_logged(monkeypatch, caplog):
    from livedata_core.plugin_kit.plugins import get_broker
    from livedata_core.plugin_kit.tokens import MemoryTokenStore
    from livedata_tos import plugin
    from livedata_tos.testing import FakeSchwabClient

    async def main():
        async with FakeStreamer() as fake:
            client = FakeSchwabClient(fake)
            chain = client.schwab.chains["AAPL"]
            strikes = next(iter(chain["callExpDateMap"].values()))
            strikes["200.0"].append({"putCall": "CALL", "symbol": "AAPL_121826C200"})  # not an OCC symbol
            monkeypatch.setattr(plugin, "make_client", lambda *a, **kw: client)
            broker = get_broker("tos")
            ctx = broker.make_context({"streamer_url": fake.url}, MemoryTokenStore())
            contracts = await broker.call("option_chain", ctx=ctx, underlying="AAPL", expiration="2026-12-18", strikes=1)
            assert contracts == ["AAPL  261218C00200000", "AAPL  261218P00200000"]
            assert "1 contract symbol(s) the streamer does not take were left out" in caplog.text

    run(main())
