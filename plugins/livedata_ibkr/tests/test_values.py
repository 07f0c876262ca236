import math

import pytest
from hypothesis import given, settings, strategies as st

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


# --- parse_number reads a plain number string with float() first: the same result as the full path ---------------

def _reference_parse_number(value):
    """parse_number as it was before its float() fast path (strip, drop commas, placeholders, suffixes)."""
    text = value.strip().replace(",", "")
    if text in ("", "-", "N/A", "n/a", "--"):
        return None
    scale = 1.0
    suffix = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
    if text[-1:].upper() in suffix:
        scale = suffix[text[-1].upper()]
        text = text[:-1]
    try:
        number = float(text) * scale
    except ValueError:
        raise BadValue(f"not a number: {value!r}") from None
    if scale != 1.0:
        number = round(number, 6)
    if not math.isfinite(number):
        raise BadValue(f"not a finite number: {value!r}")
    return number


def _outcome(parse, value):
    try:
        return repr(parse(value))
    except BadValue as exc:
        return f"BadValue: {exc}"


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(alphabet="0123456789.,-+eE_ \t\u00a0KkMmBbTtnaifNAIFy/", max_size=12), st.text(max_size=8),
                 st.floats().map(repr), st.integers(-10**30, 10**30).map(str)))  # fmt: skip
def test_parse_number_fast_path_reads_strings_as_the_full_path_does(value):
    assert _outcome(parse_number, value) == _outcome(_reference_parse_number, value)
