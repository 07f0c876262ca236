"""Which symbols a level-one book yields quotes for: one set of rules for the equity/futures and the
option/forex books."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


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
