"""Level-one quotes: the streamer sends only the fields that changed; publish complete quotes.

:class:`QuoteBook` keeps the last value of every field per symbol and turns each ``data`` item into a complete
:class:`~livedata_core.models.Quote`. One call parses every item of a frame in one pass and returns a list. The
merged fields are kept in the instance's merge book (``ctx.quotes``, :class:`~livedata_core.plugin_kit.merge.MergeBook`), one
list of slots per symbol, so they outlive the connection: the first quote after a reconnect is as complete as the
last one before it. What is subscribed (wanted, muted) belongs to the connection and stays here.
"""

from __future__ import annotations

from typing import Any

from livedata_core.plugin_kit.merge import MergeBook
from livedata_core.models import Quote, make_quote
from livedata_core.plugin_kit.streaming import StreamStats

from .symbols import EQUITIES, FUTURES
from .wanted import WantedSymbols

__all__ = ["FIELDS", "QuoteBook", "request_fields"]

# Slots of the per-symbol state list. Prices and sizes first (stored as float), then the two times (int ms).
BID, ASK, LAST, VOLUME, BID_SIZE, ASK_SIZE, LAST_SIZE, OPEN, HIGH, LOW, CLOSE, MARK = range(12)
QUOTE_TIME, TRADE_TIME = 12, 13
ACTIVE_SYMBOL = 14  # futures only: the contract a bare root such as /ES streams (string)
DELAYED = 15  # the item's "delayed" flag (bool)
N_SLOTS = 16
N_FLOAT = 12
_MAX_INT = 2**63  # the wire's integers are 64-bit; anything larger is a bad value (and may not fit a float)

# Streamer field number -> slot (Schwab Streamer Guide field tables).
FIELDS: dict[str, dict[str, int]] = {
    EQUITIES: {
        "1": BID, "2": ASK, "3": LAST, "4": BID_SIZE, "5": ASK_SIZE, "8": VOLUME, "9": LAST_SIZE,
        "10": HIGH, "11": LOW, "12": CLOSE, "17": OPEN, "33": MARK, "34": QUOTE_TIME, "35": TRADE_TIME,
    },
    FUTURES: {
        "1": BID, "2": ASK, "3": LAST, "4": BID_SIZE, "5": ASK_SIZE, "8": VOLUME, "9": LAST_SIZE,
        "10": QUOTE_TIME, "11": TRADE_TIME, "12": HIGH, "13": LOW, "14": CLOSE, "18": OPEN, "24": MARK,
        "34": ACTIVE_SYMBOL,
    },
}  # fmt: skip

# Keys of a level-one item that carry nothing we publish ("0" repeats the key).
META_KEYS = frozenset({"key", "0", "assetMainType", "assetSubType", "cusip"})


def request_fields(service: str) -> str:
    """The ``fields`` parameter for a service: 0 (the symbol) and every field we map, ascending."""
    return ",".join(["0", *sorted(FIELDS[service], key=int)])


