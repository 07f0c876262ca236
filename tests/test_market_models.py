"""The market-data models beyond quotes: OptionQuote, Bar, Depth (issue 15), and the stream kinds a broker declares."""

import json

import attrs
import pytest

from livedata_core import BrokerInfo, PluginError
from livedata_core.models import (
    MODEL_FOR_TYPE, Bar, Depth, DepthLevel, OptionQuote, Quote, check_model, from_dict, make_option_quote, model_for,
    to_dict,
)
from livedata_core.redis_io.publisher.encoding import dumps


def _option(**over):
    values = dict(broker="tos", symbol="AAPL  261218C00200000", bid=1.0, ask=1.1, last=1.05, open_interest=1200,
                  implied_volatility=0.31, delta=0.52, gamma=0.01, theta=-0.05, vega=0.2, rho=0.03,
                  theoretical_value=1.06, underlying_price=201.5, strike=200, expiration="2026-12-18",
                  put_call="call", multiplier=100, underlying="AAPL", timestamp=1)
    values.update(over)
    return OptionQuote(**values)


def test_an_option_quote_round_trips_and_is_told_from_a_quote_by_its_payload():
    option = _option()
    data = json.loads(dumps(to_dict(check_model(option))))
    assert data["delta"] == 0.52 and data["expiration"] == "2026-12-18" and data["put_call"] == "call"
    assert model_for("quotes", data) is OptionQuote and from_dict(OptionQuote, data) == option
    plain = to_dict(Quote(broker="tos", symbol="AAPL"))
    assert model_for("quotes", plain) is Quote and MODEL_FOR_TYPE["quotes"] is Quote


def test_an_equity_quote_payload_does_not_grow():
    assert list(to_dict(Quote(broker="tos", symbol="AAPL"))) == [f.name for f in attrs.fields(Quote)]
    assert "strike" not in to_dict(Quote(broker="tos", symbol="AAPL"))
    # every Quote field is in an OptionQuote, in the same order, before the option's own
    quote_fields = [f.name for f in attrs.fields(Quote)]
    option_fields = [f.name for f in attrs.fields(OptionQuote)]
    assert option_fields[:14] == quote_fields[:14] and option_fields[-4:] == quote_fields[-4:]


@pytest.mark.parametrize("field, value, message", [
    ("put_call", "C", "'C' is not 'call' or 'put'"),
    ("expiration", "20261218", "not an ISO date"),
    ("delta", float("nan"), "not a finite number"),
    ("strike", "200", "must be a number"),
])
def test_bad_option_fields_are_named(field, value, message):
    with pytest.raises(ValueError, match=f"invalid OptionQuote: {field}: .*{message}"):
        check_model(_option(**{field: value}))


def test_make_option_quote_is_the_keyword_constructor_positionally():
    values = {f.name: f"v-{f.name}" for f in attrs.fields(OptionQuote)}
    assert make_option_quote(*values.values()) == OptionQuote(**values)


def _bar(**over):
    values = dict(broker="tos", symbol="/ES", interval=60, start=1_700_000_040_000, open=1.0, high=2.0, low=0.5,
                  close=1.5, volume=100, seq=7)
    values.update(over)
    return Bar(**values)


def test_a_bar_round_trips_through_json():
    bar = _bar()
    data = json.loads(dumps(to_dict(check_model(bar))))
    assert data == {**data, "interval": 60, "start": 1_700_000_040_000, "close": 1.5, "backfilled": False, "seq": 7}
    assert model_for("bars", data) is Bar and from_dict(Bar, data, strict=True) == bar


@pytest.mark.parametrize("over, message", [
    ({"backfilled": 1}, "backfilled: must be true or false"),
    ({"start": 1.5}, "start: must be a whole number"),
    ({"close": float("inf")}, "close: inf is not a finite number"),
])
def test_bad_bar_fields_are_named(over, message):
    with pytest.raises(ValueError, match=message):
        check_model(_bar(**over))


def test_a_bar_payload_without_its_prices_is_refused():
    with pytest.raises(ValueError, match="open: required field missing"):
        from_dict(Bar, {"broker": "x", "symbol": "/ES", "interval": 60, "start": 0, "high": 1, "low": 1, "close": 1},
                  strict=True)


