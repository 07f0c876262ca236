"""The merge book: partial updates merged per symbol, for the life of a broker instance.

The reconnect tests run the real runner against the tos and ibkr fake servers into a real redis-server: after a
dropped connection, the first quote published for a symbol still carries what was known before (its last price).
"""

from __future__ import annotations

import asyncio
import math

import pytest

from livedata_core.plugin_kit.broker import BrokerContext
from livedata_core.plugin_kit.merge import MergeBook
from livedata_core.runner import Runner, load_config
from livedata_core.plugin_kit.streaming import StreamStats
from livedata_core.testing.published import PublishedCollector
from livedata_core.plugin_kit.tokens import MemoryTokenStore


def test_partial_updates_merge_into_complete_quotes():
    book = MergeBook("acme")
    assert book.merge("AAPL", {"volume": 100}) is None  # no price yet: nothing to publish
    trade = book.merge("AAPL", {"last": 150.0, "last_size": 5, "volume": 1200}, timestamp=1_000)
    quote = book.merge("AAPL", {"bid": 149.9, "ask": 150.1, "bid_size": 3, "ask_size": 4}, received_at=7)
    assert (trade.last, trade.bid) == (150.0, None)
    assert (quote.bid, quote.ask, quote.last, quote.volume, quote.last_size) == (149.9, 150.1, 150.0, 1200.0, 5.0)
    assert (quote.timestamp, quote.received_at, quote.broker, quote.symbol) == (1_000, 7, "acme", "AAPL")
    assert isinstance(quote.bid_size, float)
    cleared = book.merge("AAPL", {"bid": None, "bid_size": None})
    assert (cleared.bid, cleared.bid_size, cleared.ask) == (None, None, 150.1)


def test_zero_means_no_bid_or_not_known_yet_and_crossed_quotes_are_kept():
    book = MergeBook("acme")
    quote = book.merge("X", {"bid": 0, "bid_size": 0, "ask": 0, "ask_size": 2, "last": 0, "open": 0, "high": 0,
                             "low": 0, "close": 0, "mark": 0, "volume": 0})  # fmt: skip
    assert (quote.bid, quote.ask, quote.last, quote.volume) == (None, 0.0, 0.0, 0.0)
    assert (quote.open, quote.high, quote.low, quote.close, quote.mark) == (None,) * 5
    crossed = book.merge("X", {"bid": 10.5, "bid_size": 1, "ask": 10.0})
    assert (crossed.bid, crossed.ask) == (10.5, 10.0)  # published as merged, never corrected


def test_a_bad_value_is_counted_and_the_field_keeps_its_last_value():
    stats = StreamStats()
    book = MergeBook("acme")
    book.merge("X", {"last": 1.0}, stats=stats)
    quote = book.merge("X", {"last": math.nan, "bid": "1.2", "ask": True, "volume": 9}, stats=stats)
    assert (quote.last, quote.bid, quote.ask, quote.volume) == (1.0, None, None, 9.0)
    assert stats.skipped == {"bad value": 3}
    with pytest.raises(ValueError, match="quote X: last must be a finite number or None, was inf"):
        book.merge("X", {"last": math.inf})
    with pytest.raises(KeyError, match="'price' is not a quote field"):
        book.merge("X", {"price": 1.0})


def test_extra_is_merged_and_a_forgotten_symbol_starts_afresh():
    book = MergeBook("acme")
    book.merge("X", {"last": 1.0}, extra={"exchange": "Q", "halted": True})
    quote = book.merge("X", {"bid": 0.9}, extra={"halted": None})
    assert quote.extra == {"exchange": "Q"}
    assert "X" in book and len(book) == 1 and book.get("X") == {"last": 1.0, "bid": 0.9}
    book.forget(["X"])
    assert book.merge("X", {"volume": 5}) is None and book.get("X") == {"volume": 5}


def test_every_broker_context_has_its_own_book_for_its_whole_life():
    a, b = BrokerContext("acme"), BrokerContext("acme", instance="acme_2")
    assert isinstance(a.quotes, MergeBook) and a.quotes is not b.quotes
    assert a.quotes.broker == "acme"


