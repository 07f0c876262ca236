"""Typed, frozen payload models with one vocabulary for every broker.

Field names follow ccxt's unified structures in snake_case. Numbers are ``float`` (or ``None`` when the
broker did not send them); JSON has no decimal type, so consumers see exactly what ``json.loads`` gives.
Times are integers in milliseconds since the Unix epoch: ``timestamp`` is the broker's own event time
(``None`` when the broker does not say) and ``received_at`` is when livedata received the data.

``broker`` names the plugin that produced a payload (``"schwab"``) and ``instance`` the configured instance of it
(``"schwab_ira"``, the ``[brokers.NAME]`` table; the same as ``broker`` in a one-instance setup). Plugins leave
``instance`` as ``None``; the runner fills it in before publishing.

``to_dict`` / ``from_dict`` convert to and from the plain dicts published on Redis. Reading is lenient and
publishing is strict, through one set of field rules:

* ``from_dict(cls, data)`` (consumers) ignores keys it does not know, so a consumer on an older version keeps
  working when a field is added.
* ``from_dict(cls, data, strict=True)`` and :func:`check_model` (publishers) refuse what cannot be published
  as it is, naming every bad field: an unknown key (broker-specific values go in ``extra``), a value of the
  wrong type (nothing is converted: ``"1.5"`` and ``True`` are not numbers; whole numbers are fine where a
  float is expected), NaN or an infinity anywhere (JSON has no such number; it would reach consumers as
  ``null``, "not sent"), and an order ``status`` outside :data:`ORDER_STATUSES`.
"""

from __future__ import annotations

import math
import time
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import cattrs

__all__ = [
    "Account",
    "Balance",
    "Bar",
    "Depth",
    "DepthLevel",
    "MARKET_TYPES",
    "MODEL_FOR_TYPE",
    "OptionQuote",
    "Order",
    "ORDER_STATUSES",
    "Position",
    "Quote",
    "Transaction",
    "check_model",
    "finite_quote",
    "from_dict",
    "make_option_quote",
    "make_quote",
    "model_for",
    "now_ms",
    "quote_builder",
    "to_dict",
]


def now_ms() -> int:
    """The current time in integer milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


_frozen = attrs.frozen(slots=True, kw_only=True)
# The two quote models are built once per streamed item (make_quote): without a __weakref__ slot their layout is
# one CPython lets a plain slotted twin class take over by __class__ assignment, which is what makes make_quote
# cheap (see _make_positional_factory). Nothing takes weak references to quotes.
_frozen_quote = attrs.frozen(slots=True, kw_only=True, weakref_slot=False)


@_frozen_quote
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
    instance: str | None = None

    @property
    def identifier(self) -> str:
        return self.symbol


@_frozen_quote
class OptionQuote:
    """A complete quote of an option or a futures option. Published on ``quotes:{symbol}`` like a :class:`Quote`
    (same channel, latest key and conflation), with every field of a Quote and the option's own after them.

    Equity, futures and forex quotes stay :class:`Quote`: their payloads carry none of these fields. A consumer tells
    the two apart by the ``strike`` key (:func:`model_for`). ``expiration`` is an ISO date (``"2026-12-18"``),
    ``put_call`` is ``"call"`` or ``"put"``, ``implied_volatility`` a fraction (0.284 for 28.4 %; a
    plugin whose broker sends percent divides), Greeks per contract unit as the broker sends them.
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
    open_interest: float | None = None
    implied_volatility: float | None = None
    delta: float | None = None
    gamma: float | None = None
    theta: float | None = None
    vega: float | None = None
    rho: float | None = None
    theoretical_value: float | None = None
    underlying_price: float | None = None
    strike: float | None = None
    expiration: str | None = None
    put_call: str | None = None
    multiplier: float | None = None
    underlying: str | None = None
    timestamp: int | None = None
    received_at: int = attrs.field(factory=now_ms)
    extra: dict[str, Any] | None = None
    instance: str | None = None

    @property
    def identifier(self) -> str:
        return self.symbol


