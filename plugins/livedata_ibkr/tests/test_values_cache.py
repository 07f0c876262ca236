"""parse_number and parse_price remember texts they read: a text read again gives the same answer, and so do texts
that are never remembered (placeholders, bad values, prefixed prices)."""

import pytest

from livedata_ibkr import values
from livedata_ibkr.values import BadValue, parse_number, parse_price

TEXTS = ["189.60", "1,300", "24.2M", " 12 ", "", "N/A", "--", "C168.42", "H189.10", "0", "-0.0", "1.5k"]
BAD = ["abc", "nan", "inf", "M", "C", "Cabc", "1e400"]


@pytest.mark.parametrize("limit", [values._READ_MAX, 2])
def test_a_text_read_again_gives_the_same_answer(monkeypatch, limit):
    monkeypatch.setattr(values, "_READ", {})
    monkeypatch.setattr(values, "_READ_MAX", limit)
    first = [(parse_number(t) if t[:1] not in "CH" or not t else None, parse_price(t)) for t in TEXTS]
    for _ in range(3):
        assert [(parse_number(t) if t[:1] not in "CH" or not t else None, parse_price(t)) for t in TEXTS] == first
        for text in BAD:
            with pytest.raises(BadValue):
                parse_number(text)
    assert len(values._READ) <= limit
    assert parse_price("C168.42") == (168.42, "C") and parse_price("168.42") == (168.42, None)
    assert parse_price("C168.42") == (168.42, "C")  # "168.42" is remembered, its prefixed form is not
