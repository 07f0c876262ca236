import json

import attrs

import pytest

from livedata_core.models import Balance, Order, Quote, from_dict, to_dict
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
