"""Level-one market data: the ``smd`` field codes and merging delta frames into complete quotes.

The merged fields per conid live in the instance's merge book (``ctx.quotes``,
:class:`~livedata_core.plugin_kit.merge.MergeBook`), so they outlive the connection; what is subscribed (``symbols_of``)
belongs to the connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from livedata_core.plugin_kit.merge import MergeBook
from livedata_core.models import Quote, make_quote, now_ms
from livedata_core.plugin_kit.streaming import StreamStats

from .values import BadValue, parse_int, parse_number, parse_price

__all__ = ["FIELDS", "QuoteBook", "REQUEST_FIELDS", "smd_message", "umd_message"]

# Field code -> Quote attribute (see the market-data fields table of the Client Portal API).
FIELDS: dict[str, str] = {
    "31": "last",
    "84": "bid",
    "86": "ask",
    "88": "bid_size",
    "85": "ask_size",
    "7059": "last_size",
    "7295": "open",
    "70": "high",
    "71": "low",
    "7741": "close",  # prior close
    "7635": "mark",
}
VOLUME_FORMATTED = "87"  # "24.2M"
VOLUME_PRECISE = "7762"
AVAILABILITY = "6509"  # "RpB": first letter R realtime, D delayed, Z frozen, Y frozen delayed, N not subscribed
REQUEST_FIELDS: tuple[str, ...] = (*FIELDS, VOLUME_FORMATTED, VOLUME_PRECISE, AVAILABILITY)

_AVAILABILITY = {"R": "realtime", "D": "delayed", "Z": "frozen", "Y": "frozen_delayed", "N": "not_subscribed"}
_LAST_FLAG = {"C": "prior_close", "H": "halted"}


def smd_message(conid: int, fields: Iterable[str] = REQUEST_FIELDS) -> str:
    """``smd+265598+{"fields":["31","84",...]}``: field ids must be JSON strings."""
    quoted = ",".join(f'"{f}"' for f in fields)
    return f'smd+{conid}+{{"fields":[{quoted}]}}'


def umd_message(conid: int) -> str:
    return f"umd+{conid}+{{}}"


# A conid's merged state is a list of slots (one unpacking builds the quote): the Quote fields in make_quote's order
# from bid to mark (volume being the precise one), then what else the frames carry.
(_BID, _ASK, _LAST, _VOLUME_PRECISE, _BID_SIZE, _ASK_SIZE, _LAST_SIZE, _OPEN, _HIGH, _LOW, _CLOSE, _MARK,
 _VOLUME_FORMATTED, _AVAILABILITY_SLOT, _LAST_FLAG_SLOT, _TIMESTAMP) = range(16)
_SLOTS = 16
_QUOTE_SLOT = {"bid": _BID, "ask": _ASK, "last": _LAST, "bid_size": _BID_SIZE, "ask_size": _ASK_SIZE,
               "last_size": _LAST_SIZE, "open": _OPEN, "high": _HIGH, "low": _LOW, "close": _CLOSE, "mark": _MARK}
# Field code -> the slot of its number; the last price (a prefix too) and the availability (text) are -1 and -2.
_SLOT_OF: dict[str, int] = {
    **{code: _QUOTE_SLOT[name] for code, name in FIELDS.items()},
    VOLUME_PRECISE: _VOLUME_PRECISE,
    VOLUME_FORMATTED: _VOLUME_FORMATTED,
    "31": -1,
    AVAILABILITY: -2,
}


class QuoteBook:
    """The latest known value of every field per conid; each frame gives complete quotes for its symbols.

    :param merged: the instance's merge book, where the merged fields live (``ctx.quotes``); by default one of
        this book's own.
    :ivar symbols_of: conid -> the channel symbols streaming it (one conid may be asked for in two forms).
    """

    def __init__(self, broker: str, stats: StreamStats, merged: MergeBook | None = None) -> None:
        self.broker = broker
        self.stats = stats
        self.merged = merged if merged is not None else MergeBook(broker)
        self.symbols_of: dict[int, set[str]] = {}
        self._state: dict[int, _State] = self.merged.states  # type: ignore[assignment]

    def forget(self, conid: int) -> None:
        self._state.pop(conid, None)

    # Sample delta frame (only changed fields are sent; values are strings):
    # {"31":"189.60","6119":"q2","6509":"RpB","7059":"100","84":"189.56","85":"500","86":"189.61","88":"200",
    #  "_updated":1712596911593,"conid":8314,"conidEx":"8314","server_id":"q2","topic":"smd+8314"}
    def apply(self, frame: dict[str, Any], received_at: int | None = None) -> list[Quote]:
        """Merge one ``smd`` frame; return a complete quote per symbol of its conid (or nothing), received at
        ``received_at`` (milliseconds; default now)."""
        conid = frame.get("conid")
        if type(conid) is not int:  # the gateway sends an int: anything else takes parse_int's path
            try:
                conid = parse_int(conid)
                if conid is None:
                    conid = parse_int(str(frame.get("topic", "")).partition("+")[2] or None)
            except BadValue:
                self.stats.skip("ibkr smd: bad conid", frame)
                return []
            if conid is None:
                return []  # an empty keep-alive frame
        symbols = self.symbols_of.get(conid)
        if not symbols:
            self.stats.skip("ibkr smd: conid not subscribed", conid)
            return []
        state = self._state.get(conid)
        if state is None:
            state = self._state[conid] = [None] * _SLOTS
        # The known fields into the state; a bad value is skipped (and counted), the field keeps its last one.
        changed = False
        slot_of = _SLOT_OF.get
        for code, value in frame.items():
            slot = slot_of(code)
            if slot is None:
                continue
            try:
                if slot >= 0:
                    state[slot] = parse_number(value)
                elif slot == -1:
                    price, flag = parse_price(value)
                    state[_LAST] = price
                    state[_LAST_FLAG_SLOT] = _LAST_FLAG.get(flag) if flag else None
                else:
                    state[_AVAILABILITY_SLOT] = _AVAILABILITY.get(str(value)[:1], str(value)[:8])
            except BadValue:
                self.stats.skip(f"ibkr smd: bad value for field {code}", value)
                continue
            changed = True
        updated = frame.get("_updated")
        if type(updated) is not int:
            try:
                updated = parse_int(updated)
            except BadValue:
                updated = None
        if updated is not None:
            state[_TIMESTAMP] = updated
        if not changed:
            return []
        (bid, ask, last, volume, bid_size, ask_size, last_size, open_, high, low, close, mark,
         volume_formatted, availability, last_flag, timestamp) = state  # fmt: skip
        if bid is None and ask is None and last is None:
            return []  # nothing a consumer can use yet (for example only the availability marker)
        if volume is None:
            volume = volume_formatted
        extra: dict[str, Any] = {"conid": conid}
        if availability:
            extra["market_data"] = availability
        if last_flag:
            extra["last_flag"] = last_flag
        received = now_ms() if received_at is None else received_at
        broker = self.broker
        # make_quote takes every Quote field positionally, in this order (a third of Quote(**fields)'s cost).
        if len(symbols) == 1:
            for symbol in symbols:
                return [make_quote(broker, symbol, bid, ask, last, volume, bid_size, ask_size, last_size, open_, high,
                                   low, close, mark, timestamp, received, extra)]  # fmt: skip
        return [
            make_quote(broker, symbol, bid, ask, last, volume, bid_size, ask_size, last_size, open_, high, low, close,
                       mark, timestamp, received, extra)  # fmt: skip
            for symbol in sorted(symbols)
        ]
