"""The recorded messages of the Schwab reference, replayed through the parsers."""

from __future__ import annotations

import json

import pytest

from livedata_core.errors import AuthError, BrokerError, ConnectionLimit, InvalidIdentifier, StreamError
from livedata_core.models import ORDER_STATUSES, from_dict, to_dict, Quote
from livedata_core.plugin_kit.streaming import StreamStats
from livedata_tos.activity import ActivityParser, decode_number
from livedata_tos.protocol import StreamerInfo, error_for_code
from livedata_tos.quotes import QuoteBook, request_fields
from livedata_tos.symbols import EQUITIES, FUTURES, normalize_symbol, service_for
from livedata_tos.testing import activity_item, number

from livedata_tos.recorded import ES, GUIDE_L1, MSFT


def book(*symbols: str) -> tuple[QuoteBook, StreamStats]:
    stats = StreamStats()
    b = QuoteBook("tos", stats)
    b.want(symbols)
    return b, stats


def test_guide_level_one_frame_gives_one_complete_quote_per_item():
    b, stats = book("SCHW", "SPY")
    entry = GUIDE_L1["data"][0]
    quotes = b.apply(entry["service"], entry["content"], entry["timestamp"], 1)
    assert [q.symbol for q in quotes] == ["SCHW", "SPY"]
    schw = quotes[0]
    assert (schw.bid, schw.ask, schw.last, schw.bid_size, schw.ask_size, schw.volume, schw.high) == (
        76.08, 76.49, 76.44, 3.0, 1.0, 5414735.0, 76.47)
    assert schw.timestamp == 1714949592301  # no quote/trade time requested: the frame's time
    assert isinstance(schw.volume, float)
    assert not stats.skipped


def test_quotes_carry_the_instance_the_book_was_made_for():
    # The stream hook passes ctx.instance, so the runner has no per-quote stamp to do; without it, None as before.
    entry = GUIDE_L1["data"][0]
    named = QuoteBook("tos", StreamStats(), instance="tos_ira")
    plain = QuoteBook("tos", StreamStats())
    for b in (named, plain):
        b.want(["SCHW", "SPY"])
    assert {q.instance for q in named.apply(entry["service"], entry["content"], entry["timestamp"], 1)} == {"tos_ira"}
    assert {q.instance for q in plain.apply(entry["service"], entry["content"], entry["timestamp"], 1)} == {None}


def test_recorded_msft_maps_every_requested_field_and_skips_nothing_it_asked_for():
    b, stats = book("MSFT")
    wanted = set(request_fields(EQUITIES).split(","))
    item = {k: v for k, v in MSFT.items() if not k.isdigit() or k in wanted}
    (q,) = b.apply(EQUITIES, [item], 1715777956144, 5)
    assert (q.bid, q.ask, q.last, q.bid_size, q.ask_size, q.volume, q.last_size) == (417.01, 417.08, 417.09, 1, 0, 162750, 10)
    assert (q.open, q.high, q.low, q.close, q.mark) == (None, None, None, 415.81, 417.01)  # pre-market 0s
    assert q.timestamp == 1715777955574  # the later of quote time (34) and trade time (35)
    assert q.extra == {"delayed": True}
    assert q.received_at == 5
    assert not stats.skipped


def test_unrequested_fields_are_counted_not_fatal():
    b, stats = book("MSFT")
    (q,) = b.apply(EQUITIES, [MSFT], 1, 1)
    assert q.bid == 417.01
    assert stats.skipped["LEVELONE_EQUITIES unknown field"] > 10


def test_recorded_futures_item():
    b, stats = book("/ES")
    (q,) = b.apply(FUTURES, [ES], 1719002950099, 1)
    assert (q.bid, q.ask, q.last, q.bid_size, q.ask_size, q.volume, q.last_size) == (5536.5, 5537, 5536.75, 61, 112, 1250270, 2)
    assert (q.high, q.low, q.close, q.open, q.mark) == (5550.75, 5519, 5544.5, 5545, 5536.75)
    assert q.timestamp == 1719002947349
    b.apply(FUTURES, [{"key": "/ES", "34": "/ESU24"}], 1, 1)
    (q,) = b.apply(FUTURES, [{"key": "/ES", "1": 5537.0}], 1, 1)
    assert q.extra == {"active_symbol": "/ESU24"} and q.bid == 5537.0 and q.ask == 5537


