"""Deciding what account data is new: positions and balances when they change, orders and transactions once."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import attrs

from ..models import Balance, Order, Position, Transaction, now_ms, to_dict

__all__ = ["BalanceChanges", "OrderEvents", "PositionChanges", "SeenSet", "TransactionEvents", "differ_for"]

_VOLATILE = ("received_at", "timestamp")


def _content(model: Any) -> tuple[Any, ...]:
    data = to_dict(model)
    for key in _VOLATILE:
        data.pop(key, None)
    return tuple(sorted((k, repr(v)) for k, v in data.items()))


class SeenSet:
    """A set that forgets its oldest entries past ``limit``, so a long-running runner stays flat in memory."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._items: OrderedDict[Any, None] = OrderedDict()

    def __contains__(self, key: Any) -> bool:
        return key in self._items

    def add(self, key: Any) -> bool:
        """Add ``key``; ``True`` if it was new."""
        if key in self._items:
            return False
        self._items[key] = None
        if len(self._items) > self.limit:
            self._items.popitem(last=False)
        return True


class PositionChanges:
    """Positions that changed since the last poll, plus each closed position once with quantity 0.

    :meth:`seed` with the positions an earlier run left in the account's book makes the first poll report only
    what changed since then, and positions closed meanwhile as closed.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[Any, ...]] | None = None
        self._models: dict[str, Position] = {}

    @property
    def seeded(self) -> bool:
        """Whether a previous state is known (seeded, or a poll happened)."""
        return self._last is not None

    def seed(self, positions: list[Position]) -> None:
        """Start from ``positions`` as if they were the previous poll's result."""
        self._last = {p.symbol: _content(p) for p in positions}
        self._models = {p.symbol: p for p in positions}

    def __call__(self, positions: list[Position]) -> list[Position]:
        current = {p.symbol: _content(p) for p in positions}
        changed = [p for p in positions if self._last is None or self._last.get(p.symbol) != current[p.symbol]]
        if self._last is not None:
            for symbol in self._last.keys() - current.keys():
                old = self._models[symbol]
                changed.append(
                    attrs.evolve(old, quantity=0.0, market_value=0.0, unrealized_pnl=None, timestamp=None, received_at=now_ms())
                )
        self._last = current
        self._models = {p.symbol: p for p in positions}
        return changed


class BalanceChanges:
    """Balances (one per currency) that changed since the last poll; :attr:`vanished` lists the currencies the
    last poll no longer reported (they are taken out of the account's book)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[Any, ...]] | None = None
        self.vanished: list[str] = []

    @property
    def seeded(self) -> bool:
        """Whether a previous state is known (seeded, or a poll happened)."""
        return self._last is not None

    def seed(self, balances: list[Balance]) -> None:
        """Start from ``balances`` (an earlier run's book) as if they were the previous poll's result."""
        self._last = {b.currency: _content(b) for b in balances}

    def __call__(self, balances: list[Balance]) -> list[Balance]:
        last = self._last or {}
        current = {b.currency: _content(b) for b in balances}
        changed = [b for b in balances if last.get(b.currency) != current[b.currency]]
        self.vanished = sorted(last.keys() - current.keys())
        self._last = current
        return changed


class _PublishedOnce:
    """Remembers the account events published (by :meth:`key`), so each is published once. One instance per
    broker is shared by its stream and its polls; a restart seeds it from the capped streams."""

    def __init__(self) -> None:
        self._seen = SeenSet()

    @staticmethod
    def key(model: Any) -> tuple[Any, ...]:
        raise NotImplementedError

    def seen(self, model: Any) -> bool:
        return self.key(model) in self._seen

    def add(self, model: Any) -> None:
        self._seen.add(self.key(model))


class OrderEvents(_PublishedOnce):
    """Each order state exactly once: account, id, status, the broker's status word, the event id, filled
    quantity, quantity and prices. Two events of one order that differ in any of these are both published."""

    @staticmethod
    def key(o: Order) -> tuple[Any, ...]:
        return (o.account_id, o.order_id, o.status, o.broker_status, o.event_id, o.filled_quantity, o.quantity, o.price,
                o.stop_price)


class TransactionEvents(_PublishedOnce):
    """Each transaction (account, id) exactly once."""

    @staticmethod
    def key(t: Transaction) -> tuple[Any, ...]:
        return (t.account_id, t.transaction_id)


def differ_for(kind: str):
    """A fresh change detector for positions or balances of one account."""
    return {"positions": PositionChanges, "balances": BalanceChanges}[kind]()
