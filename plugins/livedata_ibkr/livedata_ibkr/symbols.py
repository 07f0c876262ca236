"""The symbol syntax of the IBKR plugin and resolving symbols to contract ids (conids).

IBKR streams by conid. A user names an instrument in one of three channel-safe forms:

``AAPL``           a symbol, resolved once through ``/iserver/secdef/search`` (``default_sec_type``, STK)
``AAPL@265598``    a symbol with its conid: no lookup; published as ``quotes:AAPL@265598``
``@265598``        a bare conid; published as ``quotes:@265598``

Symbols are upper-cased. Quotes are published on the channel of the form the user gave.
"""

from __future__ import annotations

import re

import attrs

from livedata_core.errors import InvalidIdentifier

__all__ = ["Instrument", "normalize", "parse"]

_TICKER = r"[A-Z0-9][A-Z0-9./ \-]{0,29}"
_FORM = re.compile(rf"(?P<ticker>{_TICKER})?(?:@(?P<conid>[0-9]{{1,12}}))?")


@attrs.frozen
class Instrument:
    """A parsed subscription: the channel symbol, the ticker (if any) and the conid (if given)."""

    symbol: str
    ticker: str | None
    conid: int | None


def normalize(symbol: str) -> str:
    """Upper-case and check a symbol; raise :class:`InvalidIdentifier` for anything not in the syntax above."""
    text = symbol.strip().upper()
    match = _FORM.fullmatch(text)
    if not text or match is None or not (match["ticker"] or match["conid"]) or (match["ticker"] or "").endswith(" "):
        raise InvalidIdentifier(
            f"ibkr: {symbol!r} is not a symbol; use AAPL, AAPL@265598 (symbol@conid) or @265598 (a conid)"
        )
    if "@" in text and not match["conid"]:
        raise InvalidIdentifier(f"ibkr: {symbol!r}: the part after '@' must be a numeric conid")
    return text


def parse(symbol: str) -> Instrument:
    """Split a normalised symbol into ticker and conid."""
    text = normalize(symbol)
    match = _FORM.fullmatch(text)
    assert match is not None
    conid = int(match["conid"]) if match["conid"] else None
    return Instrument(symbol=text, ticker=match["ticker"] or None, conid=conid)
