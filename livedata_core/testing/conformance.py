"""The broker plugin conformance suite: one set of tests every broker plugin must pass.

Your plugin's ``tests/conftest.py`` provides fixtures that describe the broker, and one test module pulls in
the suite by subclassing it::

    # tests/test_conformance.py
    from livedata_core.testing.conformance import ConformanceSuite

    class TestConformance(ConformanceSuite):
        pass

The ``livedata_core.testing`` pytest plugin must be enabled. Fixtures (read lazily, only by the tests that
need them, so a broker that does not stream needs no server):

==================================  ========  ===============================================================
Fixture                             Needed    What it returns
==================================  ========  ===============================================================
``conformance_broker``              always    the broker's name (``"acme"``)
``conformance_settings``            no        the ``[brokers.NAME]`` settings (default ``{}``)
``conformance_token_store``         no        a token store holding working tokens (default: empty memory store)
``conformance_symbols``             stream    symbols the fake server quotes
``conformance_server``              stream    the running fake server; ``drop()`` cuts every connection;
                                              ``send_heartbeat()`` if the real broker sends heartbeats (TC-Q05)
``conformance_account``             fetch_*   an account id the fake server knows
``conformance_secrets``             no        strings that must never be logged (API keys, tokens)
``conformance_unknown_account``     no        an account id the broker does not have (``NO-SUCH-ACCOUNT``)
``conformance_invalid_symbols``     no        symbols the broker must refuse (``["", "AAPL*", "A?B"]``)
``conformance_unreachable_settings`` no       settings pointing at a port nobody listens on (TC-ERR-03)
``conformance_bad_credentials``     no        settings with credentials the fake server rejects (TC-ERR-04)
``conformance_bad_token_store``     no        a token store holding credentials the fake server rejects
                                              (TC-ERR-04; default: an empty memory store)
``conformance_seed``                no        ``seed(kind, account_id)``: make the fake server hold at least one
                                              item of ``kind`` (``"positions"``, ``"balances"``, ``"orders"``,
                                              ``"transactions"``) for the account (TC-ACC-02..06)
``conformance_refused_symbols``     no        symbols that normalise but the fake server refuses (TC-Q04)
``conformance_fake_sends_no_heartbeats`` no   why TC-Q05 cannot run: the fake server sends no heartbeats where
                                              the real one does (default ``""``: it runs)
``conformance_timeout``             no        seconds to wait for data (default 10)
``conformance_bar_symbols``         no        symbols the fake server streams bars of (TC-BAR-01/02; a broker
                                              whose ``kinds`` has ``"bars"``)
``conformance_depth_symbols``       no        symbols the fake server streams books of (TC-DEPTH-01)
``conformance_chain_underlying``    no        an underlying the fake server has an option chain for (TC-CHAIN-01)
``conformance_unknown_underlying``  no        an underlying it has none for (TC-CHAIN-01 checks the refusal)
==================================  ========  ===============================================================

``conformance_seed`` is also asked, when defined, for ``seed("bars", symbol)`` and ``seed("depth", symbol)`` after
subscribing, for a fake server that sends bars or books only when told.

Each test is named after its ID (``test_TC_Q01_...``), so ``pytest -k TC_Q01`` runs one. A group whose
capability the broker does not declare is skipped with the reason; an optional check whose fixture is not
defined is skipped, naming the fixture. No check passes on nothing: a fetch that returns an empty list is
seeded first (``conformance_seed``) or the test is skipped saying so, never passed.

Secrets (TC-SEC, and every error message of TC-ERR-01..04) are the strings of ``conformance_secrets`` and every
string value of a settings field that hides itself in ``repr`` (``attrs.field(repr=False)`` or a masking repr), as
in ``conformance_bad_credentials`` and ``conformance_unreachable_settings``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import time
import typing
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any

import pytest

from ..plugin_kit.broker import CAPABILITIES, Broker, BrokerContext, BrokerInfo
from ..errors import AuthError, InvalidIdentifier, LivedataError, StreamError
from ..plugin_kit.hookspecs import OPTIONAL_HOOKS
from ..models import (
    ORDER_STATUSES, Account, Balance, Bar, Depth, OptionQuote, Order, Position, Quote, Transaction, check_model, now_ms,
)
from ..plugin_kit.plugins import get_broker
from ..plugin_kit.streaming import BrokerStream
from ..plugin_kit.tokens import MemoryTokenStore
from .published import PublishedCollector

__all__ = [
    "ConformanceSuite",
    "TRANSPORT_LOGGERS",
    "check_account_model",
    "check_bar",
    "check_capabilities",
    "check_depth",
    "check_numbers",
    "check_quote",
    "read_quotes",
]

REQUIRED_FIXTURES = {
    "conformance_broker": 'return your broker\'s name, e.g. `return "acme"`',
    "conformance_symbols": "return the symbols your fake server quotes, e.g. `return [\"AAPL\", \"MSFT\"]`",
    "conformance_server": "start your fake server, point `conformance_settings` at it, and return an object "
    "whose `drop()` cuts every client connection (see livedata_core.testing.ServerThread)",
    "conformance_account": 'return an account id your fake server knows, e.g. `return "ACC-1"`',
}

OPTIONAL_FIXTURES: dict[str, Any] = {
    "conformance_settings": dict,
    "conformance_token_store": MemoryTokenStore,
    "conformance_secrets": list,
    "conformance_unknown_account": lambda: "NO-SUCH-ACCOUNT",
    "conformance_invalid_symbols": lambda: ["", "AAPL*", "A?B"],
    "conformance_bad_token_store": MemoryTokenStore,
    "conformance_fake_sends_no_heartbeats": lambda: "",
    "conformance_timeout": lambda: 10.0,
}

KIND_OF_HOOK = {"fetch_positions": "positions", "fetch_balances": "balances", "fetch_orders": "orders",
                "fetch_transactions": "transactions"}  # fmt: skip
QUIET_STREAM_MAX_WAIT = 30.0
"""TC-Q05 watches a quiet stream for two heartbeat timeouts; a stream whose timeout is longer is skipped."""

TRANSPORT_LOGGERS = ("websockets", "httpx", "httpcore", "asyncio", "hpack", "urllib3")
"""Third-party loggers TC-SEC-01 does not read: they log raw frames and headers at DEBUG, and ``livedata``
keeps them at WARNING unless run with ``-vvv``. Everything else, your plugin's loggers included, is read."""

ACCOUNT_MODELS = {
    "fetch_positions": Position,
    "fetch_balances": Balance,
    "fetch_orders": Order,
    "fetch_transactions": Transaction,
}


# -- checks usable on their own ------------------------------------------------------------------------------


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


_FLOAT_TYPES = (float, float | None)
_INT_TYPES = (int, int | None)
_TIME_FIELDS = frozenset({"timestamp", "received_at", "entered_at", "start"})


