"""The functions per layout parse a whole run of items in one call: frames of several items, of mixed layouts and
with items that are skipped between them, give what the field-by-field path gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import livedata_tos.quotes as quotes
from livedata_core.models import Quote
from livedata_core.plugin_kit.streaming import StreamStats
from livedata_tos.quotes import QuoteBook
from livedata_tos.symbols import EQUITIES, FUTURES

SYMBOLS = ["A", "B", "/ES", "/ESZ5", "OFF"]  # OFF is never subscribed
LAYOUTS = [("1", "2", "3", "4", "5", "8", "34"), ("1", "2", "8"), ("2", "1"), ("34", "10", "11", "12"), ("9", "35")]
values = st.one_of(
    st.floats(-10, 500, allow_nan=False),
    st.sampled_from([0, 0.0, 3, 5, 1_700_000_000_000, 2**63, -(2**63), 2**63 - 1, None, True, "x", "/ESZ5", [], {}]),
)
items = st.one_of(
    st.builds(lambda symbol, layout, vs: {"key": symbol, **dict(zip(layout, vs))},
              st.sampled_from(SYMBOLS), st.sampled_from(LAYOUTS), st.lists(values, min_size=7, max_size=7)),
    st.builds(lambda symbol, v: {"key": symbol, "delayed": True, "1": v}, st.sampled_from(SYMBOLS), values),
    st.sampled_from([None, "A", {"key": 5, "1": 1.0}, {"1": 1.0}]),
)  # fmt: skip
frames = st.lists(st.tuples(st.sampled_from([EQUITIES, FUTURES]), st.lists(items, max_size=8)), min_size=1, max_size=5)


@settings(max_examples=300, deadline=None)
@given(frames, st.sampled_from([None, "tos_b"]))
def test_runs_of_items_equal_the_field_by_field_path(frames, instance):
    def run():
        book = QuoteBook("tos", StreamStats(), instance=instance)
        book.want(["A", "B", "/ES", "/ESZ5"])
        book.mute(["B"])
        out = [book.apply(service, content, 5, 7) for service, content in frames]
        return out, book.stats.skipped, {s: book.state(s) for s in SYMBOLS}

    fast = run()
    layouts, limit = quotes._LAYOUTS, quotes._MAX_LAYOUTS
    quotes._LAYOUTS, quotes._MAX_LAYOUTS = {EQUITIES: {}, FUTURES: {}}, 0  # every item takes QuoteBook._merge_fields
    try:
        slow = run()
    finally:
        quotes._LAYOUTS, quotes._MAX_LAYOUTS = layouts, limit
    assert repr(fast) == repr(slow)
    assert all(type(q) is Quote for out in fast[0] for q in out)


def test_where_the_class_swap_is_refused_the_build_calls_make_quote_with_the_same_quote(monkeypatch):
    state = [None] * quotes.N_SLOTS
    state[quotes.BID], state[quotes.ASK], state[quotes.BID_SIZE], state[quotes.CLOSE] = 10.5, 0.0, 3.0, 0.0
    state[quotes.ASK_SIZE], state[quotes.QUOTE_TIME], state[quotes.ACTIVE_SYMBOL] = 0.0, 1_700_000_000_000, "/ESZ5"
    swapped = quotes._build_function(FUTURES)(list(state), "/ES", 5, 7, "tos", "tos_b")
    monkeypatch.setattr(quotes, "_QuoteBuilder", None)
    called = quotes._build_function(FUTURES)(list(state), "/ES", 5, 7, "tos", "tos_b")
    assert type(called) is Quote and called == swapped
    assert called.ask is None and called.close is None and called.extra == {"active_symbol": "/ESZ5"}
