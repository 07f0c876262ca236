import json

import attrs

import pytest

from livedata_core.models import (
    Account,
    Balance,
    OptionQuote,
    Order,
    Position,
    Quote,
    Transaction,
    from_dict,
    make_option_quote,
    make_quote,
    quote_builder,
    to_dict,
)
from livedata_core.redis_io.publisher.encoding import dumps


def test_quote_round_trips_through_json():
    quote = Quote(broker="demo", symbol="AAPL", bid=1.0, ask=2.0, last=1.5, volume=10.0, timestamp=1)
    data = json.loads(dumps(to_dict(quote)))
    assert data["bid"] == 1.0 and data["symbol"] == "AAPL" and data["broker"] == "demo"
    assert isinstance(data["received_at"], int)
    assert from_dict(Quote, data) == quote


def test_unknown_keys_are_ignored_so_old_consumers_keep_working():
    data = {"broker": "x", "account_id": "1", "cash": 5, "a_field_from_the_future": [1, 2]}
    assert from_dict(Balance, data).cash == 5.0


def test_wrong_types_name_the_field():
    with pytest.raises(Exception) as info:
        from_dict(Order, {"broker": "x", "account_id": "1", "order_id": "9", "quantity": "lots"})
    assert "quantity" in str(info.value)


def test_models_are_frozen():
    quote = Quote(broker="demo", symbol="AAPL")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        quote.bid = 3.0  # type: ignore[misc]


@pytest.mark.parametrize("cls", [Quote, Position, Balance, Order, Transaction, Account])
def test_to_dict_has_every_field_in_declaration_order(cls):
    # to_dict is generated per class for speed; it must stay exactly attrs.asdict (shallow) of every model.
    required = {f.name: f"v-{f.name}" for f in attrs.fields(cls) if f.default is attrs.NOTHING}
    model = cls(**required)
    assert to_dict(model) == attrs.asdict(model, recurse=False)
    assert list(to_dict(model)) == [f.name for f in attrs.fields(cls)]


def test_to_dict_refuses_what_is_not_a_model():
    with pytest.raises(TypeError, match="not a livedata model: dict"):
        to_dict({"broker": "x"})


def test_make_quote_builds_the_same_frozen_quote_as_the_keyword_constructor():
    values = {f.name: f"v-{f.name}" for f in attrs.fields(Quote)}
    fast = make_quote(*values.values())
    assert fast == Quote(**values) and hash(fast) == hash(Quote(**values))
    assert to_dict(fast) == values
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fast.bid = 3.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        make_quote("demo", "AAPL")  # every field is required: a short call cannot silently shift fields


@pytest.mark.parametrize("cls", [Quote, OptionQuote])
def test_a_quote_builder_filled_field_by_field_becomes_the_model_itself(cls):
    values = {f.name: f"v-{f.name}" for f in attrs.fields(cls)}
    builder = quote_builder(cls)
    assert builder is not None and quote_builder(cls) is builder  # CPython allows the swap; one class per model
    obj = object.__new__(builder)
    for name, value in reversed(values.items()):  # any order
        setattr(obj, name, value)
    obj.__class__ = cls
    assert type(obj) is cls and obj == cls(**values) and hash(obj) == hash(cls(**values))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        obj.symbol = "X"  # type: ignore[misc]


@pytest.mark.parametrize(("cls", "factory"), [(Quote, make_quote), (OptionQuote, make_option_quote)])
def test_positional_factories_give_the_model_itself_equal_repr_frozen_and_picklable(cls, factory):
    import pickle

    values = {f.name: f"v-{f.name}" for f in attrs.fields(cls)}
    fast, slow = factory(*values.values()), cls(**values)
    # built through a mutable twin class and __class__ assignment: what comes out is the model, nothing else
    assert type(fast) is cls and fast == slow and repr(fast) == repr(slow) and hash(fast) == hash(slow)
    assert "twin" in factory.__code__.co_names  # the swap was allowed here (CPython), not the slower fallback
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fast.symbol = "X"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fast.__class__ = object  # type: ignore[assignment]
    assert pickle.loads(pickle.dumps(fast)) == slow
    assert attrs.evolve(fast, bid=1.0).bid == 1.0
    left_out = factory(*list(values.values())[:-1])  # instance may be left out: the runner fills it in
    assert left_out.instance is None and type(left_out) is cls