def check_numbers(model: Any) -> None:
    """Assert that every number field of a model is a finite ``float`` (or ``None`` where allowed), and that
    ``timestamp``/``received_at`` are integer milliseconds."""
    for name, hint in _hints(type(model)).items():
        value = getattr(model, name)
        if hint in _FLOAT_TYPES:
            if value is None and hint is not float:
                continue
            assert type(value) is float, (
                f"{type(model).__name__}.{name} is {value!r} ({type(value).__name__}); numbers must be float "
                "(convert with float(...)) or None"
            )
            assert math.isfinite(value), f"{type(model).__name__}.{name} is {value!r}; use None for 'unknown'"
        elif hint in _INT_TYPES:
            if value is None and hint is not int:
                continue
            if name not in _TIME_FIELDS:
                assert type(value) is int, f"{type(model).__name__}.{name} is {value!r}; it must be a whole number (int)"
                continue
            assert type(value) is int, (
                f"{type(model).__name__}.{name} is {value!r}; times are int milliseconds since the epoch"
            )
            assert value > 10**12, f"{type(model).__name__}.{name} is {value!r}: milliseconds, not seconds?"


def check_publishable(model: Any) -> None:
    """Assert that the runner would publish ``model`` as it is (:func:`livedata_core.models.check_model`)."""
    try:
        check_model(model)
    except ValueError as exc:
        raise AssertionError(f"the runner would refuse this {type(model).__name__} as a counted skip: {exc}") from None


def check_quote(quote: Any, broker: str, symbols: Iterable[str]) -> None:
    """Assert that ``quote`` is a complete :class:`Quote` (or :class:`OptionQuote`) of ``broker`` for one of
    ``symbols``."""
    assert isinstance(quote, (Quote, OptionQuote)), f"expected a Quote, got {type(quote).__name__}: {quote!r}"
    assert quote.broker == broker, f"Quote.broker is {quote.broker!r}, expected {broker!r}"
    wanted = set(symbols)
    assert quote.symbol in wanted, f"Quote for {quote.symbol!r}, which was not subscribed ({sorted(wanted)})"
    check_numbers(quote)
    assert any(p is not None for p in (quote.bid, quote.ask, quote.last, quote.mark)), (
        f"Quote for {quote.symbol!r} has no price at all (bid, ask, last, mark): merge deltas before yielding"
    )
    if quote.bid is not None and quote.ask is not None:
        assert quote.ask >= quote.bid, f"Quote for {quote.symbol!r} has ask {quote.ask} below bid {quote.bid}"
    check_publishable(quote)


def check_bar(bar: Any, broker: str, symbols: Iterable[str]) -> None:
    """Assert that ``bar`` is a well-formed :class:`Bar` of ``broker`` for one of ``symbols``: a positive
    ``interval``, a ``start`` on a whole interval, ``low <= open, close <= high``."""
    assert isinstance(bar, Bar), f"expected a Bar, got {type(bar).__name__}: {bar!r}"
    assert bar.broker == broker, f"Bar.broker is {bar.broker!r}, expected {broker!r}"
    wanted = set(symbols)
    assert bar.symbol in wanted, f"Bar of {bar.symbol!r}, which was not subscribed ({sorted(wanted)})"
    check_numbers(bar)
    assert bar.interval > 0, f"Bar of {bar.symbol} has interval {bar.interval}: seconds, 60 for 1-minute bars"
    assert bar.start % (bar.interval * 1000) == 0, (
        f"Bar of {bar.symbol} starts at {bar.start}, not on a whole {bar.interval}s interval: start is the period's "
        "start in ms (check the broker's field order: Schwab's CHART_EQUITY puts the time at 7, not 1)"
    )
    assert bar.low <= min(bar.open, bar.close) and max(bar.open, bar.close) <= bar.high, (
        f"Bar of {bar.symbol} at {bar.start} is not low <= open, close <= high: {bar!r} (fields swapped?)"
    )
    assert not bar.backfilled, "a plugin leaves backfilled False: the runner sets it on bars it fetched for a gap"
    check_publishable(bar)


def check_depth(depth: Any, broker: str, symbols: Iterable[str]) -> None:
    """Assert that ``depth`` is an order book of ``broker`` for one of ``symbols``, each side best first."""
    assert isinstance(depth, Depth), f"expected a Depth, got {type(depth).__name__}: {depth!r}"
    assert depth.broker == broker, f"Depth.broker is {depth.broker!r}, expected {broker!r}"
    wanted = set(symbols)
    assert depth.symbol in wanted, f"Depth of {depth.symbol!r}, which was not subscribed ({sorted(wanted)})"
    check_numbers(depth)
    bids = [level.price for level in depth.bids]
    asks = [level.price for level in depth.asks]
    assert bids == sorted(bids, reverse=True), f"Depth of {depth.symbol}: bids must be best (highest) first: {bids}"
    assert asks == sorted(asks), f"Depth of {depth.symbol}: asks must be best (lowest) first: {asks}"
    check_publishable(depth)


def check_account_model(model: Any, cls: type, broker: str, account_id: str) -> None:
    """Assert that ``model`` is a ``cls`` of ``broker`` for ``account_id`` with well-formed fields."""
    assert isinstance(model, cls), f"expected a {cls.__name__}, got {type(model).__name__}: {model!r}"
    assert model.broker == broker, f"{cls.__name__}.broker is {model.broker!r}, expected {broker!r}"
    assert model.account_id == account_id, (
        f"{cls.__name__}.account_id is {model.account_id!r} but account {account_id!r} was asked for: use the "
        "account number the user knows, never a broker-internal hash"
    )
    check_numbers(model)
    if cls is Position:
        assert model.symbol, f"Position without a symbol: {model!r}"
    if cls is Order:
        assert isinstance(model.order_id, str) and model.order_id, f"Order without an order_id: {model!r}"
        assert model.status in ORDER_STATUSES, (
            f"Order {model.order_id} has status {model.status!r}; use one of {sorted(ORDER_STATUSES)} and keep the "
            "broker's own word in broker_status"
        )
    if cls is Transaction:
        assert isinstance(model.transaction_id, str) and model.transaction_id, f"Transaction without an id: {model!r}"
        assert model.type, f"Transaction {model.transaction_id} has no type"
    check_publishable(model)  # last: the checks above word the common mistakes better


def check_capabilities(broker: Broker) -> None:
    """Assert that a broker declares exactly the capabilities whose hooks it implements."""
    info = broker.info
    assert isinstance(info, BrokerInfo)
    implemented = {h for h in broker.impls if h not in OPTIONAL_HOOKS}
    declared = set(info.capabilities)
    assert declared <= CAPABILITIES, f"unknown capabilities {sorted(declared - CAPABILITIES)}"
    assert declared == implemented, (
        f"declared capabilities {sorted(declared)} but implemented hooks {sorted(implemented)}: every capability "
        "needs the hook of the same name, and every such hook must be declared"
    )


