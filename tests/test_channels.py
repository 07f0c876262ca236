import pytest
from hypothesis import given, strategies as st

from livedata_core.channels import (
    MAX_IDENTIFIER_LENGTH, channel, latest_key, parse_channel, pattern, stream_key, validate_identifier,
)
from livedata_core.errors import InvalidIdentifier


@pytest.mark.parametrize("symbol", ["AAPL", "BRK.B", "/ESZ24", "$SPX", "AAPL  241220C00150000", "/ES", "BF-B", "12345678"])
def test_real_broker_identifiers_make_channels(symbol):
    name = channel("quotes", symbol)
    assert name == f"live_data:quotes:{symbol}"
    assert parse_channel(name) == ("quotes", symbol)


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("", "empty"),
        ("AA*", "'*'"),
        ("A?", "'?'"),
        ("[AB]", "'['"),
        ("A\nB", "'\\n'"),
        ("A\x00", "'\\x00'"),
        (" AAPL", "whitespace"),
        ("X" * (MAX_IDENTIFIER_LENGTH + 1), "characters long"),
    ],
)
def test_identifiers_that_would_confuse_subscribers_are_refused(bad, reason):
    with pytest.raises(InvalidIdentifier) as info:
        channel("quotes", bad)
    assert reason in str(info.value)


def test_prefix_and_keys():
    assert channel("orders", "123", prefix="prod") == "prod:live_data:orders:123"
    assert latest_key("quotes", "AAPL") == "live_data:latest:quotes:AAPL"
    assert stream_key("orders", "123", "prod") == "prod:live_data:stream:orders:123"
    assert pattern("quotes:*") == "live_data:quotes:*"
    assert pattern("live_data:orders:*", "p") == "p:live_data:orders:*"
    with pytest.raises(ValueError, match="unknown channel type"):
        pattern("quote:*")
    with pytest.raises(ValueError, match="unknown channel type"):
        channel("ticks", "AAPL")


_safe_char = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="*?[]\\\x85")


@given(st.text(_safe_char, min_size=1, max_size=MAX_IDENTIFIER_LENGTH).filter(lambda s: s == s.strip()))
def test_any_safe_identifier_round_trips(identifier):
    name = channel("positions", identifier)
    assert parse_channel(name) == ("positions", identifier)
    assert parse_channel(name.encode()) == ("positions", identifier)


@given(st.text(min_size=0, max_size=80))
def test_validation_never_accepts_glob_or_control_characters(text):
    try:
        validate_identifier(text)
    except InvalidIdentifier:
        return
    assert text and len(text) <= MAX_IDENTIFIER_LENGTH
    assert not any(c in text for c in "*?[]\\")
    assert all(ord(c) >= 32 and not (0x7F <= ord(c) <= 0x9F) for c in text)


@pytest.mark.parametrize("bad", [["AAPL"], {"a": 1}, b"AAPL", None, 5])
def test_a_non_string_identifier_is_an_invalid_identifier_even_when_unhashable(bad):
    with pytest.raises(InvalidIdentifier, match="must be a string"):
        validate_identifier(bad)
