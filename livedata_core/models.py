"""Typed, frozen payload models with one vocabulary for every broker.

Field names follow ccxt's unified structures in snake_case. Numbers are ``float`` (or ``None`` when the
broker did not send them); JSON has no decimal type, so consumers see exactly what ``json.loads`` gives.
Times are integers in milliseconds since the Unix epoch: ``timestamp`` is the broker's own event time
(``None`` when the broker does not say) and ``received_at`` is when livedata received the data.

``to_dict`` / ``from_dict`` convert to and from the plain dicts published on Redis. ``from_dict`` ignores
keys it does not know, so a consumer on an older version keeps working when a field is added.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import attrs
import cattrs

__all__ = [
    "Account",
    "Balance",
    "MODEL_FOR_TYPE",
    "Order",
    "ORDER_STATUSES",
    "Position",
    "Quote",
    "Transaction",
    "from_dict",
    "make_quote",
    "now_ms",
    "to_dict",
]


def now_ms() -> int:
    """The current time in integer milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


_frozen = attrs.frozen(slots=True, kw_only=True)


@_frozen
class Quote:
    """A complete top-of-book quote for one symbol. Published on ``quotes:{symbol}``.

    Brokers that stream deltas merge them per symbol first: a published quote is never partial.
    """

    TYPE: ClassVar[str] = "quotes"

    broker: str
    symbol: str
    bid: float | None = None
    ask: float | None = None
    last: float | None = None
    volume: float | None = None
    bid_size: float | None = None
    ask_size: float | None = None
    last_size: float | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    mark: float | None = None
    timestamp: int | None = None
    received_at: int = attrs.field(factory=now_ms)
    extra: dict[str, Any] | None = None

    @property
    def identifier(self) -> str:
        return self.symbol


@_frozen
class Position:
    """One position in one account. Published on ``positions:{account_id}`` when it changes.

    ``quantity`` is signed: negative for a short position. A position that was closed is published once
    with ``quantity`` 0.
    """

    TYPE: ClassVar[str] = "positions"

    broker: str
    account_id: str
    symbol: str
    quantity: float
    market_value: float | None = None
    average_price: float | None = None
    unrealized_pnl: float | None = None
    asset_type: str | None = None
    timestamp: int | None = None
    received_at: int = attrs.field(factory=now_ms)
    extra: dict[str, Any] | None = None

    @property
    def identifier(self) -> str:
        return self.account_id


@_frozen
class Balance:
    """The balances of one account in one currency. Published on ``balances:{account_id}`` when they change.

    ``buying_power`` is ``None`` where the broker has no such figure (for example a cash account that
    reports only cash available for trading).
    """

    TYPE: ClassVar[str] = "balances"

    broker: str
    account_id: str
    cash: float | None = None
    buying_power: float | None = None
    account_value: float | None = None
    currency: str = "USD"
    equity: float | None = None
    maintenance_requirement: float | None = None
    timestamp: int | None = None
    received_at: int = attrs.field(factory=now_ms)
    extra: dict[str, Any] | None = None

    @property
    def identifier(self) -> str:
        return self.account_id


ORDER_STATUSES = frozenset(
    {
        "pending",  # received by the broker, not yet working
        "open",  # working at the exchange
        "partially_filled",
        "filled",
        "pending_cancel",
        "canceled",
        "rejected",
        "expired",
        "replaced",
        "unknown",
    }
)


@_frozen
class Order:
    """One order event. Published on ``orders:{account_id}``, every new event exactly once, never dropped.

    ``status`` is one of :data:`ORDER_STATUSES`; ``broker_status`` keeps the broker's own word for it.
    ``event`` says what happened when the broker reports events (``created``, ``filled``, ...), and
    ``event_id`` identifies one such report when the broker streams them (two executions of one order with
    the same status are two events).
    """

    TYPE: ClassVar[str] = "orders"

    broker: str
    account_id: str
    order_id: str
    symbol: str | None = None
    side: str | None = None
    order_type: str | None = None
    status: str = "unknown"
    broker_status: str | None = None
    event: str | None = None
    event_id: str | None = None
    quantity: float | None = None
    filled_quantity: float | None = None
    remaining_quantity: float | None = None
    price: float | None = None
    stop_price: float | None = None
    average_fill_price: float | None = None
    time_in_force: str | None = None
    entered_at: int | None = None
    timestamp: int | None = None
    received_at: int = attrs.field(factory=now_ms)
    extra: dict[str, Any] | None = None

    @property
    def identifier(self) -> str:
        return self.account_id