def _heartbeat_sender(server: Any) -> Any:
    """A call that makes the fake server send one heartbeat as the real broker does on a quiet connection (its
    ``send_heartbeat()``; on a :class:`~livedata_core.testing.ServerThread`, run on the server's loop), or ``None``
    when it has none: the broker sends no heartbeats, and the stream must make them (from pings)."""
    inner = getattr(server, "server", None)
    if callable(getattr(server, "call", None)) and callable(getattr(inner, "send_heartbeat", None)):
        return lambda: asyncio.to_thread(server.call, inner.send_heartbeat)
    send = getattr(server, "send_heartbeat", None)
    return send if callable(send) else None


async def _beat(send: Any, every: float) -> None:
    while True:
        result = send()
        if inspect.isawaitable(result):
            await result
        await asyncio.sleep(every)


async def read_quotes(stream: BrokerStream, symbols: Sequence[str], timeout: float) -> list[Quote]:
    """Read ``stream.events()`` until every symbol had a quote; return every :class:`Quote` read.

    :raises AssertionError: naming the symbols still without a quote after ``timeout`` seconds.
    """
    missing = set(symbols)
    quotes: list[Quote] = []
    events = stream.events()
    try:
        async with asyncio.timeout(timeout):
            async for item in events:
                for model in item if type(item) is list else [item]:
                    if isinstance(model, (Quote, OptionQuote)):
                        quotes.append(model)
                        missing.discard(model.symbol)
                if not missing:
                    break
    except TimeoutError:
        raise AssertionError(
            f"no quote for {sorted(missing)} within {timeout:g}s after subscribing; read {len(quotes)} quote(s)"
        ) from None
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
    return quotes


# -- the harness -----------------------------------------------------------------------------------------------


class Harness:
    """What the suite's tests share: fixture lookup with clear errors, the broker, sessions and streams."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request

    def fixture(self, name: str) -> Any:
        """The value of a conformance fixture; a clear failure if a required one is missing."""
        try:
            return self.request.getfixturevalue(name)
        except pytest.FixtureLookupError as exc:
            if exc.argname != name:
                raise
            if name in OPTIONAL_FIXTURES:
                return OPTIONAL_FIXTURES[name]()
            hint = REQUIRED_FIXTURES.get(name, "")
            pytest.fail(f"`{name}` must be defined in your conftest.py: {hint}", pytrace=False)

    def optional(self, name: str, why: str) -> Any:
        """The value of an optional fixture, or skip the test saying which fixture would enable it."""
        try:
            return self.request.getfixturevalue(name)
        except pytest.FixtureLookupError as exc:
            if exc.argname != name:
                raise
            pytest.skip(f"define `{name}` in your conftest.py to check that {why}")

    @property
    def name(self) -> str:
        return self.fixture("conformance_broker")

    @property
    def broker(self) -> Broker:
        return get_broker(self.name)

    @property
    def timeout(self) -> float:
        return float(self.fixture("conformance_timeout"))

    def require(self, *capabilities: str) -> Broker:
        """The broker, or skip when it does not declare every one of ``capabilities``."""
        broker = self.broker
        missing = [c for c in capabilities if not broker.has(c)]
        if missing:
            pytest.skip(f"broker {broker.name!r} does not declare {', '.join(missing)}")
        return broker

    def symbols(self) -> list[str]:
        broker = self.broker
        return [broker.normalize_symbol(s) for s in self.fixture("conformance_symbols")]

    def context(self, settings: dict[str, Any] | None = None, tokens: Any = None) -> BrokerContext:
        settings = self.fixture("conformance_settings") if settings is None else settings
        tokens = self.fixture("conformance_token_store") if tokens is None else tokens
        return self.broker.make_context(settings, tokens)

    @contextlib.asynccontextmanager
    async def session(self, settings: dict[str, Any] | None = None, tokens: Any = None) -> AsyncIterator[BrokerContext]:
        """An authenticated context, shut down afterwards (in the same event loop as its clients)."""
        broker = self.broker
        ctx = self.context(settings, tokens)
        try:
            if broker.has("authenticate"):
                await broker.call("authenticate", ctx=ctx)
            yield ctx
        finally:
            if broker.has_hook("shutdown"):
                with contextlib.suppress(Exception):
                    await broker.call("shutdown", ctx=ctx)

    @contextlib.asynccontextmanager
    async def stream(self, ctx: BrokerContext, symbols: Sequence[str]) -> AsyncIterator[BrokerStream]:
        """A connected stream subscribed to ``symbols``, closed afterwards."""
        stream = await self.broker.call("stream", ctx=ctx)
        assert isinstance(stream, BrokerStream), (
            f"the stream hook returned {type(stream).__name__}; return a livedata_core.BrokerStream subclass"
        )
        try:
            await asyncio.wait_for(stream.connect(), self.timeout)
            await asyncio.wait_for(stream.subscribe(list(symbols)), self.timeout)
            yield stream
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stream.close(), 5)

    async def fetch(self, ctx: BrokerContext, hook: str, account_id: str) -> Any:
        return await self.broker.call(hook, ctx=ctx, account_id=account_id, since=int(time.time() * 1000) - 86_400_000)

    def kind_symbols(self, kind: str, fixture: str) -> tuple[Broker, list[str]]:
        """The broker and its ``fixture`` symbols, or skip: the broker streams no ``kind``, or the fixture is missing."""
        broker = self.require("stream")
        if kind not in broker.info.kinds:
            pytest.skip(f"broker {broker.name!r} does not stream {kind} (BrokerInfo.kinds is {broker.info.kinds})")
        raw = self.optional(fixture, f"the {kind} the fake server streams are checked")
        return broker, [broker.normalize_symbol(s) for s in raw]

    async def read_kind(self, ctx: BrokerContext, kind: str, cls: type, symbols: list[str]) -> list[Any]:
        """Connect, subscribe ``symbols`` of ``kind``, seed them if the fake needs it, and read until every symbol
        had a ``cls``; every ``cls`` read."""
        stream = await self.broker.call("stream", ctx=ctx)
        assert isinstance(stream, BrokerStream)
        found: list[Any] = []
        missing = set(symbols)
        try:
            await asyncio.wait_for(stream.connect(), self.timeout)
            await asyncio.wait_for(stream.subscribe(list(symbols), kind=kind), self.timeout)
            for symbol in symbols:
                self.seed(kind, symbol)
            events = stream.events()
            try:
                async with asyncio.timeout(self.timeout):
                    async for item in events:
                        for model in item if type(item) is list else [item]:
                            if isinstance(model, cls):
                                found.append(model)
                                missing.discard(model.symbol)
                        if not missing:
                            break
            except TimeoutError:
                raise AssertionError(f"no {cls.__name__} for {sorted(missing)} within {self.timeout:g}s of "
                                     f"subscribe(symbols, kind={kind!r})") from None  # fmt: skip
            finally:
                with contextlib.suppress(Exception):
                    await events.aclose()  # type: ignore[attr-defined]
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stream.close(), 5)
        return found

    def drop_server(self) -> Any:
        server = self.fixture("conformance_server")
        return server.drop()

    def secrets(self, *settings: Any) -> list[str]:
        """``conformance_secrets`` and the hidden string settings of each ``settings`` (see the module docs)."""
        found = [s for s in self.fixture("conformance_secrets") if s]
        for ctx_settings in settings:
            found += secret_setting_values(ctx_settings)
        return found

    def seed(self, kind: str, account_id: str) -> bool:
        """Ask the plugin's fake server for data of ``kind`` (``conformance_seed``); ``False`` if it has no seeder.
        For ``"bars"`` and ``"depth"`` the second argument is a symbol."""
        try:
            seeder = self.request.getfixturevalue("conformance_seed")
        except pytest.FixtureLookupError as exc:
            if exc.argname != "conformance_seed":
                raise
            return False
        seeder(kind, account_id)
        return True

    def not_empty(self, items: list[Any], hook: str, account_id: str, seeded: bool) -> None:
        """Skip (visibly) or fail a check that would otherwise pass on an empty list."""
        if items:
            return
        kind = KIND_OF_HOOK[hook]
        if seeded:
            raise AssertionError(f"{hook}({account_id!r}) returned no {kind} after conformance_seed({kind!r}) made "
                                 "the fake server hold some")  # fmt: skip
        pytest.skip(f"{hook}({account_id!r}) returned no {kind}, so nothing was checked: make your fake server "
                    f"return some for the account, or define `conformance_seed` (seed({kind!r}, account_id))")


def _credential_values(ctx: Any) -> list[str]:
    """The API keys and secrets a context's credentials hold (none when it has none): never in a message."""
    try:
        return [v for v in ctx.credentials().values() if isinstance(v, str) and v]
    except Exception:  # no credentials declared, or none stored: nothing to look for
        return []


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def secret_setting_values(settings: Any) -> list[str]:
    """The string values of the settings fields that hide themselves in ``repr`` (``repr=False`` or a masking
    repr), nested settings included: what must never appear in a message."""
    import attrs

    found: list[str] = []
    if settings is None or not attrs.has(type(settings)):
        return found
    for field in attrs.fields(type(settings)):
        value = getattr(settings, field.name, None)
        if attrs.has(type(value)):
            found += secret_setting_values(value)
        elif isinstance(value, str) and len(value) >= 4 and field.repr is not True:
            found.append(value)
    return found


