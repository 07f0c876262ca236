"""One broker inside the runner: its session, its stream supervisor, and its live subscriptions.

The lifecycle every broker needs lives here once: authenticate (again after an ``AuthError``), open a stream,
subscribe every wanted symbol, read events into the publisher, watch for silence, and on any failure close,
back off with jitter and start over. A plugin only speaks its protocol (see
:mod:`livedata_core.plugin_kit.streaming`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import attrs

from ..plugin_kit.broker import Broker, BrokerContext
from ..errors import (
    AuthError, BrokerError, ConfigError, InvalidIdentifier, LivedataError, LoginRequired, NotSupported, PermanentError,
    PluginError, StreamError, SymbolsRefused,
)
from ..models import Balance, Bar, Depth, OptionQuote, Order, Position, Quote, Transaction, to_dict
from ..plugin_kit.broker import KINDS
from ..redis_io.publisher import AsyncPublisher
from ..plugin_kit.streaming import HEARTBEAT, BrokerStream, StreamStats
from ..plugin_kit.tokens import TokenStore
from ..recording.http import HTTP_RECORDING
from ..backoff import Backoff
from .config import BackoffConfig, BrokerConfig
from .bars import BarKeeper
from .chains import OptionChains
from .changes import OrderEvents, SeenSet, TransactionEvents
from .owners import AccountOwners
from .status import BrokerStatus
from ..aio_tools import reraise_if_cancelling, within

__all__ = ["BrokerRuntime"]

CONNECT_TIMEOUT = 30.0
CLOSE_TIMEOUT = 2.0
MAX_RETRY_AFTER = 3600.0
DRAIN_TIMEOUT = 0.5
ABORT_TIMEOUT = 0.3
"""How long a runner that lost its hot-standby lease waits for its stream to close (no drain: it is fenced)."""
MODEL_TYPES = (Quote, Order, Transaction, Position, Balance)
SUBSCRIBE_TIMEOUT = 10.0
_SET_QUOTE_INSTANCE = Quote.__dict__["instance"].__set__  # a quote is frozen; the runner fills in whose it is
_SET_INSTANCE = {cls: cls.__dict__["instance"].__set__ for cls in (OptionQuote, Depth)}
MARKET_TYPES = (OptionQuote, Bar, Depth)
_KIND_WORDS = {"quotes": "quotes", "bars": "bars", "depth": "order books (depth)"}


class BrokerRuntime:
    """Drive one instance of a broker: authentication, the supervised stream, and symbol subscriptions.

    :param publisher: the runner's :class:`~livedata_core.redis_io.publisher.AsyncPublisher`.
    :param ctx: the instance's context (default: one made from ``config`` and ``tokens``).
    :param owners: which login publishes each account, shared by the runner's instances (default: this one's own).
    :param bar_owners: which instance streams each bars symbol, shared by the runner's instances: a symbol's bars
        stream (``stream:bars:<symbol>``) names no instance, so two writing it would publish every minute twice.
    """

    BARS_CONTINUE_REDIS = True
    """Each symbol's bars continue from the newest one in its Redis stream (a restart neither repeats nor skips)."""

    def __init__(
        self,
        broker: Broker,
        config: BrokerConfig,
        publisher: AsyncPublisher,
        backoff: BackoffConfig,
        tokens: TokenStore | None = None,
        *,
        ctx: BrokerContext | None = None,
        owners: AccountOwners | None = None,
        bar_owners: dict[str, str] | None = None,
    ) -> None:
        self.broker = broker
        self.config = config
        self.name = name = config.name
        self.publisher = publisher
        self.backoff_config = backoff
        self.ctx = ctx if ctx is not None else broker.make_context(config.settings, tokens, instance=name)
        # Instances of one login (tos streaming with a Schwab instance's login) may report the same accounts.
        self.login_name = self.ctx.login.instance if self.ctx.login is not None else name
        self.owners = owners if owners is not None else AccountOwners()
        self.log = logging.getLogger(f"livedata.runner.{name}")
        self.status = BrokerStatus(broker=broker.name, instance=name, plugin=broker.name)
        self.symbols: set[str] = set()
        # The symbols wanted per kind; "quotes" is self.symbols itself (the hot path and staleness read it).
        self.wanted: dict[str, set[str]] = {"quotes": self.symbols, "bars": set(), "depth": set()}
        for kind, key in (("quotes", "symbols"), ("bars", "bars"), ("depth", "depth")):
            for raw in getattr(config, key):
                try:
                    self.wanted[kind].add(broker.normalize_symbol(raw))
                except InvalidIdentifier as exc:
                    raise ConfigError(f"brokers.{name}.{key}: {exc}") from None
            if self.wanted[kind]:
                if not broker.has("stream"):
                    raise ConfigError(
                        f"brokers.{name}.{key}: broker {broker.name!r} does not stream {kind} "
                        f"(capabilities: {', '.join(sorted(broker.info.capabilities))})"
                    )
                if kind not in broker.info.kinds:
                    raise ConfigError(f"brokers.{name}.{key}: broker {broker.name!r} does not stream {_KIND_WORDS[kind]} "
                                      f"(it streams {', '.join(broker.info.kinds)})")  # fmt: skip
        self.bar_owners = bar_owners if bar_owners is not None else {}
        for symbol in sorted(self.wanted["bars"]):
            holder = self.bar_owners.setdefault(symbol, name)
            if holder != name:
                raise ConfigError(f"brokers.{name}.bars: {symbol} is also in brokers.{holder}.bars; one instance streams "
                                  f"a symbol's bars (its stream live_data:stream:bars:{symbol} names no instance, and "
                                  "two would publish every minute twice)")  # fmt: skip
        self.depth_levels = config.depth_levels
        self.option_chains = OptionChains(self)  # `livedata subscribe --chain`
        # The cap on symbols streamed at once, configured or the broker's own limit; said in every refusal.
        self.max_symbols = config.max_symbols or broker.info.max_symbols
        setting = f"brokers.{name}.max_symbols"
        self._cap_text = (
            f"the cap of {self.max_symbols} ({setting}"
            + ("" if config.max_symbols else ", by default the broker's own limit")
            + f"); remove some or raise max_symbols in [brokers.{name}]"
        )
        for kind, key in (("quotes", "symbols"), ("bars", "bars"), ("depth", "depth")):
            if len(self.wanted[kind]) > self.max_symbols:
                raise ConfigError(
                    f"brokers.{name}.{key}: {len(self.wanted[kind])} symbols configured, more than {self._cap_text}"
                )
        if broker.has("stream"):
            self.status.extra["max_symbols"] = self.max_symbols
        self._auth_lock = asyncio.Lock()
        self._authenticated = False
        self._auth_refused: PermanentError | None = None  # authenticate said retrying will not help (give_up)
        self.auth_generation = 0
        self._sub_lock = asyncio.Lock()
        self._stream: BrokerStream | None = None
        self._stream_obj: BrokerStream | None = None
        self._last_activity = 0.0
        # Symbol -> loop time of its last quote, written by _read (one store per quote); ops/staleness.py reads it.
        self.last_update: dict[str, float] = {}
        self.stopping = asyncio.Event()
        self.aborting = False
        """Set by :meth:`abort` (a lost lease): close the stream in :data:`ABORT_TIMEOUT`, drain nothing."""
        self.last_quote: Quote | None = None
        self.order_events = OrderEvents()
        self.transaction_events = TransactionEvents()
        self._refused = SeenSet(1_000)  # account events refused, counted and logged once each (_refusal_key)
        self._skips_logged: Counter[str] = Counter()  # per skip reason over the process's life, for skip()'s rate limit
        self._foreign_accounts: set[str] = set()  # accounts of another login this instance reported (logged once each)
        self.recorder: Any = None
        """The instance's :class:`~livedata_core.recording.writer.InstanceRecorder` (``livedata run --record``)."""
        fetch = self._fetch_bars if broker.has("fetch_bars") else None
        last_bar = self._last_bar if self.BARS_CONTINUE_REDIS else None
        self.bars = BarKeeper(name, self._publish_bar, fetch, last_bar, self.skip,
                              logging.getLogger(f"livedata.runner.{name}.bars"))  # fmt: skip

    def _publish_bar(self, bar: Bar) -> None:
        self.publisher.publish(bar)  # raises for a bad bar: the keeper counts it as a skip
        status = self.status
        status.messages += 1
        status.last_message_at = time.time()
        status.market_events["bars"] = status.market_events.get("bars", 0) + 1

    async def _fetch_bars(self, symbol: str, interval: int, start: int, end: int) -> list[Any]:
        await self.ensure_authenticated()
        return await self.broker.call("fetch_bars", ctx=self.ctx, symbol=symbol, interval=interval, start=start, end=end)

    async def _last_bar(self, symbol: str) -> dict[str, Any] | None:
        newest = await self.publisher.read_stream("bars", symbol, count=1)
        return newest[0] if newest else None

    # -- authentication ------------------------------------------------------------------------------------

    async def ensure_authenticated(self) -> None:
        """Run the broker's ``authenticate`` hook unless the session is already good. Safe to call concurrently."""
        if not self.broker.has("authenticate"):
            return
        async with self._auth_lock:
            if self._authenticated:
                return
            if self._auth_refused is not None:
                raise self._auth_refused  # asked once: every poll loop and the stream stop on the same answer
            self.status.state = "authenticating"
            try:
                await self.broker.call("authenticate", ctx=self.ctx)
            except PermanentError as exc:
                self._auth_refused = exc
                self.give_up("authenticate", exc)
                raise
            self._authenticated = True
            self.auth_generation += 1
            self.log.info("authenticated")

    def auth_failed(self, generation: int) -> None:
        """Mark the session bad if it is still the one that failed (not one re-made since)."""
        self.status.auth_failures += 1
        if generation == self.auth_generation:
            self._authenticated = False

    # -- stream supervision --------------------------------------------------------------------------------

    async def run_stream(self) -> None:
        """Keep a stream connected until :meth:`stop`; never raises except on cancellation."""
        try:
            await self._run_stream()
        finally:
            self.bars.close()  # gap fills in flight end, publishing the live bars they held

    async def _run_stream(self) -> None:
        backoff = Backoff(self.backoff_config.initial, self.backoff_config.max)
        if self.recorder is not None:
            HTTP_RECORDING.set(self.recorder)  # this task's REST answers (and those of tasks it starts) are recorded
        while not self.stopping.is_set():
            retry_after: float | None = None
            generation = self.auth_generation
            try:
                await self.ensure_authenticated()
                generation = self.auth_generation
                await self._connect_and_pump(backoff)
            except asyncio.CancelledError:
                reraise_if_cancelling()
                # Not us being stopped: the plugin (or a library under it) cancelled something of its own.
                self._record_error("stream failed", StreamError("the stream was cancelled inside the plugin"))
            except LoginRequired as exc:
                self.auth_failed(generation)
                self._record_error("login required", exc)
                self.status.state = "login_required"
                retry_after = self.backoff_config.login_retry
            except AuthError as exc:
                self.auth_failed(generation)
                self._record_error("authentication failed", exc)
            except PermanentError as exc:  # not entitled, account closed: retrying will not help
                self.give_up("stream", exc)
                break
            except LivedataError as exc:  # StreamError, RateLimited, ConnectionLimit, BrokerError...
                reraise_if_cancelling()
                self._record_error("stream failed", exc)
                retry_after = getattr(exc, "retry_after", None)
            except Exception as exc:  # a plugin bug must not stop the runner or other brokers
                reraise_if_cancelling()
                self.log.exception("stream crashed")
                self._record_error("stream crashed", exc, log=False)
            if self.stopping.is_set():
                break
            delay = min(max(backoff.next_delay(), retry_after or 0.0), MAX_RETRY_AFTER)  # inf and hours alike
            if self.status.state != "login_required":
                self.status.state = "backoff"
            self.status.connected_since = None
            self.log.info("reconnecting in %.1fs", delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await within(self.stopping.wait(), delay)
            self.status.reconnects += 1
        if "stream" not in self.status.failed:
            self.status.state = "stopped"

    def give_up(self, what: str, exc: PermanentError) -> None:
        """Stop retrying ``what`` (``"stream"``, ``"authenticate"``, ``"fetch_orders(ACC-1)"``): the broker raised a
        :class:`~livedata_core.errors.PermanentError`. The caller stops; ``livedata status`` lists it under
        ``failed`` with the message, and shows the instance ``failed`` when its stream or its login stopped. Other
        polls of this instance and other instances go on."""
        if what in self.status.failed:
            return
        message = f"{type(exc).__name__}: {exc}"
        self.status.fail(what, message)
        if what in ("stream", "authenticate") or not self.broker.has("stream") and what == "fetch_accounts":
            self.status.state = "failed"
            self.status.connected_since = None
        self.log.error("%s stopped, retrying will not help (restart livedata once it is fixed): %s", what, message)

    def _record_error(self, what: str, exc: BaseException, log: bool = True) -> None:
        message = f"{what}: {type(exc).__name__}: {exc}"
        self.status.error(message)
        if log:
            self.log.warning("%s", message)

    async def _connect_and_pump(self, backoff: Backoff) -> None:
        self.status.state = "connecting"
        stream = await self._open_stream()
        self._stream_obj = stream
        connected = False
        try:
            try:
                await within(stream.connect(), CONNECT_TIMEOUT)
                connected = True
            except asyncio.TimeoutError:
                raise StreamError(f"connecting took longer than {CONNECT_TIMEOUT:g}s") from None
            async with self._sub_lock:  # symbols added live meanwhile are in self.wanted already
                for kind, wanted in self.wanted.items():
                    if not wanted:
                        continue
                    try:
                        await within(_subscribe(stream, sorted(wanted), kind), SUBSCRIBE_TIMEOUT)
                    except asyncio.TimeoutError:
                        raise StreamError(f"subscribing took longer than {SUBSCRIBE_TIMEOUT:g}s") from None
                    except (AuthError, StreamError):
                        raise
                    except BrokerError as exc:
                        # The broker refused some symbols; the connection itself is fine.
                        self._record_error("subscribe refused" if kind == "quotes" else f"subscribe {kind} refused", exc)
                self._stream = stream
                self._streaming(stream)
            self.status.state = "streaming"
            self.status.connected_since = time.time()
            self.log.info("streaming %s", ", ".join(f"{len(w)} {k}" for k, w in self.wanted.items() if w or k == "quotes"))
            await self._pump(stream, backoff)
        finally:
            self._stream = None
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await within(stream.close(), ABORT_TIMEOUT if self.aborting else CLOSE_TIMEOUT)
            if connected and not self.aborting:
                with contextlib.suppress(Exception, asyncio.TimeoutError):
                    await within(self._drain(stream), DRAIN_TIMEOUT)
            self._merge_skips(stream)

    async def _open_stream(self) -> BrokerStream:
        """A new stream from the plugin's ``stream`` hook (its frames tapped into the recording, if recording)."""
        stream = await self.broker.call("stream", ctx=self.ctx)
        if not isinstance(stream, BrokerStream):
            raise PluginError(f"stream hook of {self.broker.name!r} ({self.name}) returned {type(stream).__name__}, not a BrokerStream")
        if self.recorder is not None:
            self.recorder.mark("connect")
            if hasattr(stream, "tap"):
                stream.tap = self.recorder.tap
        return stream

    def _streaming(self, stream: BrokerStream) -> None:
        """Connected and subscribed to every wanted symbol."""
        if self.recorder is not None:
            others = {kind: sorted(wanted) for kind, wanted in self.wanted.items() if kind != "quotes" and wanted}
            self.recorder.mark("streaming", symbols=sorted(self.symbols), **({"kinds": others} if others else {}))

    async def _drain(self, stream: BrokerStream) -> None:
        # Account events the stream had received but not yet handed over when it was closed (see the
        # BrokerStream contract). Quotes are stale by now and dropped.
        async for item in stream.events():
            for model in item if type(item) is list else (item,):
                if model is HEARTBEAT or type(model) in (Quote, OptionQuote, Depth):
                    continue
                if type(model) is Bar:
                    if model.symbol in self.wanted["bars"]:
                        self.bars.receive(model)  # a completed minute: not stale, and the stream needs it
                    continue
                self.publish(model)

    def _merge_skips(self, stream: BrokerStream) -> None:
        stats = getattr(stream, "stats", None)
        if stats is not None:
            for reason, n in stats.skipped.items():
                self.status.skipped[reason] = self.status.skipped.get(reason, 0) + n
            stats.skipped.clear()

    async def _pump(self, stream: BrokerStream, backoff: Backoff) -> None:
        loop = asyncio.get_running_loop()
        self._last_activity = loop.time()
        reader = asyncio.create_task(self._read(stream, backoff), name=f"livedata-read-{self.name}")
        timeout = stream.heartbeat_timeout
        check = min(max(timeout / 4, 0.05), 1.0) if timeout else None
        try:
            while True:
                done, _ = await asyncio.wait({reader}, timeout=check)
                if done:
                    if reader.cancelled():  # only the plugin can have done that: we had not
                        raise StreamError("the stream's events() was cancelled inside the plugin")
                    reader.result()  # raises what the reader raised
                    return
                if timeout and loop.time() - self._last_activity > timeout:
                    raise StreamError(f"no data or heartbeat for {timeout:g}s; reconnecting")
        finally:
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader

    async def _read(self, stream: BrokerStream, backoff: Backoff) -> None:
        loop_time = asyncio.get_running_loop().time
        publish_quote = self.publisher.publish
        publish = self.publish
        status = self.status
        wanted = self.symbols
        instance = self.name
        stamp = _SET_QUOTE_INSTANCE
        updated = self.last_update
        async for item in stream.events():
            now = self._last_activity = loop_time()
            if backoff.attempt:
                backoff.reset()  # anything at all, heartbeats included, means the connection works
            if item is HEARTBEAT:
                status.last_heartbeat_at = time.time()
                continue
            items = item if type(item) is list else (item,)
            n = 0
            last = None
            try:
                for model in items:
                    if type(model) is Quote:
                        # Quotes still in flight after an unsubscribe are not published.
                        symbol = model.symbol
                        if symbol in wanted:
                            updated[symbol] = now  # the symbol is alive (staleness), even if this quote is refused
                            if model.instance is None:  # the one per-quote cost of instances: say whose it is
                                stamp(model, instance)
                            try:
                                publish_quote(model)
                            except Exception as exc:  # a bad symbol or value from the broker: skip it, keep the frame
                                self.skip("quote refused", model, exc)
                                continue
                            n += 1
                            last = model
                    elif type(model) in MARKET_TYPES:
                        n += self._market(model, now)
                    elif publish(model):
                        n += 1
            finally:
                if last is not None:
                    self.last_quote = last  # once per frame, not per quote
            if n:
                status.messages += n
                status.last_message_at = time.time()
        raise StreamError("the broker closed the stream")

    def _market(self, model: Any, now: float) -> int:
        """Publish an option quote, an order book or a bar of a wanted symbol; returns how many were published.
        Never raises: a bad one is a counted skip."""
        cls = type(model)
        if cls is Bar:
            if model.symbol not in self.wanted["bars"]:
                return 0
            self.bars.receive(model)  # dedupe and gap filling; _publish_bar counts what it publishes, now or later
            return 0
        kind = "quotes" if cls is OptionQuote else "depth"
        if model.symbol not in self.wanted[kind]:
            return 0
        if kind == "quotes":
            self.last_update[model.symbol] = now
        elif len(model.bids) > self.depth_levels or len(model.asks) > self.depth_levels:
            model = attrs.evolve(model, bids=model.bids[: self.depth_levels], asks=model.asks[: self.depth_levels])
        if model.instance is None:
            _SET_INSTANCE[cls](model, self.name)
        try:
            self.publisher.publish(model)
        except Exception as exc:  # a bad value from the broker: skip it, keep the frame
            self.skip("option quote refused" if kind == "quotes" else "depth refused", model, exc)
            return 0
        if kind == "depth":
            events = self.status.market_events
            events["depth"] = events.get("depth", 0) + 1
        return 1

    def skip(self, reason: str, what: Any, exc: BaseException | None = None, *, every_time: bool = False) -> None:
        """Count an item that cannot be published and log it at error level, in full (it may be an order).

        A reason that recurs (a broker sending a bad value in every quote) is logged as
        :class:`~livedata_core.plugin_kit.streaming.StreamStats` logs skips: the first ``LOG_FIRST`` in this process, then
        every ``LOG_EVERY``-th; ``livedata status`` counts them all. ``every_time`` logs each one: account
        events, each of which is data lost (:meth:`publish` counts and logs each refused state once).
        """
        self.status.skipped[reason] = self.status.skipped.get(reason, 0) + 1
        self._skips_logged[reason] += 1
        n = self._skips_logged[reason]
        if not every_time and n > StreamStats.LOG_FIRST and n % StreamStats.LOG_EVERY:
            return
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        more = f" (from now on every {StreamStats.LOG_EVERY}th is logged)" if n == StreamStats.LOG_FIRST and not every_time else ""
        self.log.error("%s (not published)%s: %r%s", reason, more, what, detail)

    def publish(self, model: Any) -> bool:
        """Publish an account event once per state, whether it came from the stream or a poll.

        Never raises: an item that cannot be published (not a model, a bad account id, a bad field such as an
        order status outside the closed set or a NaN, a value JSON cannot carry) is counted and logged in full
        with what is wrong, once per distinct state (a broker that reports the same bad order on every poll is
        not logged every poll), and the rest of its frame or poll goes on.
        """
        if type(model) not in MODEL_TYPES:
            self.skip("not a livedata model", model)
            return False
        if not self.may_publish(model.account_id):
            return False
        if model.instance is None:
            model = attrs.evolve(model, instance=self.name)
        dedupe = self.order_events if type(model) is Order else self.transaction_events if type(model) is Transaction else None
        try:
            if dedupe is not None and dedupe.seen(model):
                return False
            self.publisher.publish(model)
        except Exception as exc:
            if self._refused.add(_refusal_key(model)):
                self.skip(f"{model.TYPE} refused", model, exc, every_time=True)
            return False
        if dedupe is not None:
            dedupe.add(model)
        events = self.status.account_events
        events[model.TYPE] = events.get(model.TYPE, 0) + 1
        return True

    def may_publish(self, account: Any) -> bool:
        """Whether this instance may publish data of ``account``: it (or its login) reported it first, or nobody
        has. Another login's account is a counted skip, logged once, with an error in this instance's status
        naming both instances (see :class:`~livedata_core.runner.owners.AccountOwners`)."""
        if type(account) is not str:
            return True  # the publisher refuses it, counted and logged as a bad model
        owner = self.owners.claim(account, self.login_name, self.name)
        if owner is None:
            return True
        reason = "account owned by another instance"
        self.status.skipped[reason] = self.status.skipped.get(reason, 0) + 1
        if account not in self._foreign_accounts and len(self._foreign_accounts) < 1_000:
            self._foreign_accounts.add(account)
            message = (f"account {account} is reported by {owner} and {self.name}; {owner} reported it first and "
                       f"publishes it, {self.name}'s data for it is not published")
            self.status.error(message)
            self.log.warning("%s", message)
        return False

    # -- live control --------------------------------------------------------------------------------------

    def normalize(self, symbols: Iterable[str]) -> list[str]:
        """Normalise and validate symbols; ``InvalidIdentifier`` names the first bad one."""
        out: list[str] = []
        for raw in symbols:
            out.append(self.broker.normalize_symbol(raw))
        return list(dict.fromkeys(out))

    def _check_kind(self, kind: str) -> None:
        if kind not in KINDS:
            raise ConfigError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        if not self.broker.has("stream"):
            raise NotSupported(f"{self.name} (plugin {self.broker.name!r}) does not stream {kind}")
        if kind not in self.broker.info.kinds:
            raise NotSupported(f"{self.name} (plugin {self.broker.name!r}) does not stream {_KIND_WORDS[kind]}; it streams "
                               f"{', '.join(self.broker.info.kinds)}")  # fmt: skip

    async def subscribe(self, symbols: Iterable[str], kind: str = "quotes") -> dict[str, list[str]]:
        """Add symbols of ``kind`` (``quotes``, ``bars``, ``depth``) to the stream, now if connected, else at the next
        connect.

        Symbols the broker refuses are taken back out and named in the ``BrokerError`` raised; the others stay.
        When the connection fails during the call, or the broker does not answer within ``SUBSCRIBE_TIMEOUT``
        (the stream is then closed), the symbols stay wanted and are subscribed on the new connection.
        A command that would take the kind past :attr:`max_symbols` changes nothing and raises ``ConfigError``
        saying how many are subscribed, the cap and the setting.
        """
        return await self._subscribe_kind(symbols, kind, chained=False)

    async def _subscribe_kind(self, symbols: Iterable[str], kind: str, *, chained: bool) -> dict[str, list[str]]:
        self._check_kind(kind)
        stopped = self.status.failed.get("stream") or self.status.failed.get("authenticate")
        if stopped:
            raise PermanentError(f"{self.name} does not stream any more ({stopped}); fix that and restart livedata")
        wanted = self.normalize(symbols)
        subscribed = self.wanted[kind]
        if kind == "quotes" and not chained:
            self.option_chains.user_subscribed(wanted)
        what = "" if kind == "quotes" else f" {kind}"
        async with self._sub_lock:
            new = [s for s in wanted if s not in subscribed]
            if kind == "bars":
                taken = {s: self.bar_owners[s] for s in new if self.bar_owners.get(s, self.name) != self.name}
                if taken:
                    raise ConfigError(f"cannot subscribe bars of {', '.join(taken)} to {self.name}: "
                                      + ", ".join(f"{s} is streamed by {holder}" for s, holder in taken.items())
                                      + "; one instance streams a symbol's bars (unsubscribe it there first)")  # fmt: skip
            if len(subscribed) + len(new) > self.max_symbols:
                raise ConfigError(
                    f"cannot subscribe {len(new)} more symbol{'s' if len(new) != 1 else ''}{what} to {self.name}: "
                    f"{len(subscribed)} subscribed now, {len(subscribed) + len(new)} would exceed "
                    + self._cap_text.replace("remove some", "unsubscribe some")
                )
            subscribed.update(new)
            if kind == "bars":
                self.bar_owners.update(dict.fromkeys(new, self.name))
            if new and self._stream is not None:
                recording = None
                if self.recorder is not None:
                    self.recorder.mark("subscribe", symbols=new, **({} if kind == "quotes" else {"data_kind": kind}))
                    recording = HTTP_RECORDING.set(self.recorder)  # a lookup it makes (IBKR's) goes in too
                try:
                    await within(_subscribe(self._stream, new, kind), SUBSCRIBE_TIMEOUT)
                except (StreamError, AuthError) as exc:
                    # The connection broke, not the request: the reconnect subscribes everything wanted.
                    self._record_error(f"subscribe{what} {', '.join(new)} deferred to the reconnect", exc)
                except TimeoutError:
                    # No answer in time: a stream in that state cannot be trusted with more commands. Closing it
                    # makes the runner reconnect, and the new connection subscribes every wanted symbol, these too.
                    stream = self._stream
                    self._record_error(f"subscribe{what} {', '.join(new)} deferred to a new connection",
                                       StreamError(f"the broker did not answer within {SUBSCRIBE_TIMEOUT:g}s"))  # fmt: skip
                    with contextlib.suppress(Exception, TimeoutError):
                        await within(stream.close(), CLOSE_TIMEOUT)
                except Exception as exc:
                    # Refused: roll back what was refused so status and the answer tell the truth.
                    refused = set(exc.symbols) & set(new) if isinstance(exc, SymbolsRefused) else set(new)
                    subscribed.difference_update(refused)
                    if kind == "bars":
                        self._release_bars(refused)
                    self._record_error(f"subscribe{what} {', '.join(sorted(refused))} failed", exc)
                    error = SymbolsRefused if isinstance(exc, SymbolsRefused) else BrokerError
                    message = (f"{self.name} did not subscribe{what} {', '.join(s for s in new if s in refused)}: "
                               f"{exc or type(exc).__name__}")  # fmt: skip
                    raise (error(message, sorted(refused)) if error is SymbolsRefused else error(message)) from None
                finally:
                    if recording is not None:
                        HTTP_RECORDING.reset(recording)
        return {"added": new, "already": [s for s in wanted if s not in new]}

    async def unsubscribe(self, symbols: Iterable[str], kind: str = "quotes") -> dict[str, list[str]]:
        """Remove symbols of ``kind`` from the stream."""
        self._check_kind(kind)
        wanted = self.normalize(symbols)
        subscribed = self.wanted[kind]
        async with self._sub_lock:
            gone = [s for s in wanted if s in subscribed]
            subscribed.difference_update(gone)
            if kind == "bars":
                self.bars.forget(gone)
                self._release_bars(gone)
            if gone and self._stream is not None:
                if self.recorder is not None:
                    self.recorder.mark("unsubscribe", symbols=gone, **({} if kind == "quotes" else {"data_kind": kind}))
                try:
                    await within(_unsubscribe(self._stream, gone, kind), SUBSCRIBE_TIMEOUT)
                except Exception as exc:
                    self._record_error("unsubscribe failed", exc)
        return {"removed": gone, "not_subscribed": [s for s in wanted if s not in gone]}

    def _release_bars(self, symbols: Iterable[str]) -> None:
        for symbol in symbols:
            if self.bar_owners.get(symbol) == self.name:
                del self.bar_owners[symbol]

    async def resubscribe(self, symbols: list[str], kind: str = "quotes") -> bool:
        """Unsubscribe and subscribe ``symbols`` again on the open stream (symbols gone silent while the connection
        is alive: see :mod:`livedata_core.runner.ops.staleness`). Returns whether it was done; a failure is recorded."""
        async with self._sub_lock:
            stream = self._stream
            symbols = [s for s in symbols if s in self.wanted[kind]]
            if stream is None or not symbols:
                return False
            try:
                await within(_unsubscribe(stream, symbols, kind), SUBSCRIBE_TIMEOUT)
                await within(_subscribe(stream, symbols, kind), SUBSCRIBE_TIMEOUT)
            except Exception as exc:
                reraise_if_cancelling()
                self._record_error(f"resubscribe {', '.join(symbols)} failed", exc)
                # The unsubscribe may have gone through: the symbols would stay silent on a live connection. A new
                # connection subscribes every wanted symbol, as after a subscribe the broker did not answer.
                with contextlib.suppress(Exception, TimeoutError):
                    await within(stream.close(), CLOSE_TIMEOUT)
                return False
        return True

    async def chain(self, underlying: str, expiration: str | None = None, strikes: int | None = None) -> dict[str, Any]:
        """Subscribe an option chain's quotes (see :meth:`OptionChains.chain <livedata_core.runner.chains.OptionChains.chain>`)."""
        return await self.option_chains.chain(underlying, expiration, strikes)

    async def unchain(self, underlying: str) -> dict[str, Any]:
        """Unsubscribe an option chain's contracts and forget it."""
        return await self.option_chains.unchain(underlying)

    def snapshot(self) -> dict[str, Any]:
        """The status of this broker as a JSON-able dict."""
        if self._stream_obj is not None:
            self._merge_skips(self._stream_obj)
        self.status.extra.update(self.ctx.status)
        if self.recorder is not None:
            self.status.extra["recording"] = self.recorder.status()
        data = self.status.as_dict()
        data["symbols"] = sorted(self.symbols)
        data["subscriptions"] = {kind: sorted(wanted) for kind, wanted in self.wanted.items() if kind in self.broker.info.kinds}
        data["chains"] = self.option_chains.status()
        if "bars" in self.broker.info.kinds:
            data["bars"] = self.bars.status()
        data["depth_levels"] = self.depth_levels if "depth" in self.broker.info.kinds else None
        q = self.last_quote
        data["last_quote"] = None if q is None else {"symbol": q.symbol, "bid": q.bid, "ask": q.ask, "last": q.last}
        return data

    def stop(self) -> None:
        self.stopping.set()

    def abort(self) -> None:
        """Stop at once: the runner lost its hot-standby lease ([ha]) and a standby may connect with the same login
        within ``0.4 * lease``. The stream gets :data:`ABORT_TIMEOUT` to close (a LOGOUT only if that quick), and
        no account events are drained (the publisher is fenced: the new leader's catch-up finds them)."""
        self.aborting = True
        self.stop()


def _subscribe(stream: BrokerStream, symbols: list[str], kind: str) -> Any:
    # Quotes without the kind argument: streams written before kinds existed take only the symbols.
    return stream.subscribe(symbols) if kind == "quotes" else stream.subscribe(symbols, kind=kind)


def _unsubscribe(stream: BrokerStream, symbols: list[str], kind: str) -> Any:
    return stream.unsubscribe(symbols) if kind == "quotes" else stream.unsubscribe(symbols, kind=kind)


def _refusal_key(model: Any) -> str:
    """What identifies a refused account event across polls: its content without the times a poll may renew,
    as text (a NaN is equal to itself only as text; a list in a field would not hash)."""
    return repr([(k, v) for k, v in to_dict(model).items() if k not in ("received_at", "timestamp")])