class QuoteBook(WantedSymbols):
    """Per-symbol state of the level-one services, merged from deltas.

    Only symbols marked with :meth:`want` produce quotes: data that arrives for a symbol after it was
    unsubscribed is counted and dropped. A :meth:`mute` symbol (an UNSUBS in flight) is still merged, so its
    state stays complete if the server refuses the UNSUBS, but yields nothing. Until a symbol has a price (bid,
    ask, last, mark or close) it yields nothing either: a quote without any is of no use to anyone.

    :param merged: the instance's merge book, where the merged fields live (``ctx.quotes``); by default one of
        this book's own, which lives as long as it does.
    :param instance: the instance's name, set in every quote (``None``: the runner fills it in).
    """

    def __init__(self, broker: str, stats: StreamStats, merged: MergeBook | None = None, *,
                 instance: str | None = None) -> None:  # fmt: skip
        self.broker = broker
        self.instance = instance
        self.stats = stats
        self.merged = merged if merged is not None else MergeBook(broker)
        super().__init__()
        self._state: dict[str, list[Any]] = self.merged.states  # type: ignore[assignment]

    def state(self, symbol: str) -> dict[str, Any] | None:
        """The merged fields of a symbol, by slot name (for diagnostics and tests)."""
        s = self._state.get(symbol)
        if s is None:
            return None
        names = ("bid", "ask", "last", "volume", "bid_size", "ask_size", "last_size", "open", "high", "low",
                 "close", "mark", "quote_time", "trade_time", "active_symbol")  # fmt: skip
        return {n: v for n, v in zip(names, s) if v is not None}

    def _other_key(self, service: str, symbol: str, k: str, v: Any) -> None:
        if k == "delayed":
            if type(v) is bool:
                self._state[symbol][DELAYED] = v
        else:
            self.stats.skip(f"{service} unknown field", k)

    # {"data":[{"service":"LEVELONE_EQUITIES","timestamp":1714949592301,"command":"SUBS","content":[
    #   {"key":"SCHW","delayed":false,"assetMainType":"EQUITY","assetSubType":"COE","cusip":"808513105",
    #    "1":76.08,"2":76.49,"3":76.44,"4":3,"5":1,"8":5414735,"10":76.47}, ...]}]}
    # and later deltas such as {"key":"SCHW","2":76.5}
    def apply(self, service: str, content: Any, envelope_ts: Any, received_at: int) -> list[Quote]:
        """Merge one ``data`` entry's ``content`` and return one complete quote per item."""
        if type(content) is not list:
            self.stats.skip("level-one content is not a list", content)
            return []
        fallback_ts = envelope_ts if type(envelope_ts) is int and envelope_ts > 0 else None
        futures = service == FUTURES
        wanted = self._wanted
        muted = self._muted
        states = self._state
        layouts = _LAYOUTS[service]
        broker = self.broker
        instance = self.instance
        out: list[Quote] = []
        append = out.append
        for item in content:
            if type(item) is not dict:
                self.stats.skip("level-one item is not an object", item)
                continue
            symbol = item.get("key")
            if type(symbol) is not str:
                self.stats.skip("level-one item without a string key", symbol)
                continue
            if symbol not in wanted:
                self.stats.skip("level-one data for a symbol not subscribed", symbol)
                continue
            try:
                state = states.get(symbol)
                if state is None:
                    state = states[symbol] = [None] * N_SLOTS
                # The item's keys, in the wire's order, pick a merge function written for exactly those fields
                # (see _layout): no per-field slot lookup or branch on the field's kind.
                keys = tuple(item)
                merge = layouts.get(keys)
                if merge is None:
                    merge = _layout(service, keys)
                if merge is not None:
                    merge(self, symbol, state, item.values())
                else:
                    self._merge_fields(service, symbol, state, item)
                # -- the complete quote from the symbol's state --
                if state[BID] is None and state[ASK] is None and state[LAST] is None and state[MARK] is None and state[CLOSE] is None:
                    continue  # no price yet
                qt = state[QUOTE_TIME]
                tt = state[TRADE_TIME]
                if qt is None:
                    ts = tt if tt is not None else fallback_ts
                else:
                    ts = qt if tt is None or qt >= tt else tt
                extra = None
                if state[DELAYED]:
                    extra = {"delayed": True}
                if futures and state[ACTIVE_SYMBOL] is not None and state[ACTIVE_SYMBOL] != symbol:
                    extra = dict(extra or (), active_symbol=state[ACTIVE_SYMBOL])
                # Schwab sends 0 for prices it does not have (before the open: open/high/low 0), and a 0 bid or ask
                # with size 0 when there is no bid or ask: those are published as null, never as a price of 0.
                bid = state[BID]
                if bid == 0 and state[BID_SIZE] == 0:
                    bid = None
                ask = state[ASK]
                if ask == 0 and state[ASK_SIZE] == 0:
                    ask = None
                # make_quote takes every Quote field positionally, in this order (it is the per-item hot path).
                quote = make_quote(
                    broker,  # broker
                    symbol,  # symbol
                    bid,
                    ask,
                    state[LAST],  # last
                    state[VOLUME],  # volume
                    state[BID_SIZE],  # bid_size
                    state[ASK_SIZE],  # ask_size
                    state[LAST_SIZE],  # last_size
                    state[OPEN] or None,  # open
                    state[HIGH] or None,  # high
                    state[LOW] or None,  # low
                    state[CLOSE] or None,  # close
                    state[MARK] or None,  # mark
                    ts,  # timestamp
                    received_at,
                    extra,
                    instance,
                )
            except Exception as exc:  # one bad item must not cost the others in the frame
                self.stats.skip("level-one item could not be parsed", f"{symbol}: {type(exc).__name__}: {exc}")
                continue
            if not (muted and symbol in muted):
                append(quote)
        return out

    def _merge_fields(self, service: str, symbol: str, state: list[Any], item: dict[str, Any]) -> None:
        """Merge any item's fields into the symbol's state, one by one (items whose layout has no merge function:
        unknown keys, or more layouts than _MAX_LAYOUTS)."""
        get = FIELDS[service].get
        for k, v in item.items():
            slot = get(k)
            if slot is None:
                if k not in META_KEYS:
                    self._other_key(service, symbol, k, v)
                continue
            tv = type(v)
            if slot < N_FLOAT:
                if tv is float:
                    state[slot] = v
                    continue
                if tv is int and -_MAX_INT < v < _MAX_INT:  # bool is not int here: type() is exact
                    state[slot] = float(v)
                    continue
            elif slot != ACTIVE_SYMBOL:
                if tv is int and 0 < v < _MAX_INT:
                    state[slot] = v
                    continue
            elif tv is str:
                state[slot] = v
                continue
            self._bad(service, symbol, k, v)

    def _bad(self, service: str, symbol: str, k: str, v: Any) -> None:
        self.stats.skip(f"{service} bad value", (symbol, k, v))


