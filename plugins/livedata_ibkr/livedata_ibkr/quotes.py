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
_PRICE_FIELDS = ("last", "bid", "ask")


def smd_message(conid: int, fields: Iterable[str] = REQUEST_FIELDS) -> str:
    """``smd+265598+{"fields":["31","84",...]}``: field ids must be JSON strings."""
    quoted = ",".join(f'"{f}"' for f in fields)
    return f'smd+{conid}+{{"fields":[{quoted}]}}'


def umd_message(conid: int) -> str:
    return f"umd+{conid}+{{}}"


class _State:
    __slots__ = ("values", "volume_precise", "volume_formatted", "availability", "last_flag", "timestamp")

    def __init__(self) -> None:
        self.values: dict[str, float | None] = {}
        self.volume_precise: float | None = None
        self.volume_formatted: float | None = None
        self.availability: str | None = None
        self.last_flag: str | None = None
        self.timestamp: int | None = None


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
        try:
            conid = parse_int(frame.get("conid"))
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
            state = self._state[conid] = _State()
        changed = self._merge(state, frame)
        try:
            updated = parse_int(frame.get("_updated"))
        except BadValue:
            updated = None
        if updated is not None:
            state.timestamp = updated
        if not changed:
            return []
        values = state.values
        if not any(values.get(name) is not None for name in _PRICE_FIELDS):
            return []  # nothing a consumer can use yet (for example only the availability marker)
        volume = state.volume_precise if state.volume_precise is not None else state.volume_formatted
        extra: dict[str, Any] = {"conid": conid}
        if state.availability:
            extra["market_data"] = state.availability
        if state.last_flag:
            extra["last_flag"] = state.last_flag
        received = now_ms() if received_at is None else received_at
        get = values.get
        # make_quote takes every Quote field positionally, in this order (a third of Quote(**fields)'s cost).
        return [
            make_quote(
                self.broker,  # broker
                symbol,  # symbol
                get("bid"),
                get("ask"),
                get("last"),
                volume,
                get("bid_size"),
                get("ask_size"),
                get("last_size"),
                get("open"),
                get("high"),
                get("low"),
                get("close"),
                get("mark"),
                state.timestamp,  # timestamp
                received,  # received_at
                extra,
            )
            for symbol in sorted(symbols)
        ]

    def _merge(self, state: _State, frame: dict[str, Any]) -> bool:
        changed = False
        for code, value in frame.items():
            name = FIELDS.get(code)
            try:
                if name == "last":
                    price, flag = parse_price(value)
                    state.values["last"] = price
                    state.last_flag = _LAST_FLAG.get(flag) if flag else None
                elif name is not None:
                    state.values[name] = parse_number(value)
                elif code == VOLUME_PRECISE:
                    state.volume_precise = parse_number(value)
                elif code == VOLUME_FORMATTED:
                    state.volume_formatted = parse_number(value)
                elif code == AVAILABILITY:
                    state.availability = _AVAILABILITY.get(str(value)[:1], str(value)[:8])
                else:
                    continue
            except BadValue:
                self.stats.skip(f"ibkr smd: bad value for field {code}", value)
                continue
            changed = True
        return changed
