"""Book depth from NASDAQ_BOOK, NYSE_BOOK and OPTIONS_BOOK.

A book item is the whole book of one symbol (``0`` key, ``1`` snapshot time ms, ``2`` bid levels, ``3`` ask
levels); a level is ``{"0": price, "1": aggregate size, "2": market-maker count, "3": [market makers]}``. Each
item becomes a :class:`~livedata_core.models.Depth` with its bids (highest first) and asks (lowest first), every
level sent: the runner keeps the top ``depth_levels`` of each side, for every broker. The market makers of a level
are not published: its count is.

An item whose levels are not lists, or with a level lacking a finite price or size (or a count that is not a
whole number), is a malformed book: counted (``livedata status``) and skipped whole, so a book is never published
with a level silently missing.
"""

from __future__ import annotations

from typing import Any

from livedata_core.models import Depth, DepthLevel

from .symbols import BOOKS
from .wanted import ItemParser

__all__ = ["BookParser", "request_fields"]

_MAX_INT = 2**63
_MAX = float(2**63)


def request_fields(service: str) -> str:
    """Symbol, time, bids, asks."""
    return "0,1,2,3"


class _Malformed(Exception):
    pass


def _levels(raw: Any, best_first_descending: bool) -> list[DepthLevel]:
    if type(raw) is not list:
        raise _Malformed("levels are not a list")
    levels = []
    ordered = True
    previous = None
    for level in raw:
        if type(level) is not dict:
            raise _Malformed("a level is not an object")
        price, size, count = level.get("0"), level.get("1"), level.get("2")
        tp, ts = type(price), type(size)
        # Comparisons refuse NaN and infinities too (both compare false against the bounds).
        if not ((tp is float or tp is int) and -_MAX < price < _MAX):
            raise _Malformed(f"level price {price!r}")
        if not ((ts is float or ts is int) and 0 <= size < _MAX):
            raise _Malformed(f"level size {size!r}")
        if count is not None and not (type(count) is int and 0 <= count < _MAX_INT):
            raise _Malformed(f"level count {count!r}")
        if previous is not None and (price > previous if best_first_descending else price < previous):
            ordered = False
        previous = price
        levels.append(DepthLevel(price=float(price), size=float(size), count=count))
    if not ordered:
        levels.sort(key=_price, reverse=best_first_descending)
    return levels


def _price(level: DepthLevel) -> float:
    return level.price


class BookParser(ItemParser):
    """Turns book items into :class:`~livedata_core.models.Depth` for the symbols :meth:`want` marked."""

    # {"data":[{"service":"NASDAQ_BOOK","timestamp":1715908546054,"command":"SUBS","content":[
    #   {"key":"AAPL","1":1715908546000,
    #    "2":[{"0":189.5,"1":300,"2":2,"3":[{"0":"NSDQ","1":200,"2":1715908545000},{"0":"ARCX","1":100,...}]}],
    #    "3":[{"0":189.52,"1":100,"2":1,"3":[{"0":"BATS","1":100,"2":1715908545100}]}]}]}]}
    def apply(self, service: str, content: Any, envelope_ts: Any, received_at: int) -> list[Depth]:
        """One depth per well-formed item of a wanted symbol."""
        book = BOOKS[service]
        fallback_ts = envelope_ts if type(envelope_ts) is int and envelope_ts > 0 else None
        out: list[Depth] = []
        for item, symbol in self.wanted_items(content, "book"):
            try:
                bids = _levels(item.get("2", []), True)
                asks = _levels(item.get("3", []), False)
            except _Malformed as exc:
                self.stats.skip("malformed book", f"{service} {symbol}: {exc}")
                continue
            ts = item.get("1")
            if not (type(ts) is int and 0 < ts < _MAX_INT):
                ts = fallback_ts
            out.append(Depth(broker=self.broker, symbol=symbol, bids=bids, asks=asks, book=book, timestamp=ts,
                             received_at=received_at))  # fmt: skip
        return out
