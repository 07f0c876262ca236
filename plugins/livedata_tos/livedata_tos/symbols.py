"""Which symbols the streamer takes, and which service streams each of them for each kind of data.

Schwab keys are upper case: equities and ETFs ``AAPL``, ``BRK.B``; indexes ``$SPX``; futures ``/ES`` (the
active contract) or ``/ESZ24`` (one contract); options in the OCC form with the root padded to six characters
(``AAPL  261218C00200000``: root, YYMMDD, C or P, the strike times 1000 in eight digits); futures options
``./OZCZ25C565`` (``./`` root, month code, year, C or P, strike); forex pairs ``EUR/USD``.

Quotes come from the level-one service of the symbol's asset class; 1-minute bars from CHART_EQUITY (equities,
indexes) and CHART_FUTURES (futures); depth from NASDAQ_BOOK or NYSE_BOOK (equities) and OPTIONS_BOOK (options).
"""

from __future__ import annotations

import re

from livedata_core.errors import InvalidIdentifier

__all__ = [
    "BOOKS",
    "CHART_EQUITY",
    "CHART_FUTURES",
    "EQUITIES",
    "FOREX",
    "FUTURES",
    "FUTURES_OPTIONS",
    "NASDAQ_BOOK",
    "NYSE_BOOK",
    "OPTIONS",
    "OPTIONS_BOOK",
    "QUOTE_SERVICES",
    "asset_class",
    "bar_service",
    "book_service",
    "normalize_symbol",
    "option_terms",
    "service_for",
]

EQUITIES = "LEVELONE_EQUITIES"
FUTURES = "LEVELONE_FUTURES"
OPTIONS = "LEVELONE_OPTIONS"
FUTURES_OPTIONS = "LEVELONE_FUTURES_OPTIONS"
FOREX = "LEVELONE_FOREX"
QUOTE_SERVICES = (EQUITIES, FUTURES, OPTIONS, FUTURES_OPTIONS, FOREX)
CHART_EQUITY = "CHART_EQUITY"
CHART_FUTURES = "CHART_FUTURES"
NASDAQ_BOOK = "NASDAQ_BOOK"
NYSE_BOOK = "NYSE_BOOK"
OPTIONS_BOOK = "OPTIONS_BOOK"
BOOKS = {NASDAQ_BOOK: "NASDAQ", NYSE_BOOK: "NYSE", OPTIONS_BOOK: "OPTIONS"}
"""Book service -> the ``book`` a :class:`~livedata_core.models.Depth` names."""

_EQUITY = re.compile(r"[A-Z][A-Z0-9]{0,9}(?:[./][A-Z0-9]{1,4})?")
_INDEX = re.compile(r"\$[A-Z0-9][A-Z0-9.]{0,14}")
_FUTURE = re.compile(r"/[A-Z0-9]{1,10}")
_FUTURE_OPTION = re.compile(r"\./[A-Z0-9]{1,6}[FGHJKMNQUVXZ]\d{1,2}[CP]\d+(?:\.\d+)?")
_FOREX = re.compile(r"[A-Z]{3}/[A-Z]{3}")
_OPTION = re.compile(r"([A-Z0-9.]{1,6}) *(\d{6})([CP])(\d{8})")


def normalize_symbol(symbol: str) -> str:
    """Upper-case ``symbol``, pad an option's root to six characters, and check that the streamer has it.

    :raises InvalidIdentifier: no Schwab streamer service streams such a symbol.
    """
    text = symbol.strip().upper()
    if not text:
        raise InvalidIdentifier("symbol is empty")
    option = _OPTION.fullmatch(text)
    if option:
        root, date, right, strike = option.groups()
        return f"{root:<6}{date}{right}{strike}"
    if _FUTURE_OPTION.fullmatch(text) or _FOREX.fullmatch(text):
        return text
    if text.startswith("./"):
        raise InvalidIdentifier(
            f"{symbol!r} is not a Schwab futures option symbol: expected ./ root, month code, year, C or P and "
            "the strike, like ./OZCZ25C565"
        )
    if _FUTURE.fullmatch(text) or _INDEX.fullmatch(text) or _EQUITY.fullmatch(text):
        return text
    raise InvalidIdentifier(
        f"{symbol!r} is not a Schwab streamer symbol: expected an equity or ETF (AAPL, BRK.B), an index ($SPX), "
        "a future (/ES, /ESZ24), an option (AAPL  261218C00200000), a futures option (./OZCZ25C565) or a forex "
        "pair (EUR/USD)"
    )


def asset_class(symbol: str) -> str:
    """``"equity"`` (also indexes), ``"future"``, ``"option"``, ``"future_option"`` or ``"forex"`` of a
    normalised symbol."""
    if symbol.startswith("./"):
        return "future_option"
    if symbol.startswith("/"):
        return "future"
    if len(symbol) == 21 and _OPTION.fullmatch(symbol):
        return "option"
    if len(symbol) == 7 and _FOREX.fullmatch(symbol):
        return "forex"
    return "equity"


_QUOTE_SERVICE = {"equity": EQUITIES, "future": FUTURES, "option": OPTIONS, "future_option": FUTURES_OPTIONS,
                  "forex": FOREX}  # fmt: skip


def service_for(symbol: str) -> str:
    """The level-one service of a normalised symbol."""
    return _QUOTE_SERVICE[asset_class(symbol)]


def bar_service(symbol: str) -> str | None:
    """The chart service of a normalised symbol: CHART_EQUITY, CHART_FUTURES, or ``None`` (Schwab streams no
    bars for options, futures options and forex)."""
    cls = asset_class(symbol)
    if cls == "equity":
        return CHART_EQUITY
    if cls == "future":
        return CHART_FUTURES
    return None


def book_service(symbol: str, nyse: frozenset[str] | set[str] = frozenset()) -> str | None:
    """The book service of a normalised symbol: OPTIONS_BOOK for options, NYSE_BOOK for equities in ``nyse``,
    NASDAQ_BOOK for the other equities, ``None`` for what Schwab has no book of (futures, futures options,
    forex, indexes)."""
    cls = asset_class(symbol)
    if cls == "option":
        return OPTIONS_BOOK
    if cls == "equity" and not symbol.startswith("$"):
        return NYSE_BOOK if symbol in nyse else NASDAQ_BOOK
    return None


def option_terms(symbol: str) -> tuple[str, str, str, float] | None:
    """``(underlying, expiration ISO date, "call"/"put", strike)`` of an OCC option symbol, else ``None``."""
    match = _OPTION.fullmatch(symbol)
    if match is None:
        return None
    root, date, right, strike = match.groups()
    expiration = f"20{date[:2]}-{date[2:4]}-{date[4:]}"
    return root.strip(), expiration, "call" if right == "C" else "put", int(strike) / 1000