# -- merge functions per layout ---------------------------------------------------------------------------------
#
# A streamer sends few distinct layouts (the same fields, in the same order, item after item), so for each one a
# function is written once that merges exactly those fields: each value is type-checked and stored at its slot
# with constants, no per-field lookup or loop. It does what QuoteBook._merge_fields does for the same item, in the
# same order (a bad value is the same counted skip). Layouts with keys outside FIELDS and META_KEYS (unknown
# fields, "delayed") take _merge_fields, and so does every layout past the first _MAX_LAYOUTS of a service.

_MAX_LAYOUTS = 256
_LAYOUTS: dict[str, dict[tuple[Any, ...], Any]] = {service: {} for service in FIELDS}


def _layout(service: str, keys: tuple[Any, ...]) -> Any:
    """The merge function for items of ``service`` with exactly ``keys`` in this order (made and kept on first
    use), or ``None`` when such items take the generic path."""
    layouts = _LAYOUTS[service]
    fields = FIELDS[service]
    if len(layouts) >= _MAX_LAYOUTS or not all(type(k) is str and (k in fields or k in META_KEYS) for k in keys):
        return None
    names = [f"v{i}" for i in range(len(keys))]
    lines = ["def merge(book, symbol, state, values):", f"    {', '.join(names)}{',' if len(names) == 1 else ''} = values"]
    for i, k in enumerate(keys):
        slot = fields.get(k)
        if slot is None:
            continue  # a meta key: carries nothing published
        v = names[i]
        if slot < N_FLOAT:
            lines += [f"    t = type({v})", "    if t is float:", f"        state[{slot}] = {v}",
                      f"    elif t is int and {-_MAX_INT} < {v} < {_MAX_INT}:", f"        state[{slot}] = float({v})"]
        elif slot != ACTIVE_SYMBOL:
            lines += [f"    if type({v}) is int and 0 < {v} < {_MAX_INT}:", f"        state[{slot}] = {v}"]
        else:
            lines += [f"    if type({v}) is str:", f"        state[{slot}] = {v}"]
        lines += ["    else:", f"        book._bad(service, symbol, keys[{i}], {v})"]
    namespace: dict[str, Any] = {"service": service, "keys": keys}
    exec(compile("\n".join(lines) + "\n", f"<livedata_tos merge {service} {len(layouts)}>", "exec"), namespace)
    layouts[keys] = merge = namespace["merge"]
    return merge