def test_zero_prices_are_published_as_null():
    b, stats = book("X", "/ES")
    (q,) = b.apply(EQUITIES, [{"key": "X", "1": 0, "2": 0, "4": 0, "5": 3, "10": 0, "11": 0, "12": 0, "17": 0, "33": 0}], 1, 1)
    assert (q.bid, q.ask, q.bid_size, q.ask_size) == (None, 0.0, 0.0, 3.0)  # ask 0 with size 3 is a quote
    assert (q.open, q.high, q.low, q.close, q.mark) == (None,) * 5
    (q,) = b.apply(EQUITIES, [{"key": "X", "1": 10.5, "10": 11.0}], 1, 1)
    assert (q.bid, q.high, q.low) == (10.5, 11.0, None)
    (q,) = b.apply(EQUITIES, [{"key": "X", "1": 0.0}], 1, 1)
    assert q.bid is None and q.bid_size == 0.0
    (f,) = b.apply(FUTURES, [{"key": "/ES", "1": 0, "4": 0, "12": 0, "13": 0, "14": 0, "18": 0, "24": 0}], 1, 1)
    assert (f.bid, f.high, f.low, f.close, f.open, f.mark) == (None,) * 6
    assert not stats.skipped


def test_deltas_merge_into_complete_quotes():
    b, stats = book("X")
    b.apply(EQUITIES, [{"key": "X", "1": 20, "2": 25, "3": 997}], 1, 1)
    (q,) = b.apply(EQUITIES, [{"key": "X", "2": 28}], 2, 2)
    assert (q.bid, q.ask, q.last) == (20, 28, 997)


def test_bad_values_and_unknown_symbols_are_counted_and_the_rest_is_used():
    b, stats = book("X")
    quotes = b.apply(EQUITIES, [{"key": "X", "1": "oops", "2": 5.0, "34": -1}, {"key": "NOPE", "1": 1}, "junk"], 1, 1)
    assert len(quotes) == 1 and quotes[0].ask == 5.0 and quotes[0].bid is None
    assert stats.skipped["LEVELONE_EQUITIES bad value"] == 2
    assert stats.skipped["level-one data for a symbol not subscribed"] == 1
    assert stats.skipped["level-one item is not an object"] == 1
    assert b.apply(EQUITIES, {"not": "a list"}, 1, 1) == []


def test_quote_payload_round_trips_through_the_core_model():
    b, _ = book("SCHW", "SPY")
    entry = GUIDE_L1["data"][0]
    q = b.apply(entry["service"], entry["content"], entry["timestamp"], 1)[0]
    assert from_dict(Quote, json.loads(json.dumps(to_dict(q)))) == q


# --- account activity -----------------------------------------------------------------------------------

CREATED = {"SchwabOrderID": "1000000001", "AccountNumber": "12345678", "BaseEvent": {"EventType": "OrderCreated",
    "OrderCreatedEventEquityOrder": {"Order": {"OrderTypeCode": "Limit", "LimitPrice": {"lo": "220470000", "signScale": 12},
    "OrderLegs": [{"Quantity": {"lo": "1000000", "signScale": 12}, "BuySellCode": "Buy",
                   "Security": {"Symbol": "AMD", "CUSIP": "007903107"}}]}}}}  # fmt: skip
