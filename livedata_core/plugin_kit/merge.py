"""The merge book: partial quote updates merged per symbol into complete quotes, for the life of a broker instance.

Most streaming brokers send only what changed: a trade message with the last price, a quote message with bid and
ask, a delta with one field. :class:`MergeBook` keeps the last known value of every field per symbol and turns each
update into a complete :class:`~livedata_core.models.Quote`.

It lives with the broker *instance*, not the connection: core creates one per
:class:`~livedata_core.plugin_kit.broker.BrokerContext` (``ctx.quotes``) and a plugin hands it to each stream it makes. So after a
reconnect the first update for a symbol (say, a bid and ask) is merged into what was known before it (the last
trade), and the quote published is never less complete than the last one before the reconnect. A stream forgets a
symbol (:meth:`MergeBook.forget`) when it is unsubscribed, so a later subscription starts afresh.

The rules of :meth:`MergeBook.merge` (docs/channels.md states them for consumers):

- a field left out of an update keeps its last value; a field given as ``None`` is cleared (the broker says there
  is none now);
- ``volume`` is the session's total volume as the broker reports it (not the size of the last trade:
  ``last_size``);
- a bid or ask of 0 whose size is 0 is "no bid" / "no ask" and is published as null; an open, high, low, close or
  mark of 0 is "not known yet" and is published as null; a last price, a volume and sizes of 0 are published;
- a crossed or locked quote (bid >= ask) is published as merged, never corrected or dropped: bid and ask may come
  from different updates;
- a value that is not a finite number is counted as a skip (``bad value``) and the field keeps its last value;
- nothing is published for a symbol until it has a price (bid, ask, last, mark or close).

A plugin with its own fast state (a list of slots per symbol, say) keeps it in :attr:`MergeBook.states` under the
symbol (or its instrument id) instead of calling :meth:`merge`: it then lives with the instance just the same.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from ..models import Quote, make_quote, now_ms
from .streaming import StreamStats

__all__ = ["MERGED_FIELDS", "MergeBook"]

PRICE_FIELDS = ("bid", "ask", "last", "open", "high", "low", "close", "mark")
SIZE_FIELDS = ("volume", "bid_size", "ask_size", "last_size")
MERGED_FIELDS = frozenset(PRICE_FIELDS + SIZE_FIELDS)
"""The :class:`~livedata_core.models.Quote` fields :meth:`MergeBook.merge` takes."""


class _Merged:
    __slots__ = ("fields", "timestamp", "extra")

    def __init__(self) -> None:
        self.fields: dict[str, float] = {}
        self.timestamp: int | None = None
        self.extra: dict[str, Any] | None = None


class MergeBook:
    """Per-symbol quote state of one broker instance (see the module docstring).

    :param broker: the plugin's name, as quotes carry it in ``broker``.
    :ivar states: symbol (or instrument id) -> state; :meth:`merge` keeps its own there, a plugin with its own
        representation may keep that instead (one representation per book).
    """

    def __init__(self, broker: str) -> None:
        self.broker = broker
        self.states: dict[Hashable, Any] = {}

    def __repr__(self) -> str:
        return f"MergeBook({self.broker!r}, {len(self.states)} symbols)"

    def __len__(self) -> int:
        return len(self.states)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self.states

    def merge(
        self,
        symbol: str,
        fields: Mapping[str, Any],
        *,
        timestamp: int | None = None,
        received_at: int | None = None,
        extra: Mapping[str, Any] | None = None,
        stats: StreamStats | None = None,
    ) -> Quote | None:
        """Merge one update for ``symbol`` and return the complete quote, or ``None`` while it has no price.

        :param fields: :data:`MERGED_FIELDS` names -> numbers (or ``None`` to clear one).
        :param timestamp: the broker's time of this update (ms); kept for later updates that carry none.
        :param received_at: when the frame arrived (ms); default now.
        :param extra: broker-specific values, merged into those known before (``None`` values removed).
        :param stats: where bad values are counted (``bad value``); without it they raise ``ValueError``.
        :raises KeyError: a field that is not a merged quote field (a plugin bug).
        """
        state = self.states.get(symbol)
        if state is None:
            state = self.states[symbol] = _Merged()
        known = state.fields
        for name, value in fields.items():
            if name not in MERGED_FIELDS:
                raise KeyError(f"{name!r} is not a quote field the merge book takes; use one of {sorted(MERGED_FIELDS)}")
            if value is None:
                known.pop(name, None)
            elif type(value) is float or type(value) is int:
                if math.isfinite(value):
                    known[name] = value
                    continue
                self._bad(stats, symbol, name, value)
            else:
                self._bad(stats, symbol, name, value)
        if timestamp is not None:
            state.timestamp = timestamp
        if extra:
            merged = dict(state.extra or ())
            merged.update(extra)
            state.extra = {k: v for k, v in merged.items() if v is not None} or None
        return self.quote(symbol, received_at)

    def quote(self, symbol: str, received_at: int | None = None) -> Quote | None:
        """The complete quote of ``symbol`` from what is known (``None`` without a price or without state)."""
        state = self.states.get(symbol)
        if state is None:
            return None
        f = state.fields
        get = f.get
        if get("bid") is None and get("ask") is None and get("last") is None and get("mark") is None and get("close") is None:
            return None  # no price yet
        bid, ask = get("bid"), get("ask")
        if bid == 0 and get("bid_size") == 0:
            bid = None
        if ask == 0 and get("ask_size") == 0:
            ask = None
        return make_quote(
            self.broker,
            symbol,
            _float(bid),
            _float(ask),
            _float(get("last")),
            _float(get("volume")),
            _float(get("bid_size")),
            _float(get("ask_size")),
            _float(get("last_size")),
            _float(get("open") or None),  # a zero open/high/low/close/mark means "not known yet"
            _float(get("high") or None),
            _float(get("low") or None),
            _float(get("close") or None),
            _float(get("mark") or None),
            state.timestamp,
            received_at if received_at is not None else now_ms(),
            dict(state.extra) if state.extra else None,
        )

    def get(self, symbol: Hashable) -> Any:
        """The state kept for ``symbol`` (for :meth:`merge`'s own: a dict of the known fields), or ``None``."""
        state = self.states.get(symbol)
        if isinstance(state, _Merged):
            return dict(state.fields)
        return state

    def forget(self, symbols: Iterable[Hashable]) -> None:
        """Drop the state of ``symbols`` (unsubscribed: a later subscription starts afresh)."""
        for symbol in symbols:
            self.states.pop(symbol, None)

    def clear(self) -> None:
        """Drop every symbol's state."""
        self.states.clear()

    @staticmethod
    def _bad(stats: StreamStats | None, symbol: str, name: str, value: Any) -> None:
        if stats is None:
            raise ValueError(f"quote {symbol}: {name} must be a finite number or None, was {value!r}")
        stats.skip("bad value", (symbol, name, value))


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)