def test_depth_publishes_plain_levels_and_reads_them_back_as_models():
    depth = Depth(broker="tos", symbol="AAPL", bids=[DepthLevel(price=200.0, size=300, count=2)],
                  asks=[DepthLevel(price=200.05, size=100)], book="NASDAQ")
    data = json.loads(dumps(to_dict(check_model(depth))))
    assert data["bids"] == [{"price": 200.0, "size": 300, "count": 2}]
    assert data["asks"] == [{"price": 200.05, "size": 100, "count": None}]
    assert from_dict(Depth, data, strict=True) == depth and model_for("depth", data) is Depth


@pytest.mark.parametrize("bids, message", [
    ([{"price": 1.0, "size": "9"}], r"bids\[0\].size: must be a number"),
    ([{"price": float("nan"), "size": 1}], r"bids\[0\].price: nan is not a finite number"),
    ([{"price": 1.0}], r"bids\[0\]: size missing"),
    ([{"price": 1.0, "size": 1, "mm": "X"}], r"bids\[0\]: unknown key\(s\): mm"),
    ([[1.0, 2.0]], r"bids\[0\]: must be a price level"),
    ("1@2", "bids: must be a list of price levels"),
])
def test_bad_book_levels_are_named(bids, message):
    with pytest.raises(ValueError, match=message):
        from_dict(Depth, {"broker": "x", "symbol": "AAPL", "bids": bids}, strict=True)
    if isinstance(bids, list) and bids and isinstance(bids[0], dict) and set(bids[0]) <= {"price", "size", "count"} and len(bids[0]) > 1:
        with pytest.raises(ValueError, match=message):
            check_model(Depth(broker="x", symbol="AAPL", bids=[DepthLevel(**bids[0])]))


def test_a_broker_declares_the_kinds_it_streams():
    assert BrokerInfo(name="x", capabilities=()).kinds == ("quotes",)
    assert BrokerInfo(name="x", capabilities=(), kinds=["quotes", "bars", "depth"]).kinds == ("quotes", "bars", "depth")
    with pytest.raises(PluginError, match="declares kinds=.*'trades'"):
        BrokerInfo(name="x", capabilities=(), kinds=("quotes", "trades"))
    with pytest.raises(PluginError, match="declares kinds"):
        BrokerInfo(name="x", capabilities=(), kinds=())


# -- the conformance checks of the new kinds fail on what a broken plugin yields --------------------------------

@pytest.mark.parametrize("over, message", [
    ({"start": 1_700_000_040_500}, "not on a whole 60s interval"),
    ({"low": 1.2}, "is not low <= open, close <= high"),
    ({"high": 1.4}, "is not low <= open, close <= high"),
    ({"interval": 0}, "has interval 0"),
    ({"backfilled": True}, "a plugin leaves backfilled False"),
    ({"symbol": "/NQ"}, "which was not subscribed"),
    ({"volume": 5}, "numbers must be float"),
])
def test_check_bar_catches_a_broken_bar(over, message):
    from livedata_core.testing.conformance import check_bar

    good = _bar(volume=100.0, received_at=1_700_000_100_000)
    check_bar(good, "tos", ["/ES"])
    with pytest.raises(AssertionError, match=message):
        check_bar(attrs.evolve(good, **over), "tos", ["/ES"])


def test_check_depth_catches_a_book_in_the_wrong_order():
    from livedata_core.testing.conformance import check_depth

    levels = [DepthLevel(price=1.0, size=1.0), DepthLevel(price=1.01, size=1.0)]
    book = Depth(broker="tos", symbol="AAPL", bids=levels[::-1], asks=levels, received_at=1_700_000_100_000)
    check_depth(book, "tos", ["AAPL"])
    with pytest.raises(AssertionError, match="bids must be best"):
        check_depth(attrs.evolve(book, bids=levels), "tos", ["AAPL"])
    with pytest.raises(AssertionError, match="asks must be best"):
        check_depth(attrs.evolve(book, asks=levels[::-1]), "tos", ["AAPL"])