# -- after a reconnect, through the runner and the plugins' fake servers -----------------------------------------


def test_tos_first_quote_after_a_reconnect_keeps_the_fields_known_before(redis_server, monkeypatch):
    from livedata_tos import plugin
    from livedata_tos.testing import FakeSchwabClient, FakeStreamer, FakeTokens

    async def main(collector):
        async with FakeStreamer() as fake:
            monkeypatch.setattr(plugin, "make_client", lambda settings, store, log, status=None: FakeSchwabClient(fake, FakeTokens()))
            table = {"symbols": ["AAPL"], "streamer_url": fake.url, "login_timeout": 2.0, "command_timeout": 2.0,
                     "account_activity": False, "schwab": {"app_key": "k", "app_secret": "s"}}  # fmt: skip
            config = load_config({"redis": {"url": redis_server.url}, "brokers": {"tos": table},
                                  "backoff": {"initial": 0.02, "max": 0.1}}, env={})  # fmt: skip
            runner = Runner(config, token_store=MemoryTokenStore())
            task = asyncio.create_task(runner.run())
            try:
                await fake.wait_for(lambda: fake.subscriptions.get("LEVELONE_EQUITIES") == {"AAPL"})
                await fake.send_data("LEVELONE_EQUITIES", [{"key": "AAPL", "1": 190.0, "2": 190.1, "3": 190.05, "8": 1000}])
                await collector.wait_for_async("quotes", "AAPL", where=lambda q: q.last == 190.05)
                await fake.drop()
                await fake.wait_for(lambda: fake.connected_total == 2 and fake.subscriptions.get("LEVELONE_EQUITIES") == {"AAPL"})
                await fake.send_data("LEVELONE_EQUITIES", [{"key": "AAPL", "1": 190.2}])  # a delta: the bid alone
                after = await collector.wait_for_async("quotes", "AAPL", where=lambda q: q.bid == 190.2)
            finally:
                runner.stop()
                await asyncio.wait_for(task, 10)
            return after[-1]

    with PublishedCollector(redis_server.url) as collector:
        quote = asyncio.run(main(collector))
    assert (quote.bid, quote.ask, quote.last, quote.volume) == (190.2, 190.1, 190.05, 1000.0)


def test_ibkr_first_quote_after_a_reconnect_keeps_the_fields_known_before(redis_server):
    from livedata_ibkr.testing import FakeGateway

    fast = {"tickle_interval": 60.0, "login_wait": 0.3, "max_requests_per_second": 200.0, "heartbeat_timeout": 2.0,
            "ws_auth_timeout": 2.0, "stream_orders": False}  # fmt: skip

    async def main(collector):
        async with FakeGateway() as gw:
            table = {**gw.settings(**fast), "symbols": ["AAPL"], "poll": {"positions": 0, "balances": 0}}
            config = load_config({"redis": {"url": redis_server.url}, "brokers": {"ibkr": table},
                                  "backoff": {"initial": 0.05, "max": 0.2}, "shutdown_timeout": 2.0}, env={})  # fmt: skip
            runner = Runner(config, token_store=MemoryTokenStore())
            task = asyncio.create_task(runner.run())
            try:
                await gw.wait_for(lambda: gw.subscribed(265598), timeout=5)
                await gw.push_quote(265598, {"31": "10.50", "84": "10.49", "86": "10.51", "7762": "5000"})
                await collector.wait_for_async("quotes", "AAPL", where=lambda q: q.last == 10.5)
                await gw.drop_websockets()
                await gw.wait_for(lambda: gw.ws_connections == 2 and gw.subscribed(265598), timeout=5)
                await gw.push_quote(265598, {"84": "10.60"})  # a delta: the bid alone
                after = await collector.wait_for_async("quotes", "AAPL", where=lambda q: q.bid == 10.6)
            finally:
                runner.stop()
                await asyncio.wait_for(task, 10)
            return after[-1]

    with PublishedCollector(redis_server.url) as collector:
        quote = asyncio.run(main(collector))
    assert (quote.bid, quote.ask, quote.last, quote.volume) == (10.6, 10.51, 10.5, 5000.0)
