"""Which symbols the streamer takes, and which level-one service streams each of them.

Schwab keys are upper case: equities and ETFs ``AAPL``, ``BRK.B``; indexes ``$SPX``; futures ``/ES`` (the
active contract) or ``/ESZ24`` (one contract). Options, futures options and forex have other services that this
plugin does not subscribe to, so they are refused with a message that says so.
"""

from __future__ import annotations

import re

from livedata_core.errors import InvalidIdentifier

__all__ = ["EQUITIES", "FUTURES", "normalize_symbol", "service_for"]

EQUITIES = "LEVELONE_EQUITIES"
FUTURES = "LEVELONE_FUTURES"

_EQUITY = re.compile(r"[A-Z][A-Z0-9]{0,9}(?:[./][A-Z0-9]{1,4})?")
_INDEX = re.compile(r"\$[A-Z0-9][A-Z0-9.]{0,14}")
_FUTURE = re.compile(r"/[A-Z0-9]{1,10}")
_FOREX = re.compile(r"[A-Z]{3}/[A-Z]{3}")
_OPTION = re.compile(r"[A-Z0-9.]{1,6} *\d{6}[CP]\d{8}")


def normalize_symbol(symbol: str) -> str:
    """Upper-case ``symbol`` and check that a level-one service streams it.

    :raises InvalidIdentifier: the streamer has no level-one equity or futures quote for it.
    """
    text = symbol.strip().upper()
    if not text:
        raise InvalidIdentifier("symbol is empty")
    if text.startswith("./"):
        raise InvalidIdentifier(f"{text!r} is a futures option; tos streams equities, indexes and futures only")
    if _OPTION.fullmatch(text):
        raise InvalidIdentifier(f"{text!r} is an option; tos streams equities, indexes and futures only")
    if _FOREX.fullmatch(text):
        raise InvalidIdentifier(f"{text!r} is a forex pair; tos streams equities, indexes and futures only")
    if _FUTURE.fullmatch(text) or _INDEX.fullmatch(text) or _EQUITY.fullmatch(text):
        return text
    raise InvalidIdentifier(
        f"{symbol!r} is not a Schwab streamer symbol: expected an equity or ETF (AAPL, BRK.B), "
        "an index ($SPX) or a future (/ES, /ESZ24)"
    )


def service_for(symbol: str) -> str:
    """The level-one service of a normalised symbol: futures start with ``/``."""
    return FUTURES if symbol.startswith("/") else EQUITIES