@_frozen
class Bar:
    """One completed OHLCV bar of one symbol. Published on ``bars:{symbol}``, kept under the latest key and
    appended to the capped stream ``live_data:stream:bars:{symbol}`` in ``start`` order, each bar once.

    ``interval`` is the bar's length in seconds (60 for 1-minute bars) and ``start`` the start of its period (ms
    since the epoch). ``seq`` is the broker's sequence number where it sends one (the runner drops repeats by it).
    ``backfilled`` is ``True`` for a bar the runner fetched after a gap (a reconnect, an outage) rather than
    received live.
    """

    TYPE: ClassVar[str] = "bars"

    broker: str
    symbol: str
    interval: int
    start: int
    open: float
    high: float
    low: float
    close: float
    volume: float | None = None
    seq: int | None = None
    backfilled: bool = False
    timestamp: int | None = None
    received_at: int = attrs.field(factory=now_ms)
    extra: dict[str, Any] | None = None
    instance: str | None = None

    @property
    def identifier(self) -> str:
        return self.symbol


@_frozen
class DepthLevel:
    """One price level of an order book: the price, the total size there and, where the broker says,
    how many market makers or orders make it up (``count``)."""

    price: float
    size: float
    count: int | None = None


@_frozen
class Depth:
    """The order book of one symbol, its top levels: ``bids`` and ``asks`` best first. Published on
    ``depth:{symbol}``, conflated per symbol like quotes (a slow consumer gets the newest book), latest key.

    ``book`` names the broker's book it comes from where it has several (``"NASDAQ"``, ``"NYSE"``, ``"OPTIONS"``).
    """

    TYPE: ClassVar[str] = "depth"

    broker: str
    symbol: str
    bids: list[DepthLevel] = attrs.field(factory=list)
    asks: list[DepthLevel] = attrs.field(factory=list)
    book: str | None = None
    timestamp: int | None = None
    received_at: int = attrs.field(factory=now_ms)
    extra: dict[str, Any] | None = None
    instance: str | None = None

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
    instance: str | None = None

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
    instance: str | None = None

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
    instance: str | None = None

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
    instance: str | None = None

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


MODEL_FOR_TYPE: dict[str, type] = {m.TYPE: m for m in (Quote, Position, Balance, Order, Transaction, Bar, Depth)}
"""The model of each channel type. ``quotes`` carries :class:`OptionQuote` too: :func:`model_for` tells which."""

MARKET_TYPES = (OptionQuote, Bar, Depth)
"""The market-data models beyond :class:`Quote` that a stream may yield (the runner's hot path tests ``Quote``
first, so these add nothing to a quote's cost)."""


def model_for(kind: str, data: dict[str, Any]) -> type:
    """The model class of a payload published on a ``kind`` channel: :data:`MODEL_FOR_TYPE`, except that a quote
    with a ``strike`` key is an :class:`OptionQuote`.

    :raises KeyError: ``kind`` is not a channel type.
    """
    if kind == "quotes" and type(data) is dict and "strike" in data:
        return OptionQuote
    return MODEL_FOR_TYPE[kind]

converter = cattrs.Converter(forbid_extra_keys=False)


def _make_fast_to_dict(cls: type):
    # Runs for every published quote. attrs.asdict and cattrs.unstructure are generic and several times slower,
    # and dict(zip(names, attrgetter(...))) still costs twice a dict display, so a display is generated once per
    # class from its attrs fields, the way attrs generates __init__.
    # A display of more than 15 items compiles to an empty dict grown by one MAP_ADD per item (resized twice on
    # the way); up to 15 it is one BUILD_CONST_KEY_MAP, sized for them. So the first 15 fields are a display and
    # any others are stored after them (a Quote's dict costs about 1,300 instructions less): same keys, same order.
    names = [f.name for f in attrs.fields(cls)]
    head, rest = names[:15], names[15:]
    source = (f"def to_dict_{cls.__name__}(obj):\n    d = {{" + ", ".join(f"{n!r}: obj.{n}" for n in head) + "}\n"
              + "".join(f"    d[{n!r}] = obj.{n}\n" for n in rest) + "    return d\n")
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<livedata to_dict {cls.__name__}>", "exec"), namespace)
    return namespace[f"to_dict_{cls.__name__}"]


