"""Turning the gateway's stringly-typed values into numbers.

Market-data fields arrive as strings, often formatted: ``"1,300"`` (a size), ``"24.2M"`` (a volume),
``"C168.42"`` (last price is the prior close), ``"H189.10"`` (halted). ``conid`` and ``_updated`` arrive as
numbers or strings.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["BadValue", "parse_int", "parse_number", "parse_price"]

_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}


class BadValue(ValueError):
    """A value that is not a number in any form the gateway uses."""


#: Text -> number, of the texts parse_number read lately: a price or size recurs often, and a formatted one
#: ("1,300", "24.2M") costs five times a plain one to read. Cleared when full.
_READ: dict[str, float] = {}
_READ_MAX = 4096


def parse_number(value: Any) -> float | None:
    """``"1,300"`` -> 1300.0, ``"24.2M"`` -> 24200000.0, ``"1.5K"`` -> 1500.0, ``12`` -> 12.0.

    ``None``, ``""`` and ``"N/A"``-like placeholders give ``None``; anything else that is not a number raises
    :class:`BadValue`.
    """
    if type(value) is str:
        number = _READ.get(value)
        if number is not None:
            return number
        # Most values are plain numbers ("189.60", "500"): float() alone reads them exactly as the formatted path
        # would (it strips the same whitespace and refuses every placeholder, thousands separator and suffix).
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if number - number != 0.0:  # not finite
                raise BadValue(f"not a finite number: {value!r}")
        if number is None:
            number = _parse_formatted(value)
            if number is None:
                return None
        if len(_READ) >= _READ_MAX:
            _READ.clear()
        _READ[value] = number
        return number
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadValue(f"not a number: {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        return _parse_formatted(value)  # a str subclass: not float() first
    else:
        raise BadValue(f"not a number: {value!r}")
    if not math.isfinite(number):
        raise BadValue(f"not a finite number: {value!r}")
    return number


def _parse_formatted(value: str) -> float | None:
    text = value.strip().replace(",", "")
    if text in ("", "-", "N/A", "n/a", "--"):
        return None
    scale = 1.0
    if text[-1:].upper() in _SUFFIX:
        scale = _SUFFIX[text[-1].upper()]
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


def parse_price(value: Any) -> tuple[float | None, str | None]:
    """A last price with its optional one-letter prefix: ``"C168.42"`` -> ``(168.42, "C")``.

    ``C`` means the price is the prior close (no trade yet today), ``H`` means trading is halted.
    """
    if type(value) is str:
        number = _READ.get(value)
        if number is not None:
            return number, None  # a text parse_number read: it has no prefix (no number starts with C or H)
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("C", "H"):
            return parse_number(text[1:]), text[0]
    return parse_number(value), None


def parse_int(value: Any) -> int | None:
    """An integer that may arrive as a number or a string (``conid``, ``_updated``)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise BadValue(f"not an integer: {value!r}")