def _no_secret(text: str, secrets: Iterable[str], where: str) -> None:
    for secret in secrets:
        if secret and secret in text:
            raise AssertionError(f"{where} contains a secret: {text[:300]!r}")


async def _expect_error(
    awaitable: Any, expected: type[BaseException], what: str, timeout: float, secrets: Sequence[str], why: str
) -> BaseException:
    """Await ``awaitable``; assert it raises ``expected`` (a livedata error) without a secret in its message."""
    try:
        result = await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"{what} neither returned nor raised within {timeout:g}s; {why}") from None
    except Exception as exc:  # noqa: BLE001 - judged below
        _core_error(exc, what)
        assert isinstance(exc, expected), (
            f"{what} raised {type(exc).__name__}: {exc}; expected {expected.__name__}: {why}"
        )
        _no_secret(f"{exc} {exc!r}", secrets, f"the {type(exc).__name__} of {what}")
        return exc
    raise AssertionError(f"{what} returned {result!r} instead of raising {expected.__name__}: {why}")


def _core_error(exc: BaseException, what: str) -> None:
    assert isinstance(exc, LivedataError), (
        f"{what} raised {type(exc).__module__}.{type(exc).__name__}: {exc}; raise a livedata_core.errors type "
        "(BrokerError, AuthError, StreamError, RateLimited, ...) so the runner knows what to do"
    )


class _LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> Iterable[tuple[str, str]]:
        formatter = logging.Formatter()
        for record in self.records:
            if record.name.split(".")[0] in TRANSPORT_LOGGERS:
                continue
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + formatter.formatException(record.exc_info)
            yield record.name, text


@contextlib.contextmanager
def _capture_debug_logs() -> Iterator[_LogCapture]:
    handler = _LogCapture()
    root = logging.getLogger()
    livedata = logging.getLogger("livedata")
    old_root, old_livedata = root.level, livedata.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    livedata.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_root)
        livedata.setLevel(old_livedata)


# -- the suite -------------------------------------------------------------------------------------------------


