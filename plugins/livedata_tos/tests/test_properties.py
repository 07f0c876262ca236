"""Properties of the parsers over generated input: deltas always merge to the latest value of every field,
and no input makes a parser raise or lose an account event."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from livedata_core.models import ORDER_STATUSES
from livedata_core.streaming import StreamStats
from livedata_tos.activity import ActivityParser
from livedata_tos.quotes import QuoteBook
from livedata_tos.symbols import EQUITIES

PRICE_FIELDS = {"1": "bid", "2": "ask", "3": "last", "4": "bid_size", "5": "ask_size", "8": "volume", "9": "last_size",
                "10": "high", "11": "low", "12": "close", "17": "open", "33": "mark"}  # fmt: skip
numbers = st.one_of(st.integers(-10**9, 10**9), st.floats(allow_nan=False, allow_infinity=False))
deltas = st.lists(st.dictionaries(st.sampled_from(sorted(PRICE_FIELDS)), numbers, min_size=1), min_size=1, max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(deltas)
def test_every_quote_holds_the_latest_value_of_every_field(updates):
    book = QuoteBook("tos", StreamStats())
    book.want(["X"])
    expected: dict[str, float] = {}
    for update in updates:
        (quote,) = book.apply(EQUITIES, [{"key": "X", **update}], 1, 1)
        expected.update({PRICE_FIELDS[k]: float(v) for k, v in update.items()})
        for field in PRICE_FIELDS.values():
            assert getattr(quote, field) == expected.get(field)


@settings(max_examples=150, deadline=None)
@given(st.lists(json_values, max_size=5))
def test_level_one_parser_never_raises(content):
    book = QuoteBook("tos", StreamStats())
    book.want(["X", ""])
    book.apply(EQUITIES, content, 1, 1)
    book.apply(EQUITIES, [dict(item, key="X") for item in content if isinstance(item, dict)], None, 1)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(json_values, st.fixed_dictionaries({"1": json_values, "2": json_values, "3": json_values})),
                max_size=5))  # fmt: skip
def test_activity_parser_never_raises_and_publishes_every_item(content):
    # Distinct seq numbers: nothing is a repeat, so every item must come out as an order.
    content = [dict(item, seq=i) if isinstance(item, dict) else item for i, item in enumerate(content)]
    orders = ActivityParser("tos").apply(content, 0, 1, StreamStats())
    assert len(orders) == len(content)
    assert all(o.status in ORDER_STATUSES for o in orders)
