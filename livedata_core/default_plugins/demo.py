"""The built-in demo broker: random-walk quotes and a demo account, through the same hooks as any broker.

``livedata run`` with no configuration runs it. Settings (``[brokers.demo]``):

``quotes_per_second``  total quote updates per second across all symbols (default 20; 0 = as fast as possible)
``batch``              quotes per yielded batch when running as fast as possible (default 500)
``accounts``           handled by the runner: the demo reports one account, ``DEMO-1``
``order_every``        at least this many seconds between new demo orders (default 3; 0 = none); orders are
                       placed, accepted and filled on the orders poll, so they move at its pace
``seed``               random seed, for repeatable runs
``heartbeat_timeout``  seconds of silence before the runner reconnects (default 10)
``expire_after``       seconds after its last update at which a demo value leaves Redis (default 60): the
                       latest keys, the account's books and its streams (see below)

Demo prices are not real, but they are published on the real channels (``live_data:quotes:AAPL``), so a plain
subscriber sees them like any other. So that they never outlive the demo as a symbol's current value, the
demo declares its data ephemeral with the ``expire_after`` setting: the runner then has every key written for
it expire that long after its last write (:meth:`~livedata_core.redis_io.publisher.AsyncPublisher.expire`). While the
demo runs, each update renews its key; a symbol updated less often than that (many symbols at a low
``quotes_per_second``) has no latest value between updates.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import random
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import attrs

from ..plugin_kit.broker import BrokerContext, BrokerInfo
from ..errors import InvalidIdentifier
from ..plugin_kit.hookspecs import hookimpl
from ..plugin_kit.limits import MAX_INTERVAL, MAX_TIMEOUT, between, seconds
from ..models import Account, Balance, Order, Position, Quote, Transaction, now_ms
from ..plugin_kit.streaming import HEARTBEAT, BrokerStream

NAME = "demo"
ACCOUNT = "DEMO-1"
TRANSACTION_HISTORY = 1_000
"""The demo account keeps its newest 1,000 transactions (a broker's history is on its servers, this one's in the
runner's memory)."""
_SYMBOL = re.compile(r"[A-Z0-9$/][A-Z0-9./$ _-]{0,31}")


@attrs.frozen
class DemoSettings:
    """Settings of the demo broker."""

    quotes_per_second: float = attrs.field(default=20.0, validator=between(0, 100_000))
    batch: int = attrs.field(default=500, validator=between(1, 100_000))
    order_every: float = attrs.field(default=3.0, validator=seconds(0, MAX_INTERVAL))
    seed: int | None = None
    heartbeat_timeout: float = attrs.field(default=10.0, validator=seconds(0, MAX_TIMEOUT, min_exclusive=True))
    # Read by the runner by name (EXPIRE_SETTING in runner/app.py): its data expires this long after its last write.
    expire_after: float = attrs.field(default=60.0, validator=seconds(0.001, MAX_INTERVAL))


class DemoMarket:
    """Random-walk prices shared by the stream and the account."""

    def __init__(self, seed: int | None) -> None:
        self.rng = random.Random(seed)
        self.prices: dict[str, float] = {}
        self.volumes: dict[str, float] = {}

    def price(self, symbol: str) -> float:
        p = self.prices.get(symbol)
        if p is None:
            p = self.prices[symbol] = round(self.rng.uniform(20, 500), 2)
            self.volumes[symbol] = 0.0
        return p

    def tick(self, symbol: str, now: int | None = None) -> Quote:
        """The next quote of a random walk (steps of at most 0.1%)."""
        last = self.prices.get(symbol) or self.price(symbol)
        last = round(max(0.01, last * (1 + (self.rng.random() - 0.5) * 0.002)), 2)
        self.prices[symbol] = last
        half_spread = max(0.01, last * 0.0001)
        size = _SIZES[int(last * 100) % len(_SIZES)]
        volume = self.volumes[symbol] = self.volumes[symbol] + size
        if now is None:
            now = now_ms()
        return Quote(
            broker=NAME,
            symbol=symbol,
            bid=round(last - half_spread, 2),
            ask=round(last + half_spread, 2),
            last=last,
            volume=volume,
            bid_size=size,
            ask_size=size,
            last_size=size,
            timestamp=now,
            received_at=now,
        )

    def ticks(self, symbols: Sequence[str], start: int, count: int) -> list[Quote]:
        """``count`` quotes cycling through ``symbols`` from position ``start``."""
        now = now_ms()
        n = len(symbols)
        tick = self.tick
        return [tick(symbols[(start + i) % n], now) for i in range(count)]


_SIZES = (100.0, 200.0, 300.0, 400.0, 500.0, 100.0, 300.0)


class DemoAccount:
    """A demo account: a few positions, cash, and orders that are placed, accepted and filled over time."""

    def __init__(self, market: DemoMarket, order_every: float) -> None:
        self.market = market
        self.order_every = order_every
        self.cash = 100_000.0
        self.holdings: dict[str, float] = {"AAPL": 100.0, "MSFT": 50.0}
        self.orders: dict[str, Order] = {}
        self.transactions: collections.deque[Transaction] = collections.deque(maxlen=TRANSACTION_HISTORY)
        self._ids = itertools.count(1)
        self._last_order_at = time.monotonic()

    def advance(self) -> None:
        """Move open orders on and place a new one when due."""
        for order in list(self.orders.values()):
            if order.status == "pending":
                self._set(order, status="open", broker_status="ACCEPTED", event="accepted")
            elif order.status == "open":
                self._fill(order)
        if self.order_every and time.monotonic() - self._last_order_at >= self.order_every:
            self._last_order_at = time.monotonic()
            self._place()

    def _place(self) -> None:
        rng = self.market.rng
        symbol = rng.choice(sorted(self.holdings) + ["SPY"])
        side = rng.choice(["buy", "sell"]) if self.holdings.get(symbol) else "buy"
        order_id = f"D{next(self._ids):06d}"
        price = self.market.price(symbol)
        now = now_ms()
        self.orders[order_id] = Order(
            broker=NAME, account_id=ACCOUNT, order_id=order_id, symbol=symbol, side=side, order_type="limit",
            status="pending", broker_status="PENDING", event="created", quantity=10.0, filled_quantity=0.0,
            remaining_quantity=10.0, price=price, time_in_force="day", entered_at=now, timestamp=now,
        )

    def _set(self, order: Order, **changes: Any) -> Order:
        now = now_ms()
        updated = attrs.evolve(order, timestamp=now, received_at=now, **changes)
        self.orders[order.order_id] = updated
        return updated

    def _fill(self, order: Order) -> None:
        price = self.market.price(order.symbol or "SPY")
        qty = order.quantity or 0.0
        signed = qty if order.side == "buy" else -qty
        self.holdings[order.symbol or "SPY"] = self.holdings.get(order.symbol or "SPY", 0.0) + signed
        if self.holdings[order.symbol or "SPY"] == 0:
            del self.holdings[order.symbol or "SPY"]
        self.cash -= signed * price
        filled = self._set(
            order, status="filled", broker_status="FILLED", event="filled", filled_quantity=qty,
            remaining_quantity=0.0, average_fill_price=price,
        )
        now = now_ms()
        self.transactions.append(
            Transaction(
                broker=NAME, account_id=ACCOUNT, transaction_id=f"T{filled.order_id[1:]}", type="trade",
                symbol=filled.symbol, quantity=signed, price=price, amount=round(-signed * price, 2),
                description=f"{filled.side} {qty:g} {filled.symbol} @ {price:.2f}", order_id=filled.order_id,
                timestamp=now, received_at=now,
            )
        )
        # Keep the order book small: filled orders leave after they have been reported once more.
        for oid in [o.order_id for o in self.orders.values() if o.status == "filled" and o.order_id != filled.order_id]:
            del self.orders[oid]

    def positions(self) -> list[Position]:
        out = []
        for symbol, qty in sorted(self.holdings.items()):
            price = self.market.price(symbol)
            out.append(
                Position(
                    broker=NAME, account_id=ACCOUNT, symbol=symbol, quantity=qty,
                    market_value=round(qty * price, 2), average_price=None, asset_type="equity",
                )
            )
        return out

    def balances(self) -> list[Balance]:
        value = self.cash + sum(p.market_value or 0.0 for p in self.positions())
        return [
            Balance(
                broker=NAME, account_id=ACCOUNT, cash=round(self.cash, 2), buying_power=round(max(self.cash, 0) * 2, 2),
                account_value=round(value, 2), equity=round(value, 2),
            )
        ]


class DemoStream(BrokerStream):
    """Random-walk quotes for the subscribed symbols."""

    def __init__(self, market: DemoMarket, settings: DemoSettings) -> None:
        super().__init__()
        self.market = market
        self.settings = settings
        self.heartbeat_timeout = settings.heartbeat_timeout
        self.symbols: list[str] = []
        self.connected = False

    async def connect(self) -> None:
        self.connected = True

    async def subscribe(self, symbols: Sequence[str]) -> None:
        self.symbols = sorted(set(self.symbols) | set(symbols))

    async def unsubscribe(self, symbols: Sequence[str]) -> None:
        self.symbols = [s for s in self.symbols if s not in set(symbols)]

    async def events(self) -> AsyncIterator[Any]:
        rate = self.settings.quotes_per_second
        if rate == 0:
            batch = self.settings.batch
            cycle = 0
            while self.connected:
                symbols = self.symbols
                if not symbols:
                    await asyncio.sleep(0.1)
                    yield HEARTBEAT
                    continue
                yield self.market.ticks(symbols, cycle, batch)
                cycle = (cycle + batch) % len(symbols)
                await asyncio.sleep(0)
            return
        interval = 0.05 if rate >= 20 else 1.0 / rate
        per_tick = rate * interval
        carry = 0.0
        cycle = 0
        next_at = time.monotonic()
        while self.connected:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            symbols = self.symbols
            carry += per_tick
            count = int(carry)
            carry -= count
            if not symbols or count == 0:
                yield HEARTBEAT
                continue
            yield self.market.ticks(symbols, cycle, count)
            cycle = (cycle + count) % len(symbols)

    async def close(self) -> None:
        self.connected = False


class DemoSession:
    def __init__(self, settings: DemoSettings) -> None:
        self.market = DemoMarket(settings.seed)
        self.account = DemoAccount(self.market, settings.order_every)


def _session(ctx: BrokerContext) -> DemoSession:
    if ctx.session is None:
        ctx.session = DemoSession(ctx.settings or DemoSettings())
    return ctx.session


@hookimpl
def broker_info() -> BrokerInfo:
    return BrokerInfo(
        name=NAME,
        capabilities={
            "authenticate", "stream", "fetch_accounts", "fetch_positions", "fetch_balances", "fetch_orders",
            "fetch_transactions",
        },
        settings_cls=DemoSettings,
        description="Built-in demo broker: random-walk quotes and a demo account (no login needed)",
        max_symbols=5000,
    )


@hookimpl
def normalize_symbol(symbol: str) -> str:
    cleaned = symbol.strip().upper()
    if not _SYMBOL.fullmatch(cleaned):
        raise InvalidIdentifier(f"demo broker: {symbol!r} is not a symbol (letters, digits and . / $ - _ space)")
    return cleaned


@hookimpl
def authenticate(ctx: BrokerContext) -> None:
    _session(ctx)


@hookimpl
def stream(ctx: BrokerContext) -> DemoStream:
    session = _session(ctx)
    return DemoStream(session.market, ctx.settings or DemoSettings())


@hookimpl
def fetch_accounts(ctx: BrokerContext) -> list[Account]:
    return [Account(broker=NAME, account_id=ACCOUNT, account_type="margin", name="Demo account")]


def _account(ctx: BrokerContext, account_id: str) -> DemoAccount:
    from ..errors import BrokerError

    if account_id != ACCOUNT:
        raise BrokerError(f"demo broker has no account {account_id!r}; it has {ACCOUNT!r}")
    return _session(ctx).account


@hookimpl
def fetch_positions(ctx: BrokerContext, account_id: str) -> list[Position]:
    return _account(ctx, account_id).positions()


@hookimpl
def fetch_balances(ctx: BrokerContext, account_id: str) -> list[Balance]:
    return _account(ctx, account_id).balances()


@hookimpl
def fetch_orders(ctx: BrokerContext, account_id: str, since: int) -> list[Order]:
    account = _account(ctx, account_id)
    account.advance()
    return list(account.orders.values())


@hookimpl
def fetch_transactions(ctx: BrokerContext, account_id: str, since: int) -> list[Transaction]:
    return [t for t in _account(ctx, account_id).transactions if (t.timestamp or 0) >= since]