_TO_DICT = {cls: _make_fast_to_dict(cls) for cls in (Quote, OptionQuote, Bar, DepthLevel, Position, Balance, Order,
                                                      Transaction, Account)}


def _depth_to_dict(obj: Depth) -> dict[str, Any]:
    # The levels are models of their own: a payload is plain dicts and lists all the way down.
    level = _TO_DICT[DepthLevel]
    out = _TO_DICT_DEPTH(obj)
    out["bids"] = [level(x) if type(x) is DepthLevel else x for x in obj.bids]
    out["asks"] = [level(x) if type(x) is DepthLevel else x for x in obj.asks]
    return out


_TO_DICT_DEPTH = _make_fast_to_dict(Depth)
_TO_DICT[Depth] = _depth_to_dict
quote_to_dict = _TO_DICT[Quote]
quote_to_dict.__doc__ = """:func:`to_dict` of a :class:`Quote` (exactly that type), without the look-up by type: for the per-quote hot path."""


def quote_builder(cls: type) -> type | None:
    """A plain slotted class with the fields of ``cls`` (:class:`Quote` or :class:`OptionQuote`) whose objects
    become ``cls`` objects by ``obj.__class__ = cls`` once every field is set; ``None`` where the interpreter
    refuses that assignment (then build with :func:`make_quote` / :func:`make_option_quote`).

    The cheapest way to build a quote field by field, for parsers that write their own per-layout code (as
    livedata_tos does): ``q = object.__new__(B); q.broker = ...; ...; q.__class__ = Quote``. Every field must be
    set, in any order, before the assignment. It is what :func:`make_quote` does inside.
    """
    try:
        return _BUILDERS[cls]
    except KeyError:
        pass
    names = tuple(f.name for f in attrs.fields(cls))
    builder: type | None = type(f"_{cls.__name__}Builder", (), {"__slots__": names, "__module__": cls.__module__})
    try:
        object.__new__(builder).__class__ = cls
    except TypeError:
        builder = None
    _BUILDERS[cls] = builder
    return builder


_BUILDERS: dict[type, type | None] = {}


def _make_positional_factory(cls: type):
    # Keyword arguments are most of what constructing a 17-field model costs (about 1.2 us a quote, of which
    # 0.5 us is matching keywords and 0.2 us is frozen attrs' object.__setattr__). Parsers that build a quote
    # per streamed item use this instead: positional, no checks, no defaults.
    # ``instance`` (the last field) may be left out: the runner fills it in.
    #
    # The fields are stored into a plain (mutable) slotted twin of ``cls`` with the same slots (quote_builder),
    # then the object becomes a ``cls`` by __class__ assignment. A frozen class's own __setattr__ refuses stores,
    # so setting its slots costs a call of each member descriptor's __set__ (about 800 instructions each, 14,300 a
    # quote); ``obj.x = x`` on the twin is the interpreter's specialised slot store (4,700 a quote, swap included).
    # CPython allows the swap only between classes of one layout: no __weakref__ slot (hence _frozen_quote),
    # same slots. Where it is refused (another interpreter), the descriptor stores are used.
    names = [f.name for f in attrs.fields(cls)]
    params = ", ".join(f"{n}=None" if n == "instance" else n for n in names)
    twin = quote_builder(cls)
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls, "twin": twin}
    namespace.update({f"set_{n}": cls.__dict__[n].__set__ for n in names})
    if twin is not None:
        body = "    obj = new(twin)\n" + "".join(f"    obj.{n} = {n}\n" for n in names) + "    obj.__class__ = cls\n"
    else:
        body = "    obj = new(cls)\n" + "".join(f"    set_{n}(obj, {n})\n" for n in names)
    source = f"def make_{cls.__name__}({params}, /):\n{body}    return obj\n"
    exec(compile(source, f"<livedata make {cls.__name__}>", "exec"), namespace)
    return namespace[f"make_{cls.__name__}"]


