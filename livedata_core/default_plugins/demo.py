"""The built-in demo broker: random-walk quotes, bars, order books, option chains and a demo account, through the
same hooks as any broker.

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
``bar_seconds``        real seconds a demo minute lasts (default 60; tests make it short): the stream sends the
                       1-minute bar of each ``bars`` symbol as each demo minute ends
``depth_per_second``   order books sent per second for each ``depth`` symbol (default 2), 20 levels a side

Bars are synthetic and deterministic: the bar of a symbol and minute is always the same, whether streamed or
fetched (``fetch_bars``, which serves every minute up to the current demo minute), so the runner's gap filler can be
seen at work. Like a real broker on a (re)subscription, the stream first sends the last completed bar again: the
runner drops that repeat. ``livedata subscribe demo --chain AAPL`` resolves a synthetic chain (strikes around the
price, monthly expirations); its contracts stream as option quotes with Greeks. Futures (``/ES``) and indexes
(``$SPX``) have no options: asking for their chain is refused.

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
import datetime as dt
import itertools
import math
import random
import re
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import attrs

from ..plugin_kit.broker import BrokerContext, BrokerInfo
from ..errors import InvalidIdentifier, SymbolsRefused
from ..plugin_kit.hookspecs import hookimpl
from ..plugin_kit.limits import MAX_INTERVAL, MAX_TIMEOUT, between, seconds
from ..models import (
    Account, Balance, Bar, Depth, DepthLevel, OptionQuote, Order, Position, Quote, Transaction, now_ms,
)
from ..plugin_kit.streaming import HEARTBEAT, BrokerStream

NAME = "demo"
ACCOUNT = "DEMO-1"
TRANSACTION_HISTORY = 1_000
"""The demo account keeps its newest 1,000 transactions (a broker's history is on its servers, this one's in the
runner's memory)."""
_SYMBOL = re.compile(r"[A-Z0-9$/][A-Z0-9./$ _-]{0,31}")
_OPTION = re.compile(r"([A-Z0-9.]{1,6}) +(\d{6})([CP])(\d{8})")  # OCC / Schwab: "AAPL  261218C00200000"
MINUTE_MS = 60_000
BOOK_LEVELS = 20


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
    bar_seconds: float = attrs.field(default=60.0, validator=seconds(0.01, MAX_INTERVAL))
    depth_per_second: float = attrs.field(default=2.0, validator=between(0.01, 1000))


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

    def book(self, symbol: str, now: int) -> Depth:
        """An order book of :data:`BOOK_LEVELS` levels a side around the symbol's price (the runner keeps the top
        ``depth_levels``)."""
        last = self.price(symbol)
        tick = 0.01
        rng = self.rng
        bids = [DepthLevel(price=round(last - tick * (i + 1), 2), size=float(100 * rng.randint(1, 20)), count=rng.randint(1, 9))
                for i in range(BOOK_LEVELS)]  # fmt: skip
        asks = [DepthLevel(price=round(last + tick * (i + 1), 2), size=float(100 * rng.randint(1, 20)), count=rng.randint(1, 9))
                for i in range(BOOK_LEVELS)]  # fmt: skip
        return Depth(broker=NAME, symbol=symbol, bids=bids, asks=asks, book="DEMO", timestamp=now, received_at=now)

    def option(self, symbol: str, now: int) -> OptionQuote:
        """A quote of an option contract, its price and Greeks from the underlying's random walk (Black-Scholes at
        30% volatility)."""
        match = _OPTION.fullmatch(symbol)
        assert match is not None
        underlying, ymd, right, strike_text = match.groups()
        strike = int(strike_text) / 1000
        expiry = dt.datetime.strptime(ymd, "%y%m%d").replace(tzinfo=dt.timezone.utc, hour=21)
        spot = self.price(underlying)
        years = max((expiry.timestamp() * 1000 - now) / (365 * 86_400_000), 1 / 365)
        value, delta, gamma, theta, vega = _black_scholes(spot, strike, years, 0.30, right == "C")
        half = max(0.01, value * 0.01)
        return OptionQuote(
            broker=NAME, symbol=symbol, bid=round(max(value - half, 0.0), 2), ask=round(value + half, 2),
            last=round(value, 2), volume=0.0, mark=round(value, 2), open_interest=float(zlib.crc32(symbol.encode()) % 5000),
            implied_volatility=0.30, delta=round(delta, 4), gamma=round(gamma, 4), theta=round(theta, 4),
            vega=round(vega, 4), rho=0.0, theoretical_value=round(value, 4), underlying_price=spot, strike=strike,
            expiration=expiry.date().isoformat(), put_call="call" if right == "C" else "put", multiplier=100.0,
            underlying=underlying, timestamp=now, received_at=now,
        )

    def chain(self, underlying: str, expiration: str | None, strikes: int | None, today: dt.date) -> list[str]:
        """Option contracts around the price: ``strikes`` strikes (default 10), calls and puts, for ``expiration``
        or the next three monthly expirations (third Fridays)."""
        if underlying[:1] in "/$" or " " in underlying or len(underlying) > 6:
            raise SymbolsRefused(f"demo broker: no options on {underlying!r} (futures and indexes have none here)",
                                 [underlying])  # fmt: skip
        dates = [dt.date.fromisoformat(expiration)] if expiration else _monthlies(today, 3)
        spot = self.price(underlying)
        step = 1.0 if spot < 50 else 5.0 if spot < 500 else 10.0
        n = strikes or 10
        center = round(spot / step) * step
        levels = sorted({max(step, center + step * (i - n // 2)) for i in range(n)})
        return [f"{underlying:<6}{d:%y%m%d}{right}{round(k * 1000):08d}" for d in dates for k in levels for right in "CP"]

    def ticks(self, symbols: Sequence[str], start: int, count: int) -> list[Quote]:
        """``count`` quotes cycling through ``symbols`` from position ``start``."""
        now = now_ms()
        n = len(symbols)
        tick = self.tick
        return [tick(symbols[(start + i) % n], now) for i in range(count)]


_SIZES = (100.0, 200.0, 300.0, 400.0, 500.0, 100.0, 300.0)


def synthetic_bar(symbol: str, start: int, interval: int = 60) -> Bar:
    """The demo's bar of ``symbol`` for the minute starting at ``start`` (ms): always the same for the same
    arguments, streamed or fetched. ``seq`` is the minute's number since the epoch."""
    seed = zlib.crc32(f"{symbol}|{start}".encode())
    base = 20 + zlib.crc32(symbol.encode()) % 480
    wave = math.sin(start / 3_600_000)  # a slow swing over hours
    open_ = round(base * (1 + 0.05 * wave) + (seed % 100) / 100, 2)
    close = round(open_ + ((seed >> 8) % 41 - 20) / 100, 2)
    high = round(max(open_, close) + ((seed >> 16) % 10) / 100, 2)
    low = round(min(open_, close) - ((seed >> 20) % 10) / 100, 2)
    return Bar(broker=NAME, symbol=symbol, interval=interval, start=start, open=open_, high=high, low=low, close=close,
               volume=float(100 * (1 + (seed >> 4) % 50)), seq=start // (interval * 1000), timestamp=start + interval * 1000,
               received_at=now_ms())  # fmt: skip


def _black_scholes(spot: float, strike: float, years: float, vol: float, call: bool) -> tuple[float, ...]:
    root = vol * math.sqrt(years)
    d1 = (math.log(spot / strike) + vol * vol / 2 * years) / root
    d2 = d1 - root
    cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    pdf = math.exp(-d1 * d1 / 2) / math.sqrt(2 * math.pi)
    if call:
        value, delta = spot * cdf(d1) - strike * cdf(d2), cdf(d1)
    else:
        value, delta = strike * cdf(-d2) - spot * cdf(-d1), cdf(d1) - 1
    gamma = pdf / (spot * root)
    theta = -spot * pdf * vol / (2 * math.sqrt(years)) / 365
    vega = spot * pdf * math.sqrt(years) / 100
    return max(value, 0.0), delta, gamma, theta, vega


def _monthlies(today: dt.date, count: int) -> list[dt.date]:
    """The next ``count`` third Fridays after ``today``."""
    out: list[dt.date] = []
    year, month = today.year, today.month
    while len(out) < count:
        first = dt.date(year, month, 1)
        friday = first + dt.timedelta(days=(4 - first.weekday()) % 7 + 14)
        if friday > today:
            out.append(friday)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


class DemoClock:
    """Demo minutes: each lasts ``bar_seconds`` of real time, from the minute the session started in. With the
    default 60 s they are the real minutes."""

    def __init__(self, bar_seconds: float) -> None:
        self.bar_seconds = bar_seconds
        self.origin = now_ms() // MINUTE_MS * MINUTE_MS
        self.t0 = time.monotonic() - (now_ms() - self.origin) / 1000 * (bar_seconds / 60)

    def minute(self) -> int:
        """The start (ms) of the demo minute in progress."""
        return self.origin + int((time.monotonic() - self.t0) / self.bar_seconds) * MINUTE_MS

    def seconds_to_next(self) -> float:
        return self.bar_seconds - (time.monotonic() - self.t0) % self.bar_seconds


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
        self.options: list[str] = []  # option contracts (OCC symbols): quoted as OptionQuote
        self.bars: dict[str, int] = {}  # symbol -> start of the last bar sent
        self.depth: list[str] = []
        self.clock: DemoClock | None = None
        self.connected = False
        self._side: asyncio.Task[None] | None = None
        self._side_events: asyncio.Queue[Any] = asyncio.Queue()

    async def connect(self) -> None:
        self.connected = True

    async def subscribe(self, symbols: Sequence[str], kind: str = "quotes") -> None:
        if kind == "bars":
            assert self.clock is not None
            previous = self.clock.minute() - MINUTE_MS
            for symbol in symbols:
                if symbol not in self.bars:
                    # As a real broker does on a subscription: the last completed bar first (maybe a repeat).
                    self.bars[symbol] = previous
                    self._side_events.put_nowait(synthetic_bar(symbol, previous))
        elif kind == "depth":
            self.depth = sorted(set(self.depth) | set(symbols))
        else:
            options = {s for s in symbols if _OPTION.fullmatch(s)}
            self.options = sorted(set(self.options) | options)
            self.symbols = sorted(set(self.symbols) | (set(symbols) - options))

    async def unsubscribe(self, symbols: Sequence[str], kind: str = "quotes") -> None:
        gone = set(symbols)
        if kind == "bars":
            for symbol in gone:
                self.bars.pop(symbol, None)
        elif kind == "depth":
            self.depth = [s for s in self.depth if s not in gone]
        else:
            self.symbols = [s for s in self.symbols if s not in gone]
            self.options = [s for s in self.options if s not in gone]

    async def _side_feed(self) -> None:
        # Bars as each demo minute ends, order books and option quotes at their own pace.
        assert self.clock is not None
        every = 1.0 / self.settings.depth_per_second
        next_book = time.monotonic()
        while self.connected:
            wait = min(self.clock.seconds_to_next(), max(0.0, next_book - time.monotonic()), 0.5)
            await asyncio.sleep(wait)
            now = now_ms()
            done = self.clock.minute() - MINUTE_MS  # the last completed demo minute
            for symbol, last in list(self.bars.items()):
                for start in range(last + MINUTE_MS, done + 1, MINUTE_MS):
                    self._side_events.put_nowait(synthetic_bar(symbol, start))
                self.bars[symbol] = max(last, done)
            if time.monotonic() >= next_book:
                next_book = time.monotonic() + every
                items: list[Any] = [self.market.book(s, now) for s in self.depth]
                items += [self.market.option(s, now) for s in self.options[:200]]
                if items:
                    self._side_events.put_nowait(items)

    def _side_items(self) -> list[Any]:
        out: list[Any] = []
        while not self._side_events.empty():
            item = self._side_events.get_nowait()
            out.extend(item if type(item) is list else (item,))
        return out

    async def events(self) -> AsyncIterator[Any]:
        if self._side is None:
            self._side = asyncio.get_running_loop().create_task(self._side_feed())
        async for item in self._quotes():
            side = self._side_items() if not self._side_events.empty() else None
            if side:
                yield side
            yield item

    async def _quotes(self) -> AsyncIterator[Any]:
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
        if self._side is not None:
            self._side.cancel()


class DemoSession:
    def __init__(self, settings: DemoSettings) -> None:
        self.market = DemoMarket(settings.seed)
        self.account = DemoAccount(self.market, settings.order_every)
        self.clock = DemoClock(settings.bar_seconds)


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
            "fetch_transactions", "fetch_bars", "option_chain",
        },
        settings_cls=DemoSettings,
        description="Built-in demo broker: random-walk quotes, bars, books, options and a demo account (no login needed)",
        max_symbols=5000,
        kinds=("quotes", "bars", "depth"),
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
    stream = DemoStream(session.market, ctx.settings or DemoSettings())
    stream.clock = session.clock
    return stream


@hookimpl
def fetch_bars(ctx: BrokerContext, symbol: str, interval: int, start: int, end: int) -> list[Bar]:
    """Every demo minute in ``[start, end)`` up to the last completed one: the demo has no gaps in its history."""
    if interval != 60:
        return []
    done = _session(ctx).clock.minute()  # the minute in progress is not complete
    first = -(-start // MINUTE_MS) * MINUTE_MS
    return [synthetic_bar(symbol, t) for t in range(first, min(end, done), MINUTE_MS)]


@hookimpl
def option_chain(ctx: BrokerContext, underlying: str, expiration: str | None, strikes: int | None) -> list[str]:
    return _session(ctx).market.chain(underlying, expiration, strikes, dt.date.today())


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