FILLED = {"SchwabOrderID": "1000000001", "AccountNumber": "12345678", "BaseEvent": {"EventType": "OrderFillCompleted",
    "OrderFillCompletedEventOrderLegQuantityInfo": {"LegStatus": "LegClosed", "QuantityInfo": {"ExecutionID": "E1",
    "CumulativeQuantity": {"lo": "1000000", "signScale": 12}, "LeavesQuantity": {"signScale": 12},
    "AveragePrice": {"lo": "213409100", "signScale": 12}}, "ExecutionInfo": {"ExecutionPrice": {"lo": "213409100", "signScale": 12},
    "ExecutionQuantity": {"lo": "1000000", "signScale": 12}, "ExecutionTimeStamp": {"DateTimeString": "2025-03-20 13:43:45.620"},
    "ExecutionTransType": "Fill"}, "OrderInfoForTransactionPosting": {"Symbol": "AAPL", "BuySellCode": "Buy",
    "OrderTypeCode": "Limit", "LimitPrice": {"lo": "214000000", "signScale": 12}}}}}  # fmt: skip


@pytest.mark.parametrize(
    "value, expected",
    [({"lo": "220470000", "signScale": 12}, 220.47), ({"lo": "1000000", "signScale": 12}, 1.0),
     ({"lo": "220470000", "signScale": 13}, -220.47), ({"signScale": 12}, 0.0), ({"lo": "7"}, 7.0),
     (3, 3.0), ("2.5", 2.5), ({"lo": "x"}, None), (None, None)],  # fmt: skip
)
def test_decode_number(value, expected):
    assert decode_number(value) == expected


def test_order_created_and_fill_events():
    stats = StreamStats()
    p = ActivityParser("tos")
    created, accepted, filled = p.apply(
        [activity_item(1, "12345678", "OrderCreated", CREATED),
         activity_item(2, "12345678", "OrderAccepted", {"SchwabOrderID": "1000000001", "Status": "Open"}),
         activity_item(3, "12345678", "OrderFillCompleted", FILLED)], 0, 9, stats)  # fmt: skip
    assert (created.account_id, created.order_id, created.symbol, created.side, created.order_type) == (
        "12345678", "1000000001", "AMD", "buy", "limit")
    assert (created.price, created.quantity, created.status, created.event, created.broker_status) == (
        220.47, 1.0, "pending", "created", "OrderCreated")
    assert created.timestamp is None and created.received_at == 9
    assert (accepted.status, accepted.extra["schwab_status"]) == ("open", "Open")
    assert (filled.status, filled.filled_quantity, filled.remaining_quantity, filled.average_fill_price) == (
        "filled", 1.0, 0.0, 213.4091)
    assert filled.symbol == "AAPL" and filled.extra["execution_time"] == "2025-03-20 13:43:45.620"
    assert not stats.skipped
    assert all(o.status in ORDER_STATUSES for o in (created, accepted, filled))


def test_partial_fill_and_cancel_events():
    stats = StreamStats()
    p = ActivityParser("tos")
    partial = json.loads(json.dumps(FILLED))
    partial["BaseEvent"]["OrderFillCompletedEventOrderLegQuantityInfo"]["QuantityInfo"]["LeavesQuantity"] = number(4)
    o1, o2, o3 = p.apply([activity_item(4, "1", "OrderFillCompleted", partial),
                          activity_item(5, "1", "CancelAccepted", {"SchwabOrderID": "9"}),
                          activity_item(6, "1", "OrderUROutCompleted", {"SchwabOrderID": "9"})], 0, 1, stats)  # fmt: skip
    assert (o1.status, o1.remaining_quantity) == ("partially_filled", 4.0)
    assert (o2.status, o3.status) == ("pending_cancel", "canceled")


def test_unreadable_activity_is_published_as_unknown_and_counted():
    stats = StreamStats()
    p = ActivityParser("tos")
    orders = p.apply([activity_item(1, "12345678", "OrderCreated", "{not json"),
                      activity_item(2, "12345678", "SomethingNew", {"SchwabOrderID": "77"}),
                      {"seq": 3, "2": "OrderAccepted", "3": None},
                      "garbage"], 0, 1, stats)  # fmt: skip
    assert [o.status for o in orders] == ["unknown"] * 4
    assert [o.broker_status for o in orders] == ["OrderCreated", "SomethingNew", "OrderAccepted", None]
    assert orders[1].order_id == "77" and orders[1].account_id == "12345678"
    assert orders[2].account_id == "unknown"
    assert stats.skipped["account activity incomplete (published as unknown)"] == 3
    assert stats.skipped["account activity item is not an object (published as unknown)"] == 1