make_quote = _make_positional_factory(Quote)
make_quote.__doc__ = """Build a :class:`Quote` from every field, positionally, in field order (fast path for parsers).

``make_quote(broker, symbol, bid, ask, last, volume, bid_size, ask_size, last_size, open, high, low, close,
mark, timestamp, received_at, extra, instance=None)`` gives the same frozen object as ``Quote(broker=..., ...)``
in half the time. Every argument but ``instance`` (which plugins leave out: the runner fills it in) is required
and nothing is checked or defaulted, so use it only where a quote is built per streamed item and the field order
is spelled out next to the call.
"""

make_option_quote = _make_positional_factory(OptionQuote)
make_option_quote.__doc__ = """Build an :class:`OptionQuote` from every field, positionally, in field order (as :func:`make_quote`):
``make_option_quote(broker, symbol, bid, ask, last, volume, bid_size, ask_size, last_size, open, high, low, close,
mark, open_interest, implied_volatility, delta, gamma, theta, vega, rho, theoretical_value, underlying_price, strike,
expiration, put_call, multiplier, underlying, timestamp, received_at, extra, instance=None)``.
"""


def to_dict(model: Any) -> dict[str, Any]:
    """The plain dict of a model, as published on Redis."""
    try:
        return _TO_DICT[type(model)](model)
    except KeyError:
        raise TypeError(f"not a livedata model: {type(model).__name__}") from None


def from_dict(cls: type, data: dict[str, Any], *, strict: bool = False):
    """Build a model from a dict, checking types.

    Lenient by default, for reading what was published: unknown keys are ignored (a newer publisher may have
    added fields) and values are converted where cattrs can (``"1.5"`` to 1.5). With ``strict=True``, for
    publishing, the payload must already be exactly right (see the module docstring): nothing is converted
    except whole numbers to floats, and unknown keys are refused.

    :raises ValueError: naming each bad field, e.g. ``invalid Order: status: 'bogus' is not an order status;
        expected one of ...``.
    """
    if strict:
        if not isinstance(data, dict):
            raise ValueError(f"invalid {cls.__name__}: must be a dict, was {type(data).__name__}")
        problems = _problems(cls, data, check_keys=True)
        if problems:
            raise ValueError(f"invalid {cls.__name__}: " + "; ".join(problems))
    try:
        return converter.structure(data, cls)
    except cattrs.BaseValidationError as exc:
        raise ValueError(f"invalid {cls.__name__}: " + "; ".join(describe_validation_error(exc))) from None


def check_model(model: Any) -> Any:
    """Return ``model`` if it can be published as it is, else raise ``ValueError`` naming every bad field.

    The same rules as ``from_dict(..., strict=True)``, for a model built in code: the types declared (models
    are not type-checked when constructed, so a parser building one never raises), finite numbers only, and
    an order ``status`` of :data:`ORDER_STATUSES`.
    """
    cls = type(model)
    if cls not in _RULES:
        raise TypeError(f"not a livedata model: {cls.__name__}")
    problems = _problems(cls, _TO_DICT[cls](model), check_keys=False)
    if problems:
        raise ValueError(f"invalid {cls.__name__}: " + "; ".join(problems))
    return model


# -- the field rules of strict checking --------------------------------------------------------------------------

_INT_RANGE = (-(2**63), 2**64)  # what JSON encoding (orjson) carries as an integer


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:60] + "..."
    return f"{type(value).__name__} {text}"


def _not_finite(where: str, value: float) -> str:
    return f"{where}: {value!r} is not a finite number (NaN and infinities cannot be published)"


