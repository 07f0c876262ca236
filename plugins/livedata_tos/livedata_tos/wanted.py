"""Which symbols a parser turns items into models for: one set of rules for the equity/futures and the
option/forex books (which merge deltas), and one for the chart and book parsers (each item a model of its own)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from livedata_core.plugin_kit.streaming import StreamStats


class WantedSymbols:
    """A book's wanted and muted symbols. A subclass keeps its merged state per symbol in ``self._state``
    and yields quotes only for symbols in ``self._wanted`` and not in ``self._muted``."""

    _state: dict[str, Any]

    def __init__(self) -> None:
        self._wanted: set[str] = set()
        self._muted: set[str] = set()

    def want(self, symbols: Iterable[str]) -> None:
        """Start producing quotes for ``symbols``."""
        for s in symbols:
            self._wanted.add(s)
            self._muted.discard(s)

    def mute(self, symbols: Iterable[str]) -> None:
        """Keep merging ``symbols`` but yield no quotes for them (until :meth:`unmute` or :meth:`forget`)."""
        self._muted.update(symbols)

    def unmute(self, symbols: Iterable[str]) -> None:
        """Yield quotes for muted ``symbols`` again."""
        self._muted.difference_update(symbols)

    def forget(self, symbols: Iterable[str]) -> None:
        """Stop producing quotes for ``symbols`` and drop their state (a new subscription starts afresh)."""
        for s in symbols:
            self._wanted.discard(s)
            self._muted.discard(s)
            self._state.pop(s, None)


class ItemParser:
    """Base of the parsers whose items each make one model on their own (bars, order books): the symbols
    :meth:`want` marked, and the checks every item passes before its service's fields are read."""

    def __init__(self, broker: str, stats: StreamStats) -> None:
        self.broker = broker
        self.stats = stats
        self._wanted: set[str] = set()

    def want(self, symbols: Iterable[str]) -> None:
        """Start producing models for ``symbols``."""
        self._wanted.update(symbols)

    def forget(self, symbols: Iterable[str]) -> None:
        """Stop producing models for ``symbols``."""
        self._wanted.difference_update(symbols)

    def wanted_items(self, content: Any, what: str) -> Iterator[tuple[dict[str, Any], str]]:
        """``(item, symbol)`` for each item of a ``data`` entry's ``content`` that is an object whose ``key`` is a
        wanted symbol. Everything else is a counted skip: ``"<what> content is not a list"``, ``"malformed
        <what>"`` (not an object, or no string key), ``"<what> for a symbol not subscribed"``."""
        if type(content) is not list:
            self.stats.skip(f"{what} content is not a list", content)
            return
        wanted = self._wanted
        for item in content:
            symbol = item.get("key") if type(item) is dict else None
            if type(symbol) is not str:
                self.stats.skip(f"malformed {what}", item)
            elif symbol not in wanted:
                self.stats.skip(f"{what} for a symbol not subscribed", symbol)
            else:
                yield item, symbol