def test_schwab_py_fixture_order_entry_request():
    stats = StreamStats()
    (o,) = ActivityParser("tos").apply([{"seq": 1, "key": "k", "1": "1001", "2": "OrderEntryRequest", "3": ""}], 0, 1, stats)
    assert (o.account_id, o.status, o.broker_status) == ("1001", "pending", "OrderEntryRequest")


def test_repeated_seq_after_reconnect_is_published_once():
    stats = StreamStats()
    p = ActivityParser("tos")
    item = activity_item(1, "12345678", "OrderCreated", CREATED)
    assert len(p.apply([item], 0, 1, stats)) == 1
    assert p.apply([item], 0, 1, stats) == []
    other = activity_item(1, "12345678", "OrderCreated", dict(CREATED, SchwabOrderID="2"))
    assert len(p.apply([other], 0, 1, stats)) == 1  # seq restarted: a different order is not a repeat


# --- symbols, codes, streamerInfo -------------------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [("aapl", "AAPL"), (" brk.b ", "BRK.B"), ("$spx", "$SPX"),
                                           ("/es", "/ES"), ("/ESZ24", "/ESZ24"), ("SPY", "SPY"),
                                           ("AAPL  251219C00200000", "AAPL  251219C00200000"),
                                           ("spxw 251208c06880000", "SPXW  251208C06880000"),
                                           ("./ozcz23c565", "./OZCZ23C565"), ("eur/usd", "EUR/USD")])  # fmt: skip
def test_normalize_symbol(raw, expected):
    assert normalize_symbol(raw) == expected


@pytest.mark.parametrize("raw", ["", "AAPL  2512C00200000", "./OZC", "EUR/USD/X", "A*", "$", "/", "1ABC"])
def test_normalize_symbol_refuses(raw):
    with pytest.raises(InvalidIdentifier):
        normalize_symbol(raw)


def test_service_routing():
    assert service_for("/ESZ24") == FUTURES and service_for("$SPX") == EQUITIES and service_for("AAPL") == EQUITIES
    assert service_for("AAPL  251219C00200000") == "LEVELONE_OPTIONS"
    assert service_for("./OZCZ23C565") == "LEVELONE_FUTURES_OPTIONS" and service_for("EUR/USD") == "LEVELONE_FOREX"


def test_codes_map_to_errors():
    assert error_for_code(0, "ok", "ADMIN", "LOGIN") is None
    assert isinstance(error_for_code(3, "Login Denied.", "ADMIN", "LOGIN"), AuthError)
    limit = error_for_code(12, "Max connections", "ADMIN", "LOGIN", connection_limit_retry=42)
    assert isinstance(limit, ConnectionLimit) and limit.retry_after == 42
    assert "another streamer is already connected" in str(limit)
    assert isinstance(error_for_code(30, "stop", "ADMIN", ""), StreamError)
    err = error_for_code(19, "too many", "LEVELONE_EQUITIES", "ADD")
    assert type(err) is BrokerError and "REACHED_SYMBOL_LIMIT" in str(err)


def test_streamer_info_from_user_preference():
    pref = {"streamerInfo": [{"streamerSocketUrl": "wss://streamer-api.schwab.com/ws", "schwabClientCustomerId": "c" * 64,
            "schwabClientCorrelId": "x", "schwabClientChannel": "N9", "schwabClientFunctionId": "APIAPP"}]}  # fmt: skip
    info = StreamerInfo.from_preference(pref)
    assert (info.url, info.channel, info.function_id) == ("wss://streamer-api.schwab.com/ws", "N9", "APIAPP")
    assert "c" * 64 not in repr(info)
    with pytest.raises(BrokerError):
        StreamerInfo.from_preference({"accounts": []})


# --- order status: the same mapping as the Schwab REST plugin ---------------------------------------------

from livedata_schwab import parsers as schwab_parsers  # noqa: E402
from livedata_tos.activity import SCHWAB_STATUSES, status_for_word  # noqa: E402