def _check_number(name: str, value: Any) -> str | None:
    if isinstance(value, float):
        return None if math.isfinite(value) else _not_finite(name, value)
    if isinstance(value, int) and not isinstance(value, bool):
        return None if _INT_RANGE[0] <= value < _INT_RANGE[1] else f"{name}: {value} is out of range (64-bit integers at most)"
    return f"{name}: must be a number, was {_describe(value)}"


def _check_int(name: str, value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return None if _INT_RANGE[0] <= value < _INT_RANGE[1] else f"{name}: {value} is out of range (64-bit integers at most)"
    return f"{name}: must be a whole number, was {_describe(value)}"


def _check_str(name: str, value: Any) -> str | None:
    return None if isinstance(value, str) else f"{name}: must be a string, was {_describe(value)}"


def _check_bool(name: str, value: Any) -> str | None:
    return None if isinstance(value, bool) else f"{name}: must be true or false, was {_describe(value)}"


PUT_CALL = frozenset({"call", "put"})


def _check_put_call(name: str, value: Any) -> str | None:
    if type(value) is str and value in PUT_CALL:
        return None
    return f"{name}: {value!r} is not 'call' or 'put'"


def _check_expiration(name: str, value: Any) -> str | None:
    if type(value) is str and len(value) == 10 and value[4] == value[7] == "-" and (value[:4] + value[5:7] + value[8:]).isdigit():
        return None
    return f"{name}: {value!r} is not an ISO date (YYYY-MM-DD)"


def _check_levels(name: str, value: Any) -> str | None:
    if not isinstance(value, list):
        return f"{name}: must be a list of price levels, was {_describe(value)}"
    rules = _RULES[DepthLevel]
    for i, level in enumerate(value):
        where = f"{name}[{i}]"
        if isinstance(level, DepthLevel):
            data = _TO_DICT[DepthLevel](level)
        elif isinstance(level, dict):
            data = level
            unknown = sorted(str(k) for k in data if k not in rules)
            if unknown:
                return f"{where}: unknown key(s): {', '.join(unknown)}; a level has price, size and count"
            missing = [k for k, rule in rules.items() if rule.required and k not in data]
            if missing:
                return f"{where}: {', '.join(missing)} missing"
        else:
            return f"{where}: must be a price level (price, size, count), was {_describe(level)}"
        for key, item in data.items():
            rule = rules[key]
            if item is None and rule.optional:
                continue
            problem = rule.check(f"{where}.{key}", item)
            if problem:
                return problem
    return None


def _check_status(name: str, value: Any) -> str | None:
    if type(value) is str and value in ORDER_STATUSES:
        return None
    return f"{name}: {value!r} is not an order status; expected one of {', '.join(sorted(ORDER_STATUSES))}"


def _check_extra(name: str, value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"{name}: must be an object (a dict) of broker-specific fields, was {_describe(value)}"
    return _first_non_finite(name, value)


def _first_non_finite(where: str, value: Any) -> str | None:
    """The first NaN or infinity nested in ``value``, named by its path (``extra.fx``, ``extra.legs[1]``)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else _not_finite(where, value)
    if isinstance(value, dict):
        items: Any = ((f"{where}.{key}", item) for key, item in value.items())
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = ((f"{where}[{i}]", item) for i, item in enumerate(value))
    else:
        return None
    for path, item in items:
        found = _first_non_finite(path, item)
        if found:
            return found
    return None


class _Rule:
    __slots__ = ("check", "optional", "required")

    def __init__(self, check: Callable[[str, Any], str | None], optional: bool, required: bool) -> None:
        self.check = check  # (field name, value) -> "field: what is wrong", or None
        self.optional = optional  # None is allowed
        self.required = required  # no default: a payload dict must have it


def _rules(cls: type) -> dict[str, _Rule]:
    attrs.resolve_types(cls)
    out: dict[str, _Rule] = {}
    for field in attrs.fields(cls):
        tp = field.type
        args = set(typing.get_args(tp)) if isinstance(tp, types.UnionType) else {tp}
        optional = type(None) in args
        args.discard(type(None))
        (base,) = args
        if field.name == "status" and cls is Order:
            check = _check_status
        elif field.name == "extra":
            check = _check_extra
        elif field.name == "put_call":
            check = _check_put_call
        elif field.name == "expiration":
            check = _check_expiration
        elif typing.get_origin(base) is list:
            check = _check_levels
        else:
            check = {float: _check_number, int: _check_int, str: _check_str, bool: _check_bool}[base]
        out[field.name] = _Rule(check, optional, field.default is attrs.NOTHING)
    return out


_RULES = {cls: _rules(cls) for cls in (Quote, OptionQuote, Bar, DepthLevel, Depth, Position, Balance, Order, Transaction,
                                       Account)}


def _problems(cls: type, data: dict[Any, Any], *, check_keys: bool) -> list[str]:
    """Every reason ``data`` (a payload dict) is not a publishable ``cls``: ``field: what is wrong``."""
    rules = _RULES[cls]
    problems = []
    if check_keys:
        unknown = sorted(str(k) for k in data if k not in rules)
        if unknown:
            problems.append(f"unknown key(s): {', '.join(unknown)}; the fields of {cls.__name__} are "
                            f"{', '.join(rules)} (put broker-specific values in extra)")  # fmt: skip
        problems.extend(f"{name}: required field missing" for name, rule in rules.items() if rule.required and name not in data)
    for name, value in data.items():
        rule = rules.get(name)
        if rule is None or (value is None and rule.optional):
            continue
        problem = rule.check(name, value)
        if problem:
            problems.append(problem)
    return problems


def _flat_extra(extra: Any) -> bool:
    # IBKR puts {"conid": 265598, "market_data": "RealTime"} in every quote: string keys with strings, None or 64-bit
    # ints need no full check (which costs about 3 us, a third of such a quote's whole path).
    if type(extra) is not dict:
        return False
    low, high = _INT_RANGE
    for key, value in extra.items():
        kind = type(value)
        if type(key) is not str or not (kind is str or value is None or (kind is int and low <= value < high)):
            return False
    return True


def _make_finite_quote():
    # The runner's hot path checks every streamed quote with this (about 0.17 us a quote, against 3 us for
    # check_model). NaN and infinities survive addition, so a finite sum of the float fields proves each of them
    # finite; a string or a list raises TypeError. The float terms default to 0.0, not 0: adding an int to a
    # float takes a slow path that nearly doubles the cost. The two times must be ints. False (a bad value, an
    # extra to look into, or huge finite values whose sum overflowed) sends the quote to check_model.
    rules = _RULES[Quote]
    floats = [name for name, rule in rules.items() if rule.check is _check_number]
    assert [name for name, rule in rules.items() if rule.check is _check_int] == ["timestamp", "received_at"]
    terms = " + ".join(f"(q.{n} or 0.0)" for n in floats)
    source = (f"def finite_quote(q):\n    try:\n        s = {terms}\n    except TypeError:\n        return False\n"
              "    return (s - s == 0.0 and (q.extra is None or flat_extra(q.extra)) and type(q.received_at) is int\n"
              "            and type(q.timestamp or 0) is int)\n")  # fmt: skip
    namespace: dict[str, Any] = {"flat_extra": _flat_extra}
    exec(compile(source, "<livedata finite_quote>", "exec"), namespace)
    return namespace["finite_quote"]


finite_quote = _make_finite_quote()
finite_quote.__doc__ = """``True`` when every number of a :class:`Quote` is finite (or ``None``), its times are whole numbers and its
``extra`` is absent or flat (string keys; strings, ``None`` or 64-bit whole numbers): a cheap test for the per-quote hot path. ``False`` means "run :func:`check_model`" (which
raises if the quote is bad). It does not tell a ``bool`` from a number; :func:`check_model` does.
"""


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