def test_plain_payloads_and_payloads_needing_conversion_encode_the_same_way():
    import datetime as dt
    import decimal

    assert dumps({"a": 1.5, "b": None}) == b'{"a":1.5,"b":null}'
    assert dumps({"d": decimal.Decimal("1.25"), "day": dt.date(2026, 1, 2), 3: {"x"}}) == b'{"d":1.25,"day":"2026-01-02","3":["x"]}'
    with pytest.raises(TypeError, match="bytes"):
        dumps({"raw": b"\x00"})


def test_a_payload_is_read_leniently_and_published_strictly_by_the_same_rules():
    newer = {"broker": "x", "symbol": "AAPL", "bid": 1, "a_field_from_the_future": 1}
    assert from_dict(Quote, newer).bid == 1.0  # a consumer keeps working when a field is added
    with pytest.raises(ValueError, match="unknown key\\(s\\): a_field_from_the_future"):
        from_dict(Quote, newer, strict=True)
    strict = from_dict(Quote, {"broker": "x", "symbol": "AAPL", "bid": 1}, strict=True)
    assert strict.bid == 1.0 and type(strict.bid) is float  # a whole number is a number
    with pytest.raises(ValueError, match="bid: must be a number, was str '1.5'"):
        from_dict(Quote, {"broker": "x", "symbol": "AAPL", "bid": "1.5"}, strict=True)


NUMBER_FIELDS = [f.name for f in attrs.fields(Quote) if f.name not in ("broker", "symbol", "extra", "instance")]


@pytest.mark.parametrize("field", NUMBER_FIELDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), "1.5", [1]])
def test_the_fast_quote_check_sends_every_bad_number_field_to_the_full_check(field, bad):
    from livedata_core.models import check_model, finite_quote

    good = Quote(broker="x", symbol="AAPL", bid=1.0, ask=1.1, last=1.05, volume=10.0, timestamp=1)
    assert finite_quote(good) and check_model(good) is good
    quote = attrs.evolve(good, **{field: bad})
    assert not finite_quote(quote)
    with pytest.raises(ValueError, match=f"{field}: "):
        check_model(quote)


def test_the_fast_quote_check_is_only_a_shortcut():
    from livedata_core.models import check_model, finite_quote

    huge = Quote(broker="x", symbol="AAPL", bid=1e308, ask=1e308)  # finite, but their sum is not
    assert not finite_quote(huge) and check_model(huge) is huge
    extra = Quote(broker="x", symbol="AAPL", extra={"legs": [1.0, float("nan")]})
    with pytest.raises(ValueError, match=r"extra\.legs\[1\]: nan is not a finite number"):
        check_model(extra)
    assert check_model(Quote(broker="x", symbol="AAPL", extra={"delayed": True}))
    flag = Quote(broker="x", symbol="AAPL", bid=True)
    assert finite_quote(flag)  # a bool adds up like a number: only the full check tells
    with pytest.raises(ValueError, match="bid: must be a number, was bool True"):
        check_model(flag)


@pytest.mark.parametrize("extra, fast", [
    ({"conid": 265598, "market_data": "RealTime", "last_flag": None}, True),  # IBKR's, on every quote
    ({"conid": 2**64}, False), ({"x": float("nan")}, False), ({"x": True}, False), ({"x": [1]}, False),
    ({1: "a"}, False),
])
def test_a_flat_extra_keeps_a_quote_on_the_fast_check_and_anything_else_goes_to_the_full_one(extra, fast):
    from livedata_core.models import check_model, finite_quote

    quote = Quote(broker="x", symbol="AAPL", bid=1.0, extra=extra)
    assert finite_quote(quote) is fast
    if fast:
        assert check_model(quote) is quote  # the shortcut never passes what the full check refuses


def test_an_order_status_must_be_one_of_the_closed_set():
    from livedata_core.models import ORDER_STATUSES, check_model

    for status in ORDER_STATUSES:
        check_model(Order(broker="x", account_id="1", order_id="1", status=status))
    with pytest.raises(ValueError, match="status: 'FILLED' is not an order status; expected one of canceled, expired"):
        check_model(Order(broker="x", account_id="1", order_id="1", status="FILLED"))
