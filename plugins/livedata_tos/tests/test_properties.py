"""Properties of the parsers over generated input: deltas always merge to the latest value of every field,
and no input makes a parser raise or lose an account event."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from livedata_core.models import ORDER_STATUSES
from livedata_core.plugin_kit.streaming import StreamStats
from livedata_tos.activity import ActivityParser, decode_number
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
        quotes = book.apply(EQUITIES, [{"key": "X", **update}], 1, 1)
        expected.update({PRICE_FIELDS[k]: float(v) for k, v in update.items()})
        if not expected.keys() & {"bid", "ask", "last", "mark", "close"}:
            assert quotes == []  # sizes or volume alone are no quote yet
            continue
        (quote,) = quotes
        published = dict(expected)
        for field in ("open", "high", "low", "close", "mark"):  # 0 means Schwab has no such price
            if published.get(field) == 0:
                published[field] = None
        for side in ("bid", "ask"):  # a 0 bid/ask with size 0 is no bid/ask
            if published.get(side) == 0 and published.get(f"{side}_size") == 0:
                published[side] = None
        for field in PRICE_FIELDS.values():
            assert getattr(quote, field) == published.get(field)


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


# --- hostile values: unhashable keys and seqs, numbers too large for a float, absurd scales --------------------

huge_ints = st.integers(min_value=2**63, max_value=10**400) | st.integers(max_value=-(2**63), min_value=-(10**400))
hostile = st.one_of(
    json_values,
    huge_ints,
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.floats(),  # inf and nan too
)
lo_values = st.one_of(st.text(alphabet="0123456789", min_size=1, max_size=400), huge_ints, st.integers(), hostile)
scale_values = st.one_of(st.integers(-10**12, 10**12), st.text(alphabet="0123456789-", max_size=15), hostile)
encoded = st.fixed_dictionaries({"lo": lo_values}, optional={"signScale": scale_values})
level_one_items = st.dictionaries(
    st.sampled_from(["key", "1", "2", "3", "4", "8", "10", "17", "33", "34", "35", "delayed", "99"]), hostile, max_size=6
)


@settings(max_examples=150, deadline=None)
@given(st.one_of(encoded, hostile))
def test_decode_number_never_raises_and_is_finite_or_none(value):
    result = decode_number(value)
    assert result is None or (type(result) is float and math.isfinite(result))


@settings(max_examples=200, deadline=None)
@given(st.lists(level_one_items, max_size=5), st.integers(0, 5))
def test_hostile_level_one_items_never_cost_the_valid_item_of_the_frame(items, at):
    book = QuoteBook("tos", StreamStats())
    book.want(["X", "OK"])
    content = list(items)
    content.insert(min(at, len(content)), {"key": "OK", "1": 1.5, "2": 1.6})
    quotes = book.apply(EQUITIES, content, 1, 1)
    ok = [q for q in quotes if q.symbol == "OK"]
    assert ok and ok[-1].bid == 1.5 and ok[-1].ask == 1.6


activity_items = st.fixed_dictionaries(
    {},
    optional={
        "seq": hostile,
        "key": hostile,
        "1": st.one_of(st.just("12345678"), hostile),
        "2": st.one_of(st.sampled_from(["OrderCreated", "OrderFillCompleted", "ExecutionCreated"]), hostile),
        "3": st.one_of(
            st.builds(lambda q, p, l: json.dumps({"SchwabOrderID": "9", "Quantity": q, "LimitPrice": p,
                                                  "LeavesQuantity": l}), encoded, encoded, encoded),  # fmt: skip
            st.builds(lambda q: {"SchwabOrderID": "9", "CumulativeQuantity": q}, encoded),
            hostile,
        ),
    },
)


@settings(max_examples=200, deadline=None)
@given(st.lists(activity_items, max_size=5), st.integers(0, 5))
def test_hostile_activity_items_are_each_published_and_never_cost_the_valid_order(items, at):
    valid = {"seq": "valid", "1": "12345678", "2": "OrderAccepted", "3": json.dumps({"SchwabOrderID": "1", "Status": "WORKING"})}
    content = list(items)
    content.insert(min(at, len(content)), valid)
    stats = StreamStats()
    orders = ActivityParser("tos").apply(content, 0, 1, stats)
    # Items without seq are never repeats; items with a seq are dropped only as exact repeats of an earlier one.
    assert len(orders) >= 1
    assert [(o.order_id, o.status, o.account_id) for o in orders if o.order_id == "1"] == [("1", "open", "12345678")]
    assert all(o.status in ORDER_STATUSES for o in orders)
    assert all(o.order_id != "unknown" and o.account_id for o in orders)


# --- the merge functions written per layout do what the field-by-field merge does ------------------------------

layout_items = st.lists(
    st.dictionaries(st.sampled_from(["1", "2", "3", "4", "5", "8", "9", "10", "12", "17", "33", "34", "35", "0",
                                     "assetMainType", "delayed", "99"]),  # fmt: skip
                    st.one_of(numbers, hostile, st.integers(-10, 2**64)), max_size=8).map(lambda d: {"key": "X", **d}),
    min_size=1, max_size=6)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(layout_items)
def test_layout_merge_functions_equal_the_field_by_field_merge(items):
    import livedata_tos.quotes as quotes

    def run(book):
        book.want(["X"])
        return [book.apply(EQUITIES, [item], 5, 7) for item in items], book.stats.skipped, book.state("X")

    fast = run(QuoteBook("tos", StreamStats()))
    layouts, limit = quotes._LAYOUTS, quotes._MAX_LAYOUTS
    quotes._LAYOUTS, quotes._MAX_LAYOUTS = {EQUITIES: {}}, 0  # every item takes QuoteBook._merge_fields
    try:
        slow = run(QuoteBook("tos", StreamStats()))
    finally:
        quotes._LAYOUTS, quotes._MAX_LAYOUTS = layouts, limit
    assert repr(fast) == repr(slow)  # repr: NaN != NaN, but a NaN is skipped before it reaches a quote anyway