@_frozen
class Transaction:
    """One account transaction (trade, dividend, fee, transfer...). Published on ``transactions:{account_id}``.

    ``amount`` is the net cash effect on the account. Every transaction is published exactly once.
    """

    TYPE: ClassVar[str] = "transactions"

    broker: str
    account_id: str
    transaction_id: str
    type: str
    symbol: str | None = None
    quantity: float | None = None
    price: float | None = None
    amount: float | None = None
    description: str | None = None
    order_id: str | None = None
    timestamp: int | None = None
    received_at: int = attrs.field(factory=now_ms)
    extra: dict[str, Any] | None = None

    @property
    def identifier(self) -> str:
        return self.account_id


@_frozen
class Account:
    """An account a broker can report on. Not published; used by the runner and ``livedata accounts``.

    ``account_id`` is the number the user knows and the identifier used in channels.
    """

    broker: str
    account_id: str
    account_type: str | None = None
    name: str | None = None
    extra: dict[str, Any] | None = None


MODEL_FOR_TYPE: dict[str, type] = {m.TYPE: m for m in (Quote, Position, Balance, Order, Transaction)}

converter = cattrs.Converter(forbid_extra_keys=False)


def _make_fast_to_dict(cls: type):
    # Runs for every published quote. attrs.asdict and cattrs.unstructure are generic and several times slower,
    # and dict(zip(names, attrgetter(...))) still costs twice a dict display, so a display is generated once per
    # class from its attrs fields, the way attrs generates __init__.
    names = [f.name for f in attrs.fields(cls)]
    source = f"def to_dict_{cls.__name__}(obj):\n    return {{" + ", ".join(f"{n!r}: obj.{n}" for n in names) + "}\n"
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<livedata to_dict {cls.__name__}>", "exec"), namespace)
    return namespace[f"to_dict_{cls.__name__}"]


_TO_DICT = {cls: _make_fast_to_dict(cls) for cls in (Quote, Position, Balance, Order, Transaction, Account)}


def _make_positional_factory(cls: type):
    # Keyword arguments are most of what constructing a 17-field model costs (about 1.2 us a quote, of which
    # 0.5 us is matching keywords and 0.2 us is frozen attrs' object.__setattr__). Parsers that build a quote
    # per streamed item use this instead: positional, and setting the slots through their descriptors.
    names = [f.name for f in attrs.fields(cls)]
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
    namespace.update({f"set_{n}": cls.__dict__[n].__set__ for n in names})
    body = "".join(f"    set_{n}(obj, {n})\n" for n in names)
    source = f"def make_{cls.__name__}({', '.join(names)}, /):\n    obj = new(cls)\n{body}    return obj\n"
    exec(compile(source, f"<livedata make {cls.__name__}>", "exec"), namespace)
    return namespace[f"make_{cls.__name__}"]


make_quote = _make_positional_factory(Quote)
make_quote.__doc__ = """Build a :class:`Quote` from every field, positionally, in field order (fast path for parsers).

``make_quote(broker, symbol, bid, ask, last, volume, bid_size, ask_size, last_size, open, high, low, close,
mark, timestamp, received_at, extra)`` gives the same frozen object as ``Quote(broker=..., ...)`` in half the
time. Every argument is required and nothing is checked or defaulted, so use it only where a quote is built
per streamed item and the field order is spelled out next to the call.
"""


def to_dict(model: Any) -> dict[str, Any]:
    """The plain dict of a model, as published on Redis."""
    try:
        return _TO_DICT[type(model)](model)
    except KeyError:
        raise TypeError(f"not a livedata model: {type(model).__name__}") from None


def from_dict(cls: type, data: dict[str, Any]):
    """Build a model from a published dict, checking types; unknown keys are ignored.

    :raises ValueError: naming each bad field, e.g. ``quantity: invalid value for type, expected float``.
    """
    try:
        return converter.structure(data, cls)
    except cattrs.BaseValidationError as exc:
        raise ValueError(f"invalid {cls.__name__}: " + "; ".join(describe_validation_error(exc))) from None


def _format_exception(exc: BaseException, type_: Any) -> str:
    from .errors import LivedataError

    if isinstance(exc, LivedataError):
        return str(exc)  # a settings class's own check, already worded for the user
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unknown key(s): {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, ValueError) and type(exc) is ValueError and str(exc) and not str(exc).startswith("could not convert"):
        return str(exc)  # attrs validators say exactly what is wrong
    from cattrs.v import format_exception

    return format_exception(exc, type_)


def describe_validation_error(exc: BaseException) -> list[str]:
    """Readable lines for a cattrs validation error: ``field: what is wrong``."""
    if isinstance(exc, cattrs.BaseValidationError):
        lines = cattrs.transform_error(exc, format_exception=_format_exception)
        return [line.replace(" @ $.", " @ ").replace(" @ $", "") for line in lines]
    return [str(exc)]