def _variants(word: str) -> list[str]:
    camel = "".join(part.capitalize() for part in word.split("_"))
    return [word, word.lower(), word.replace("_", " ").title(), camel]


@pytest.mark.parametrize("word", SCHWAB_STATUSES)
@pytest.mark.parametrize("filled", [None, 0.0, 2.0])
def test_status_words_map_exactly_as_the_schwab_rest_plugin(word, filled):
    expected = schwab_parsers.order_status(word, filled)
    assert [status_for_word(v, filled) for v in _variants(word)] == [expected] * 4


def test_tos_knows_every_word_the_schwab_rest_mapping_knows():
    known = set(getattr(schwab_parsers, "_PENDING", ())) | set(getattr(schwab_parsers, "_STATUS", ()))
    assert known, "livedata_schwab.parsers no longer has _PENDING/_STATUS: update this test"
    assert known <= set(SCHWAB_STATUSES)


@pytest.mark.parametrize(
    "word, expected",
    [("ACCEPTED", "pending"), ("PENDING_REPLACE", "open"), ("AWAITING_UR_OUT", "pending_cancel"),
     ("PENDING_RECALL", "pending"), ("UNKNOWN", "unknown"), ("Open", "open"), ("Working", "open")],  # fmt: skip
)
def test_stream_status_words_agree_with_rest_for_the_words_that_used_to_differ(word, expected):
    (o,) = ActivityParser("tos").apply(
        [activity_item(1, "12345678", "OrderMonitorUpdated", {"SchwabOrderID": "5", "Status": word})], 0, 1, StreamStats())
    assert (o.status, o.extra["schwab_status"]) == (expected, word)


def test_implied_statuses_follow_the_schwab_mapping():
    stats = StreamStats()
    orders = ActivityParser("tos").apply(
        [activity_item(i, "1", t, {"SchwabOrderID": "5"}) for i, t in enumerate(
            ["OrderEntryRequest", "OrderCreated", "OrderAccepted", "CancelAccepted", "OrderUROutCompleted"])],
        0, 1, stats)  # fmt: skip
    assert [o.status for o in orders] == ["pending", "pending", "pending", "pending_cancel", "canceled"]
    (working,) = ActivityParser("tos").apply(
        [activity_item(1, "1", "OrderMonitorUpdated", {"SchwabOrderID": "5", "Status": "WORKING",
                                                       "CumulativeQuantity": number(2)})], 0, 1, stats)  # fmt: skip
    assert working.status == "partially_filled"  # as REST: working with a filled quantity


@pytest.mark.parametrize("what", ["bar", "book"])
def test_chart_and_book_items_that_cannot_be_a_wanted_symbols_model_are_counted_by_reason(what):
    from livedata_tos.bars import BarParser
    from livedata_tos.books import BookParser
    from livedata_tos.symbols import CHART_EQUITY, NASDAQ_BOOK

    stats = StreamStats()
    parser, service = (BarParser("tos", stats), CHART_EQUITY) if what == "bar" else (BookParser("tos", stats), NASDAQ_BOOK)
    parser.want(["MSFT", "AAPL"])
    parser.forget(["AAPL"])
    good = {"key": "MSFT", "1": 1, "2": 421.65, "3": 421.79, "4": 421.65, "5": 421.7, "6": 26.0, "7": 1715903940000}
    if what == "book":
        good = {"key": "MSFT", "1": 1715908546000, "2": [{"0": 421.6, "1": 300, "2": 2}], "3": [{"0": 421.7, "1": 100, "2": 1}]}
    assert parser.apply(service, {"not": "a list"}, None, 1) == []
    out = parser.apply(service, [good, "text", {"key": 5}, {"key": "AAPL"}, {"key": "IBM"}, {**good}], None, 1)
    assert [model.symbol for model in out] == ["MSFT", "MSFT"]
    assert stats.skipped == {f"{what} content is not a list": 1, f"malformed {what}": 2,
                             f"{what} for a symbol not subscribed": 2}  # fmt: skip
