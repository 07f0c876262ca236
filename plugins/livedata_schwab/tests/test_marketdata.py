"""The Market Data API calls the tos plugin's bar gap filler and option chains use: ``/pricehistory`` and
``/chains`` through the real client over HTTPS against the fake Schwab, and their parsers."""

from __future__ import annotations

import asyncio
import logging

import pytest

from livedata_core.errors import BrokerError, ConfigError, SymbolsRefused
from livedata_core.models import check_model
from livedata_schwab.client import SchwabClient
from livedata_schwab.marketdata import chain_symbols, parse_candles
from livedata_schwab.settings import SchwabSettings
from livedata_schwab.testing import fake_candle

T0 = 1_765_000_020_000 - 1_765_000_020_000 % 60_000  # a minute's start


def test_market_data_url_sits_beside_the_trader_api_unless_given():
    assert SchwabSettings().market_data_url == "https://api.schwabapi.com/marketdata/v1"
    assert SchwabSettings(api_base_url="http://127.0.0.1:9/trader/v1").market_data_url == "http://127.0.0.1:9/marketdata/v1"
    given = SchwabSettings(market_data_base_url="https://proxy.example/md/v1/")
    assert given.market_data_url == "https://proxy.example/md/v1"
    with pytest.raises(ConfigError, match="market_data_base_url"):
        SchwabSettings(market_data_base_url="http://proxy.example/md/v1")  # plain text off this machine: refused


def test_price_history_asks_for_1_minute_candles_between_two_times_and_parses_them(fake_schwab, settings_for, saved_tokens):
    fake_schwab.market_now_ms = lambda: T0 + 10 * 60_000
    fake_schwab.missing_minutes = {("AAPL", T0 + 2 * 60_000)}

    async def main():
        client = SchwabClient(settings_for(), saved_tokens())
        try:
            data = await client.price_history("AAPL", T0, T0 + 5 * 60_000)
        finally:
            await client.aclose()
        return data

    data = asyncio.run(main())
    (request,) = fake_schwab.api_requests("/marketdata/v1/pricehistory")
    assert request["query"] == {"symbol": "AAPL", "periodType": "day", "frequencyType": "minute", "frequency": "1",
                                "startDate": str(T0), "endDate": str(T0 + 5 * 60_000),
                                "needExtendedHoursData": "true"}  # fmt: skip
    assert request["auth"].startswith("Bearer AT-secret-access-")
    bars = parse_candles(data, broker="tos", symbol="AAPL", interval=60, start=T0, end=T0 + 5 * 60_000)
    # [start, end): the 5th minute is left out; the missing minute is missing, never invented.
    assert [b.start for b in bars] == [T0, T0 + 60_000, T0 + 3 * 60_000, T0 + 4 * 60_000]
    for bar in bars:
        check_model(bar)
        c = fake_candle("AAPL", bar.start)
        assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (c["open"], c["high"], c["low"], c["close"], c["volume"])
        assert not bar.backfilled and bar.interval == 60 and bar.broker == "tos" and bar.seq is None


def test_candles_that_cannot_be_read_are_logged_and_left_out(caplog):
    caplog.set_level(logging.WARNING)
    good = fake_candle("/ES", T0)
    data = {"candles": [good, {**good, "datetime": T0 + 60_000, "open": None}, {**good, "datetime": "x"},
                        {**good, "datetime": T0 + 120_000, "high": 1.0, "low": 2.0}, "junk"], "empty": False}  # fmt: skip
    bars = parse_candles(data, broker="tos", symbol="/ES", interval=60, start=T0, end=T0 + 600_000)
    assert [b.start for b in bars] == [T0]
    assert "4 candle(s) could not be read" in caplog.text
    assert parse_candles({"symbol": "X", "empty": True}, broker="tos", symbol="X", interval=60, start=0, end=1) == []
    with pytest.raises(BrokerError, match="without a candles list"):
        parse_candles({"candles": "x"}, broker="tos", symbol="X", interval=60, start=0, end=1)


def test_the_history_of_another_symbol_is_refused_never_labelled_with_the_one_asked():
    msft = {"symbol": "MSFT", "empty": False, "candles": [fake_candle("MSFT", T0)]}
    with pytest.raises(BrokerError, match="for AAPL answered with the candles of 'MSFT'"):
        parse_candles(msft, broker="tos", symbol="AAPL", interval=60, start=T0, end=T0 + 60_000)
    with pytest.raises(BrokerError, match="candles of 3"):
        parse_candles({**msft, "symbol": 3}, broker="tos", symbol="AAPL", interval=60, start=T0, end=T0 + 60_000)
    # the one asked, but for case; a contract of an asked future root; an answer without a symbol: read
    for answered, asked in (("msft", "MSFT"), ("/ESZ26", "/ES")):
        bars = parse_candles({**msft, "symbol": answered}, broker="tos", symbol=asked, interval=60, start=T0, end=T0 + 60_000)
        assert [(b.symbol, b.start) for b in bars] == [(asked, T0)]
    no_symbol = {"candles": msft["candles"]}
    assert len(parse_candles(no_symbol, broker="tos", symbol="AAPL", interval=60, start=T0, end=T0 + 60_000)) == 1


def test_option_chain_by_expiration_and_strike_count_and_an_unknown_underlying(fake_schwab, settings_for, saved_tokens):
    async def main():
        client = SchwabClient(settings_for(), saved_tokens())
        try:
            chain = await client.option_chain("AAPL", from_date="2026-12-18", to_date="2026-12-18", strike_count=2)
            unknown = await client.option_chain("NOPE")
        finally:
            await client.aclose()
        return chain, unknown

    chain, unknown = asyncio.run(main())
    request = fake_schwab.api_requests("/marketdata/v1/chains")[0]
    assert request["query"] == {"symbol": "AAPL", "contractType": "ALL", "fromDate": "2026-12-18",
                                "toDate": "2026-12-18", "strikeCount": "2"}  # fmt: skip
    assert chain_symbols(chain, "AAPL") == ["AAPL  261218C00195000", "AAPL  261218C00200000",
                                            "AAPL  261218P00195000", "AAPL  261218P00200000"]  # fmt: skip
    with pytest.raises(SymbolsRefused, match="no option chain for 'NOPE'") as refused:
        chain_symbols(unknown, "NOPE")
    assert refused.value.symbols == ["NOPE"]
    with pytest.raises(SymbolsRefused, match="no contracts"):
        chain_symbols({"status": "SUCCESS", "callExpDateMap": {}, "putExpDateMap": {}}, "AAPL")
    with pytest.raises(BrokerError, match="not an object"):
        chain_symbols({"callExpDateMap": []}, "AAPL")
