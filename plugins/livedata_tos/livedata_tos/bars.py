"""1-minute bars from CHART_EQUITY and CHART_FUTURES.

Chart data is delivered whole (every item carries every field), one item per symbol and minute, with the
streamer's sequence number ``seq`` beside the fields. Each item becomes a :class:`~livedata_core.models.Bar`
with ``interval`` 60 and ``start`` the minute's start in ms. This parser yields every bar it receives, repeats
included: the core drops repeats (by a start not after the last one published: ``seq`` is 0 in Schwab's samples and
starts over on a new connection) and fills gaps
from ``/pricehistory`` (the ``fetch_bars`` hook).

Field numbers. CHART_EQUITY, as the streamer really sends it (and schwab-py's and Schwabdev's tests agree; the
Streamer Guide's table, which puts open at 1 and the sequence at 6, is wrong): 0 key, 1 sequence (the minute of
the day), 2 open, 3 high, 4 low, 5 close, 6 volume, 7 chart time ms (the minute's start), 8 chart day.
CHART_FUTURES: 0 key, 1 chart time ms, 2 open, 3 high, 4 low, 5 close, 6 volume.

An item without a symbol, a start time, or any of open, high, low and close as a finite number, or whose high is
below its low, is a malformed bar: counted (``livedata status``) and skipped, never published half-filled.
"""

from __future__ import annotations

from typing import Any

from livedata_core.models import Bar

from .symbols import CHART_EQUITY, CHART_FUTURES
from .wanted import ItemParser

__all__ = ["BAR_FIELDS", "BarParser", "request_fields"]

INTERVAL = 60  # seconds: Schwab's chart services stream 1-minute bars
_MAX_INT = 2**63
_MAX = float(2**63)

# service -> (open, high, low, close, volume, start time) field numbers
BAR_FIELDS: dict[str, tuple[str, str, str, str, str, str]] = {
    CHART_EQUITY: ("2", "3", "4", "5", "6", "7"),
    CHART_FUTURES: ("2", "3", "4", "5", "6", "1"),
}


def request_fields(service: str) -> str:
    """Every field of the chart service (they are few, and all come in every item anyway)."""
    return "0,1,2,3,4,5,6,7,8" if service == CHART_EQUITY else "0,1,2,3,4,5,6"


class BarParser(ItemParser):
    """Turns chart items into bars for the symbols :meth:`want` marked."""

    # {"data":[{"service":"CHART_EQUITY","timestamp":1715908546054,"command":"SUBS","content":[
    #   {"seq":0,"key":"MSFT","1":779,"2":421.65,"3":421.79,"4":421.65,"5":421.755,"6":26.0,"7":1715903940000,
    #    "8":19859}]}]}
    # {"data":[{"service":"CHART_FUTURES", ..., "content":[{"seq":2224,"key":"/ES","1":1765307160000,
    #   "2":6858.25,"3":6858.75,"4":6857.75,"5":6858.5,"6":897}]}]}
    def apply(self, service: str, content: Any, envelope_ts: Any, received_at: int) -> list[Bar]:
        """One bar per well-formed item of a wanted symbol."""
        o_, h_, l_, c_, v_, t_ = BAR_FIELDS[service]
        ts = envelope_ts if type(envelope_ts) is int and envelope_ts > 0 else None
        out: list[Bar] = []
        for item, symbol in self.wanted_items(content, "bar"):
            start = item.get(t_)
            o, h, l, c, volume = item.get(o_), item.get(h_), item.get(l_), item.get(c_), item.get(v_)
            seq = item.get("seq")
            # Comparisons refuse NaN and infinities too (both compare false against the bounds).
            if not ((type(o) is float or type(o) is int) and -_MAX < o < _MAX
                    and (type(h) is float or type(h) is int) and -_MAX < h < _MAX
                    and (type(l) is float or type(l) is int) and -_MAX < l <= h
                    and (type(c) is float or type(c) is int) and -_MAX < c < _MAX
                    and type(start) is int and 0 < start < _MAX_INT
                    and (volume is None or ((type(volume) is float or type(volume) is int) and -_MAX < volume < _MAX))
                    and (seq is None or (type(seq) is int and 0 <= seq < _MAX_INT))):  # fmt: skip
                self.stats.skip("malformed bar", (service, item))
                continue
            start -= start % (INTERVAL * 1000)  # the minute's start, should a time inside it come
            out.append(Bar(broker=self.broker, symbol=symbol, interval=INTERVAL, start=start, open=float(o),
                           high=float(h), low=float(l), close=float(c),
                           volume=float(volume) if volume is not None else None, seq=seq, timestamp=ts,
                           received_at=received_at))  # fmt: skip
        return out
