import math

import pytest
from hypothesis import given, strategies as st

from livedata_ibkr.values import BadValue, parse_int, parse_number, parse_price


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("1,300", 1300.0),
        ("24.2M", 24_200_000.0),
        ("1.5K", 1500.0),
        ("2B", 2e9),
        ("189.60", 189.6),
        (500, 500.0),
        (0.04, 0.04),
        ("", None),
        (None, None),
        ("N/A", None),
    ],
)
def test_parse_number_reads_gateway_formats(raw, expected):
    assert parse_number(raw) == expected


@pytest.mark.parametrize("raw", ["abc", "1.2.3", "nan", "inf", True, [1], {"a": 1}, "M"])
def test_parse_number_refuses_garbage(raw):
    with pytest.raises(BadValue):
        parse_number(raw)


def test_parse_price_keeps_the_prefix_meaning():
    assert parse_price("C168.42") == (168.42, "C")
    assert parse_price("H189.10") == (189.1, "H")
    assert parse_price("382.89") == (382.89, None)
    assert parse_price(12.5) == (12.5, None)


def test_parse_int_accepts_type_drift():
    assert parse_int(265598) == 265598
    assert parse_int("265598") == 265598
    assert parse_int(1712596911593.0) == 1712596911593
    assert parse_int(None) is None
    with pytest.raises(BadValue):
        parse_int("12a")


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False).map(lambda x: round(x, 2)))
def test_parse_number_round_trips_thousands_separators(x):
    text = f"{x:,.2f}"
    assert math.isclose(parse_number(text), x, rel_tol=1e-12, abs_tol=1e-9)


@given(st.text(max_size=12))
def test_parse_number_never_raises_anything_but_badvalue(text):
    try:
        parse_number(text)
    except BadValue:
        pass
