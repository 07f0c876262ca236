import json

import attrs

import pytest

from livedata_core.models import Account, Balance, Order, Position, Quote, Transaction, from_dict, make_quote, to_dict
from livedata_core.publisher.encoding import dumps


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


def test_plain_payloads_and_payloads_needing_conversion_encode_the_same_way():
    import datetime as dt
    import decimal

    assert dumps({"a": 1.5, "b": None}) == b'{"a":1.5,"b":null}'
    assert dumps({"d": decimal.Decimal("1.25"), "day": dt.date(2026, 1, 2), 3: {"x"}}) == b'{"d":1.25,"day":"2026-01-02","3":["x"]}'
    with pytest.raises(TypeError, match="bytes"):
        dumps({"raw": b"\x00"})