class ConformanceSuite:
    """Subclass this in a test module (``class TestConformance(ConformanceSuite): pass``) to run the suite
    against the broker your conftest's ``conformance_*`` fixtures describe."""

    @pytest.fixture
    def conformance(self, request: pytest.FixtureRequest) -> Harness:
        return Harness(request)

    # -- TC-INFO: the declaration ------------------------------------------------------------------------------

    def test_TC_INFO_01_capabilities_match_hooks(self, conformance: Harness) -> None:
        """TC-INFO-01: the broker loads, its name is the one expected, and its declared capabilities are exactly
        the capability hooks it implements."""
        broker = conformance.broker
        assert broker.name == conformance.name
        check_capabilities(broker)

    def test_TC_INFO_02_settings_are_accepted(self, conformance: Harness) -> None:
        """TC-INFO-02: the test settings pass the broker's settings class, and unknown keys are refused."""
        ctx = conformance.context()
        assert ctx.broker == conformance.name
        from ..errors import ConfigError

        with pytest.raises(ConfigError):
            conformance.broker.make_context({"no_such_setting_xyz": 1})

    def test_TC_SYM_01_symbols_normalise_stably(self, conformance: Harness) -> None:
        """TC-SYM-01: normalising a normalised symbol changes nothing (it is also the channel identifier)."""
        conformance.require("stream")
        broker = conformance.broker
        for symbol in conformance.symbols():
            assert broker.normalize_symbol(symbol) == symbol, f"normalize_symbol is not stable for {symbol!r}"

    # -- TC-Q: quotes ----------------------------------------------------------------------------------------

    def test_TC_Q01_stream_quotes_are_complete(self, conformance: Harness) -> None:
        """TC-Q01: after connect and subscribe, every subscribed symbol gets quotes, and every quote is a
        complete Quote of this broker for a subscribed symbol, with float prices and ask >= bid."""
        broker = conformance.require("stream")
        symbols = conformance.symbols()
        conformance.fixture("conformance_server")

        async def scenario() -> list[Quote]:
            async with conformance.session() as ctx, conformance.stream(ctx, symbols) as stream:
                return await read_quotes(stream, symbols, conformance.timeout)

        for quote in _run(scenario()):
            check_quote(quote, broker.name, symbols)

    def test_TC_Q02_runner_reconnects_and_resubscribes(self, conformance: Harness) -> None:
        """TC-Q02: driven by the core Runner, quotes reach Redis; after the server drops every connection the
        runner reconnects, subscribes again, and quotes for every symbol flow again (quotes whose
        ``received_at`` is after the drop: set it when the data arrives, as ``now_ms()``)."""
        from ..runner import Runner, load_config

        broker = conformance.require("stream")
        symbols = conformance.symbols()
        conformance.fixture("conformance_server")
        redis_server = conformance.request.getfixturevalue("redis_server")
        table = dict(conformance.fixture("conformance_settings"))
        table.update(symbols=symbols, poll={"positions": 0, "balances": 0, "orders": 0, "transactions": 0})
        config = load_config(
            {
                "redis": {"url": redis_server.url},
                "brokers": {broker.name: table},
                "backoff": {"initial": 0.05, "max": 0.5},
                "shutdown_timeout": 2.0,
            },
            env={},
        )
        timeout = conformance.timeout

        async def quotes_for_every_symbol(collector: PublishedCollector, since_ms: int) -> None:
            def fresh(quote: Any) -> bool:
                return getattr(quote, "received_at", 0) > since_ms

            for symbol in symbols:
                await collector.wait_for_async("quotes", symbol, where=fresh, timeout=timeout)

        async def scenario(collector: PublishedCollector) -> None:
            runner = Runner(config, token_store=conformance.fixture("conformance_token_store"))
            task = asyncio.create_task(runner.run())
            try:
                await quotes_for_every_symbol(collector, 0)
                runtime = runner.runtimes[broker.name]
                dropped = conformance.drop_server()
                if inspect.isawaitable(dropped):
                    await dropped
                # Quotes read before the drop may still be on their way to Redis: only later ones count.
                dropped_at = now_ms()
                async with asyncio.timeout(timeout):
                    while runtime.status.reconnects < 1 or runtime.status.state != "streaming":
                        assert not task.done(), "the runner stopped"
                        await asyncio.sleep(0.02)
                await quotes_for_every_symbol(collector, dropped_at)
            except TimeoutError:
                raise AssertionError(
                    f"the runner did not reconnect within {timeout:g}s of the drop; broker status: "
                    f"{runner.runtimes[broker.name].snapshot()}"
                ) from None
            finally:
                runner.stop()
                await asyncio.wait_for(task, 10)

        with PublishedCollector(redis_server.url) as collector:
            _run(scenario(collector))
            for quote in collector.quotes:
                check_quote(quote, broker.name, symbols)

    def test_TC_Q03_subscribe_while_events_are_read(self, conformance: Harness) -> None:
        """TC-Q03: ``subscribe()`` called while ``events()`` is being read (the runner's live control does that)
        works: quotes for the symbols added then arrive on the same connection, and the reader does not fail."""
        broker = conformance.require("stream")
        symbols = conformance.symbols()
        if len(symbols) < 2:
            pytest.skip("`conformance_symbols` needs two symbols or more to subscribe some while reading")
        conformance.fixture("conformance_server")
        first, later = symbols[:1], symbols[1:]
        timeout = conformance.timeout

        async def scenario() -> list[Quote]:
            async with conformance.session() as ctx, conformance.stream(ctx, first) as stream:
                seen: dict[str, Quote] = {}
                events = stream.events()

                async def read() -> None:
                    async for item in events:
                        for model in item if type(item) is list else [item]:
                            if isinstance(model, (Quote, OptionQuote)):
                                seen[model.symbol] = model

                reader = asyncio.create_task(read())
                try:
                    async with asyncio.timeout(timeout):
                        while first[0] not in seen:
                            assert not reader.done(), f"events() ended before a quote for {first[0]}"
                            await asyncio.sleep(0.01)
                        await asyncio.wait_for(stream.subscribe(later), timeout)
                        while not set(later) <= set(seen):
                            if reader.done():
                                reader.result()
                                raise AssertionError("events() ended after subscribe() was called while reading")
                            await asyncio.sleep(0.01)
                except TimeoutError:
                    raise AssertionError(
                        f"no quote for {sorted(set(later) - set(seen))} within {timeout:g}s of subscribing them while "
                        "events() was read: subscribe() must be safe to call concurrently with events()"
                    ) from None
                finally:
                    reader.cancel()
                    with contextlib.suppress(BaseException):
                        await reader
                    with contextlib.suppress(Exception):
                        await events.aclose()  # type: ignore[attr-defined]
                return list(seen.values())

        for quote in _run(scenario()):
            check_quote(quote, broker.name, symbols)

    def test_TC_Q04_refused_symbols_raise_SymbolsRefused(self, conformance: Harness) -> None:
        """TC-Q04: subscribing symbols the broker refuses (unknown to it, over its limit) raises SymbolsRefused
        naming exactly those; the others of the call are subscribed and quote on the same connection."""
        from ..errors import SymbolsRefused

        broker = conformance.require("stream")
        refused = [broker.normalize_symbol(s) for s in conformance.optional(
            "conformance_refused_symbols", "symbols the broker refuses raise SymbolsRefused naming them")]
        symbols = conformance.symbols()
        conformance.fixture("conformance_server")

        async def scenario() -> list[Quote]:
            async with conformance.session() as ctx:
                stream = await broker.call("stream", ctx=ctx)
                try:
                    await asyncio.wait_for(stream.connect(), conformance.timeout)
                    try:
                        await asyncio.wait_for(stream.subscribe([*symbols, *refused]), conformance.timeout)
                    except SymbolsRefused as exc:
                        assert set(exc.symbols) == set(refused), (
                            f"SymbolsRefused names {exc.symbols}; the refused ones are {refused}"
                        )
                    except Exception as exc:
                        raise AssertionError(
                            f"subscribe({[*symbols, *refused]}) raised {type(exc).__name__}: {exc}; raise "
                            f"SymbolsRefused(message, {refused!r}) and keep the rest subscribed"
                        ) from exc
                    else:
                        raise AssertionError(f"subscribe() accepted {refused}, which the server refuses, in silence")
                    return await read_quotes(stream, symbols, conformance.timeout)
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(stream.close(), 5)

        for quote in _run(scenario()):
            check_quote(quote, broker.name, symbols)

    def test_TC_Q05_quiet_stream_sends_heartbeats(self, conformance: Harness) -> None:
        """TC-Q05: a connected stream with nothing subscribed yields something (HEARTBEAT at least) more often
        than its ``heartbeat_timeout``, for two timeouts in a row: otherwise the runner's watchdog reconnects a
        healthy but quiet connection over and over. A broker that sends no heartbeats needs them made from pings."""
        broker = conformance.require("stream")
        beat = _heartbeat_sender(conformance.fixture("conformance_server"))
        unfaithful = conformance.fixture("conformance_fake_sends_no_heartbeats")
        if unfaithful:
            pytest.skip(f"the fake server sends no heartbeats where the real one does: {unfaithful}")

        async def scenario() -> None:
            async with conformance.session() as ctx:
                stream = await broker.call("stream", ctx=ctx)
                timeout = stream.heartbeat_timeout
                if timeout is None:
                    pytest.skip(f"{type(stream).__name__}.heartbeat_timeout is None: the runner never reconnects on silence")
                if timeout > QUIET_STREAM_MAX_WAIT:
                    pytest.skip(f"{type(stream).__name__}.heartbeat_timeout is {timeout:g}s; set it to "
                                f"{QUIET_STREAM_MAX_WAIT:g}s or less in `conformance_settings` to check heartbeats")
                events = stream.events()
                try:
                    await asyncio.wait_for(stream.connect(), conformance.timeout)
                    loop = asyncio.get_running_loop()
                    end = loop.time() + 2 * timeout
                    last = loop.time()
                    beating = asyncio.create_task(_beat(beat, timeout / 3)) if beat is not None else None
                    while loop.time() < end:
                        try:
                            await asyncio.wait_for(events.__anext__(), timeout)
                        except StopAsyncIteration:
                            raise AssertionError("events() ended on a quiet but healthy connection") from None
                        except asyncio.TimeoutError:
                            raise AssertionError(
                                f"nothing from events() for {timeout:g}s (the stream's heartbeat_timeout) with no "
                                "symbol subscribed: yield HEARTBEAT when the broker sends one, or make heartbeats "
                                "from pings if it sends none"
                            ) from None
                        last = loop.time()
                    assert last > 0
                    if beating is not None:
                        beating.cancel()
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(stream.close(), 5)
                    with contextlib.suppress(Exception):
                        await events.aclose()  # type: ignore[attr-defined]

        _run(scenario())

    # -- TC-BAR, TC-DEPTH, TC-CHAIN: the other kinds a broker may declare ---------------------------------

    def test_TC_BAR_01_stream_bars_are_well_formed(self, conformance: Harness) -> None:
        """TC-BAR-01: for a broker whose ``kinds`` has ``"bars"``, ``subscribe(symbols, kind="bars")`` brings a
        :class:`Bar` for every symbol (the last completed one, or the next), each well formed (``check_bar``)."""
        broker, symbols = conformance.kind_symbols("bars", "conformance_bar_symbols")
        conformance.fixture("conformance_server")

        async def scenario() -> list[Any]:
            async with conformance.session() as ctx:
                return await conformance.read_kind(ctx, "bars", Bar, symbols)

        for bar in _run(scenario()):
            check_bar(bar, broker.name, symbols)

    def test_TC_BAR_02_fetch_bars_returns_the_range_in_order(self, conformance: Harness) -> None:
        """TC-BAR-02: ``fetch_bars`` of the last two hours returns, for each symbol, well-formed 60-second bars of
        that symbol only, each starting in the range asked for, in ``start`` order, none twice."""
        broker, symbols = conformance.kind_symbols("bars", "conformance_bar_symbols")
        conformance.require("fetch_bars")
        conformance.fixture("conformance_server")
        end = now_ms() // 60_000 * 60_000
        start = end - 2 * 3600 * 1000

        async def scenario() -> dict[str, Any]:
            async with conformance.session() as ctx:
                return {s: await broker.call("fetch_bars", ctx=ctx, symbol=s, interval=60, start=start, end=end)
                        for s in symbols}  # fmt: skip

        fetched = _run(scenario())
        for symbol, bars in fetched.items():
            assert isinstance(bars, list), f"fetch_bars({symbol!r}) returned {type(bars).__name__}; return a list of Bar"
            if not bars:
                pytest.skip(f"fetch_bars({symbol!r}) of the last two hours returned nothing, so nothing was checked: "
                            "make the fake server's history hold some")  # fmt: skip
            for bar in bars:
                check_bar(bar, broker.name, [symbol])
                assert bar.interval == 60 and start <= bar.start < end, (
                    f"fetch_bars({symbol!r}, 60, {start}, {end}) returned a bar of {bar.interval}s at {bar.start}: "
                    "only bars of the interval asked for, starting in [start, end)"
                )
            starts = [bar.start for bar in bars]
            assert starts == sorted(set(starts)), f"fetch_bars({symbol!r}) must return bars in start order, none twice"

    def test_TC_DEPTH_01_stream_books_are_well_formed(self, conformance: Harness) -> None:
        """TC-DEPTH-01: for a broker whose ``kinds`` has ``"depth"``, ``subscribe(symbols, kind="depth")`` brings a
        :class:`Depth` for every symbol, each side best first with finite prices and sizes (``check_depth``)."""
        broker, symbols = conformance.kind_symbols("depth", "conformance_depth_symbols")
        conformance.fixture("conformance_server")

        async def scenario() -> list[Any]:
            async with conformance.session() as ctx:
                return await conformance.read_kind(ctx, "depth", Depth, symbols)

        for depth in _run(scenario()):
            check_depth(depth, broker.name, symbols)

    def test_TC_CHAIN_01_option_chain_names_contracts_or_refuses(self, conformance: Harness) -> None:
        """TC-CHAIN-01: ``option_chain`` of ``conformance_chain_underlying`` returns option contract symbols that
        normalise stably (they are channel identifiers), none twice; an underlying it has no chain for
        (``conformance_unknown_underlying``) raises ``SymbolsRefused`` naming it."""
        from ..errors import SymbolsRefused

        broker = conformance.require("option_chain")
        underlying = broker.normalize_symbol(conformance.optional(
            "conformance_chain_underlying", "the option chain of an underlying is resolved"))
        if broker.has("stream"):
            conformance.fixture("conformance_server")

        async def scenario() -> tuple[Any, BaseException | None]:
            async with conformance.session() as ctx:
                contracts = await broker.call("option_chain", ctx=ctx, underlying=underlying, expiration=None, strikes=4)
                refused: BaseException | None = None
                try:
                    unknown = conformance.request.getfixturevalue("conformance_unknown_underlying")
                except pytest.FixtureLookupError:
                    return contracts, None
                try:
                    await broker.call("option_chain", ctx=ctx, underlying=broker.normalize_symbol(unknown),
                                      expiration=None, strikes=4)  # fmt: skip
                except Exception as exc:  # checked below, with a message saying what was expected
                    refused = exc
                else:
                    raise AssertionError(f"option_chain({unknown!r}) returned contracts; an underlying the broker "
                                         "has no chain for must raise SymbolsRefused")  # fmt: skip
                return contracts, refused

        contracts, refused = _run(scenario())
        assert isinstance(contracts, list) and contracts, f"option_chain({underlying!r}) returned {contracts!r}"
        assert all(isinstance(c, str) for c in contracts), "option_chain must return symbols (strings)"
        assert len(set(contracts)) == len(contracts), "option_chain returned a contract twice"
        for contract in contracts:
            assert broker.normalize_symbol(contract) == contract, f"contract {contract!r} does not normalise stably"
        if refused is not None:
            assert isinstance(refused, SymbolsRefused), (
                f"option_chain of an unknown underlying raised {type(refused).__name__}: {refused}; raise "
                "SymbolsRefused(message, [underlying])"
            )

    # -- TC-ACC: account data --------------------------------------------------------------------------------

    def test_TC_ACC_01_accounts(self, conformance: Harness) -> None:
        """TC-ACC-01: fetch_accounts returns Accounts of this broker, among them the test account."""
        broker = conformance.require("fetch_accounts")
        account_id = conformance.fixture("conformance_account")

        async def scenario() -> list[Any]:
            async with conformance.session() as ctx:
                return await broker.call("fetch_accounts", ctx=ctx)

        accounts = _run(scenario())
        assert isinstance(accounts, list), f"fetch_accounts returned {type(accounts).__name__}, not a list"
        for account in accounts:
            assert isinstance(account, Account), f"expected Account, got {type(account).__name__}"
            assert account.broker == broker.name
        assert account_id in [a.account_id for a in accounts], f"{account_id!r} is not among the accounts"

    def _fetch_checked(self, conformance: Harness, hook: str) -> list[Any]:
        """Seed, fetch, and check every item of ``hook`` for the test account; skip or fail on nothing."""
        broker = conformance.require(hook)
        account_id = conformance.fixture("conformance_account")
        seeded = conformance.seed(KIND_OF_HOOK[hook], account_id)

        async def scenario() -> Any:
            async with conformance.session() as ctx:
                return await conformance.fetch(ctx, hook, account_id)

        items = _run(scenario())
        assert isinstance(items, list), f"{hook} returned {type(items).__name__}, not a list"
        for item in items:
            check_account_model(item, ACCOUNT_MODELS[hook], broker.name, account_id)
        conformance.not_empty(items, hook, account_id, seeded)
        return items

    def test_TC_ACC_02_positions(self, conformance: Harness) -> None:
        """TC-ACC-02: fetch_positions returns Positions of the requested account with float numbers (at least
        one: an empty answer is seeded with ``conformance_seed`` or skipped, never passed)."""
        self._fetch_checked(conformance, "fetch_positions")

    def test_TC_ACC_03_balances(self, conformance: Harness) -> None:
        """TC-ACC-03: fetch_balances returns Balances of the requested account with float numbers."""
        self._fetch_checked(conformance, "fetch_balances")

    def test_TC_ACC_04_orders(self, conformance: Harness) -> None:
        """TC-ACC-04: fetch_orders returns Orders of the requested account, each status in ORDER_STATUSES."""
        self._fetch_checked(conformance, "fetch_orders")

    def test_TC_ACC_05_transactions(self, conformance: Harness) -> None:
        """TC-ACC-05: fetch_transactions returns Transactions of the requested account with ids and types."""
        self._fetch_checked(conformance, "fetch_transactions")

    def test_TC_ACC_06_ids_are_stable_across_polls(self, conformance: Harness) -> None:
        """TC-ACC-06: two polls with the same ``since`` give every order and transaction of the first one the
        same id in the second. The runner publishes each id once: an id made up per poll (a new uuid) would
        publish every fill again on every poll."""
        broker = conformance.broker
        hooks = [h for h in ("fetch_orders", "fetch_transactions") if broker.has(h)]
        if not hooks:
            pytest.skip(f"broker {broker.name!r} declares neither fetch_orders nor fetch_transactions")
        account_id = conformance.fixture("conformance_account")
        seeded = {hook: conformance.seed(KIND_OF_HOOK[hook], account_id) for hook in hooks}
        since = int(time.time() * 1000) - 86_400_000
        id_field = {"fetch_orders": "order_id", "fetch_transactions": "transaction_id"}

        async def scenario() -> dict[str, tuple[list[Any], list[Any]]]:
            polls = {}
            async with conformance.session() as ctx:
                for hook in hooks:
                    first = await broker.call(hook, ctx=ctx, account_id=account_id, since=since)
                    second = await broker.call(hook, ctx=ctx, account_id=account_id, since=since)
                    polls[hook] = (list(first), list(second))
            return polls

        checked = 0
        for hook, (first, second) in _run(scenario()).items():
            if not first:
                continue
            checked += 1
            ids_first = [getattr(item, id_field[hook]) for item in first]
            ids_second = {getattr(item, id_field[hook]) for item in second}
            lost = [i for i in ids_first if i not in ids_second]
            assert not lost, (
                f"{hook}: {len(lost)} of {len(ids_first)} ids of the first poll are not in the second ({lost[:3]}...; "
                f"second poll: {sorted(ids_second)[:3]}...): ids must come from the broker's data (its order or "
                "execution id), never be made up per poll"
            )
        if not checked:
            conformance.not_empty([], hooks[-1], account_id, any(seeded.values()))

    # -- TC-ERR: errors --------------------------------------------------------------------------------------

    def test_TC_ERR_01_unknown_account(self, conformance: Harness) -> None:
        """TC-ERR-01: asking for an account the broker does not have raises a livedata_core error (naming no
        secret), never a bare KeyError, httpx or websockets error, and never returns data: data for an account
        it does not have can only be another account's, relabelled."""
        broker = conformance.broker
        hooks = [h for h in ACCOUNT_MODELS if broker.has(h)]
        if not hooks:
            pytest.skip(f"broker {broker.name!r} declares no fetch_positions/balances/orders/transactions")
        account_id = conformance.fixture("conformance_unknown_account")
        secrets = conformance.secrets()

        async def scenario() -> None:
            async with conformance.session() as ctx:
                for hook in hooks:
                    try:
                        items = await conformance.fetch(ctx, hook, account_id)
                    except Exception as exc:
                        _core_error(exc, f"{hook}({account_id!r})")
                        _no_secret(str(exc), secrets, f"the error of {hook}({account_id!r})")
                        continue
                    assert not items, (
                        f"{hook}({account_id!r}) returned {len(items)} item(s) for an account the broker does not "
                        f"have (the first: {items[0]!r}): raise BrokerError naming the account instead"
                    )
                    empty.append(hook)

        empty: list[str] = []
        _run(scenario())
        if empty:
            pytest.skip(f"{', '.join(empty)} returned an empty list for {account_id!r}, an account the broker does not "
                        "have, so refusing it was not checked: raise BrokerError naming the account, and a mistyped "
                        "account id is not polled as empty forever")  # fmt: skip

    def test_TC_ERR_02_invalid_symbols_are_refused(self, conformance: Harness) -> None:
        """TC-ERR-02: symbols that can never be valid raise InvalidIdentifier (not another exception)."""
        broker = conformance.require("stream")
        for symbol in conformance.fixture("conformance_invalid_symbols"):
            try:
                normalised = broker.normalize_symbol(symbol)
            except InvalidIdentifier:
                continue
            except Exception as exc:
                raise AssertionError(
                    f"normalize_symbol({symbol!r}) raised {type(exc).__name__}: {exc}; raise InvalidIdentifier"
                ) from exc
            raise AssertionError(f"normalize_symbol({symbol!r}) accepted it as {normalised!r}")

    async def _every_hook_fails(
        self, conformance: Harness, ctx: BrokerContext, expected: type[BaseException], why: str, secrets: list[str],
        account_id: str, authenticated: bool,
    ) -> None:
        """After ``authenticate`` (whatever it did): the stream's connect() and every fetch raise ``expected``.

        When ``authenticate`` raised, a stream hook that cannot build its stream without the session it would have
        made is let off (the runner never asks it then); a stream it does build is held to its connect()."""
        broker = conformance.broker
        timeout = conformance.timeout
        if broker.has("stream"):
            stream = None
            try:
                stream = await asyncio.wait_for(broker.call("stream", ctx=ctx), timeout)
            except Exception as exc:  # a stream hook that needs the session may refuse at once, as livedata errors
                if authenticated or isinstance(exc, LivedataError):
                    _core_error(exc, "the stream hook")
                    assert isinstance(exc, expected), f"the stream hook raised {type(exc).__name__}: {exc}; {why}"
                    _no_secret(str(exc), secrets, "the stream hook's error")
            if stream is not None:
                assert isinstance(stream, BrokerStream), f"the stream hook returned {type(stream).__name__}"
                try:
                    await _expect_error(stream.connect(), expected, "the stream's connect()", timeout, secrets, why)
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(stream.close(), 5)
        for hook in [h for h in ("fetch_accounts", *ACCOUNT_MODELS) if broker.has(h)]:
            call = broker.call(hook, ctx=ctx, account_id=account_id, since=int(time.time() * 1000) - 86_400_000)
            await _expect_error(call, expected, f"{hook}({account_id!r})", timeout, secrets, why)

    def test_TC_ERR_03_unreachable_server(self, conformance: Harness) -> None:
        """TC-ERR-03: with the server unreachable, ``authenticate`` raises a livedata_core error or succeeds, and
        whatever it did, the stream's connect() and every fetch raise livedata_core errors (so the runner backs
        off and retries instead of logging a crash), none naming a secret."""
        settings = conformance.optional(
            "conformance_unreachable_settings", "an unreachable server gives livedata_core errors"
        )
        broker = conformance.broker
        account_id = conformance.fixture("conformance_account") if any(broker.has(h) for h in ACCOUNT_MODELS) else "ACC"
        why = "an unreachable server must raise a livedata_core error (StreamError, BrokerError...)"

        async def scenario() -> None:
            # The plugin's working tokens or keys: with none, a broker with credentials stops at LoginRequired
            # before it ever reaches the unreachable server, and a raw OSError there would go unseen.
            ctx = conformance.context(settings, conformance.fixture("conformance_token_store"))
            secrets = conformance.secrets(ctx.settings) + _credential_values(ctx)
            authenticated = True
            if broker.has("authenticate"):
                try:  # refusing to start is a fine answer; going on is checked all the same
                    await asyncio.wait_for(broker.call("authenticate", ctx=ctx), conformance.timeout)
                except LivedataError as exc:
                    _no_secret(str(exc), secrets, "the error of authenticate")
                    authenticated = False
                except Exception as exc:
                    _core_error(exc, "authenticate against an unreachable server")
            await self._every_hook_fails(conformance, ctx, LivedataError, why, secrets, account_id, authenticated)

        _run(scenario())

    def test_TC_ERR_04_bad_credentials(self, conformance: Harness) -> None:
        """TC-ERR-04: credentials the broker rejects raise AuthError (or LoginRequired) from ``authenticate``, and
        then from the stream's connect() and every fetch as well (a stream login refused is an AuthError, so the
        runner re-authenticates, not a StreamError), none naming a secret."""
        broker = conformance.broker
        settings = conformance.optional("conformance_bad_credentials", "rejected credentials raise AuthError")
        if broker.has("stream"):
            conformance.fixture("conformance_server")
        account_id = conformance.fixture("conformance_account") if any(broker.has(h) for h in ACCOUNT_MODELS) else "ACC"
        why = "rejected credentials must raise AuthError (or LoginRequired), so the runner logs in again"

        async def scenario() -> None:
            ctx = conformance.context(settings, conformance.fixture("conformance_bad_token_store"))
            secrets = conformance.secrets(ctx.settings) + _credential_values(ctx)
            authenticated = not broker.has("authenticate")
            if not authenticated:
                await _expect_error(broker.call("authenticate", ctx=ctx), AuthError, "authenticate", conformance.timeout,
                                    secrets, why)  # fmt: skip
            await self._every_hook_fails(conformance, ctx, AuthError, why, secrets, account_id, authenticated)

        _run(scenario())

    # -- TC-SEC: secrets -------------------------------------------------------------------------------------

    def _exercise(self, conformance: Harness) -> list[str]:
        """Authenticate, fetch everything declared, stream a little; return the error messages seen."""
        broker = conformance.broker
        account_id = conformance.fixture("conformance_account") if any(
            broker.has(h) for h in ACCOUNT_MODELS
        ) else None
        symbols = conformance.symbols() if broker.has("stream") else []
        if symbols:
            conformance.fixture("conformance_server")
        messages: list[str] = []

        async def scenario() -> None:
            async with conformance.session() as ctx:
                messages.append(repr(ctx))
                for hook in ACCOUNT_MODELS:
                    if broker.has(hook):
                        await conformance.fetch(ctx, hook, account_id)
                        try:
                            await conformance.fetch(ctx, hook, conformance.fixture("conformance_unknown_account"))
                        except Exception as exc:
                            messages.append(str(exc))
                if symbols:
                    async with conformance.stream(ctx, symbols) as stream:
                        messages.append(repr(stream))
                        await read_quotes(stream, symbols, conformance.timeout)

        _run(scenario())
        return messages

    def _secrets(self, conformance: Harness) -> list[str]:
        secrets = [s for s in conformance.fixture("conformance_secrets") if s]
        if not secrets:
            pytest.skip("`conformance_secrets` is empty: return your test API keys and tokens from it")
        return secrets

    def test_TC_SEC_01_no_secret_logged_at_debug(self, conformance: Harness) -> None:
        """TC-SEC-01: with every logger at DEBUG, a full session (authenticate, fetch, stream) logs none of the
        secrets, neither in messages nor in tracebacks. Transport loggers (TRANSPORT_LOGGERS) are not read."""
        secrets = self._secrets(conformance)
        with _capture_debug_logs() as logs:
            self._exercise(conformance)
        for logger, text in logs.texts():
            for secret in secrets:
                assert secret not in text, f"logger {logger!r} logged a secret at DEBUG: {text[:300]!r}"

    def test_TC_SEC_02_no_secret_in_reprs_or_errors(self, conformance: Harness) -> None:
        """TC-SEC-02: secrets appear neither in the repr of the context (settings, session) or the stream,
        nor in error messages (use ``attrs.field(repr=False)`` for secret settings)."""
        secrets = self._secrets(conformance)
        for text in self._exercise(conformance):
            for secret in secrets:
                assert secret not in text, f"a secret appears in {text[:300]!r}"
