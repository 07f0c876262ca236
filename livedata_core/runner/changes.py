"""Deciding what account data is new: positions and balances when they change, orders and transactions once."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import attrs

from ..models import Balance, Order, Position, Transaction, now_ms, to_dict

__all__ = [
    "DEDUPE_SLACK", "BalanceChanges", "OrderEvents", "PositionChanges", "SeenSet", "TransactionEvents", "differ_for",
]

# Not what the broker reports: times a poll renews, and the instance the runner stamps (an earlier run's book has it,
# a fresh poll not yet).
_VOLATILE = ("received_at", "timestamp", "instance")


def _content(model: Any) -> tuple[Any, ...]:
    data = to_dict(model)
    for key in _VOLATILE:
        data.pop(key, None)
    return tuple(sorted((k, repr(v)) for k, v in data.items()))


DEDUPE_SLACK = 10_000
"""How many order states (or transactions) a broker's dedupe remembers beyond what its polls keep reporting: room
for what a stream reported once and nothing has reported since. At 150 order events a second that is about a
minute of them; real accounts see far fewer."""


class SeenSet:
    """Keys already handled, within a bound; past it, the key reported longest ago is forgotten.

    The bound is ``slack`` plus, for every source (an account's poll, or the stream entries read back at a
    restart), how many keys its latest report held (:meth:`reserve`). Reporting a key again (:meth:`touch`)
    makes it the most recent, so a key reported on every poll is not forgotten however long the runner runs,
    unless more than ``slack`` new keys arrive between two of its reports. What is forgotten is what nothing has
    reported for a while; if it is reported again much later it is handled a second time: a repeat, never a loss.
    """

    def __init__(self, slack: int = DEDUPE_SLACK) -> None:
        self.slack = slack
        self._items: OrderedDict[Any, None] = OrderedDict()
        self._reported: dict[Any, int] = {}
        self._reserved = 0

    @property
    def limit(self) -> int:
        """How many keys are kept at most right now."""
        return self.slack + self._reserved

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Any) -> bool:
        return key in self._items

    def touch(self, key: Any) -> bool:
        """Whether ``key`` is known; if it is, it becomes the most recently reported."""
        try:
            self._items.move_to_end(key)
        except KeyError:
            return False
        return True

    def add(self, key: Any) -> bool:
        """Add ``key`` as the most recently reported; ``True`` if it was new."""
        new = not self.touch(key)
        if new:
            self._items[key] = None
            self._trim()
        return new

    def reserve(self, source: Any, count: int) -> None:
        """Keep room for the ``count`` keys ``source`` reported last (replacing what it reserved before)."""
        self._reserved += count - self._reported.get(source, 0)
        self._reported[source] = count
        self._trim()

    def _trim(self) -> None:
        while len(self._items) > self.limit:
            self._items.popitem(last=False)


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
    broker is shared by its stream and its polls; a restart seeds it from the capped streams. Memory is bounded
    by a :class:`SeenSet`: :data:`DEDUPE_SLACK` events plus what each account's latest poll reported."""

    def __init__(self, slack: int = DEDUPE_SLACK) -> None:
        self._seen = SeenSet(slack)

    @staticmethod
    def key(model: Any) -> tuple[Any, ...]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, model: Any) -> bool:
        """Whether ``model`` was published; a broker reporting it again keeps it remembered."""
        return self._seen.touch(self.key(model))

    def add(self, model: Any) -> None:
        self._seen.add(self.key(model))

    def reserve(self, account: str, count: int) -> None:
        """Keep room for the ``count`` events a poll of ``account`` (or its stream read back at a restart) held:
        a broker reporting its whole window on every poll never has any of them published again."""
        self._seen.reserve(account, count)


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
