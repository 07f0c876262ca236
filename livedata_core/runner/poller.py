"""Polling a broker's account data on intervals and publishing what is new."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

from ..errors import AuthError, BrokerError, LoginRequired, PermanentError, RateLimited
from ..models import MODEL_FOR_TYPE, Account, from_dict, now_ms
from ..backoff import Backoff
from ..recording.http import HTTP_RECORDING
from .broker_runtime import BrokerRuntime
from .changes import BalanceChanges, OrderEvents, PositionChanges, TransactionEvents, differ_for
from .config import POLL_KINDS
from ..aio_tools import reraise_if_cancelling, within

__all__ = ["AccountPoller"]

# Orders and transactions are asked for from a day before the previous successful poll: a sliding window that
# tolerates late-booked rows and clock skew without growing for as long as the runner runs.
LOOKBACK_MS = 24 * 3600 * 1000
# After a restart, the first window reaches back to the last event an earlier run published (a weekend outage
# must not hide what was booked meanwhile), but never further than this.
MAX_CATCH_UP_MS = 30 * 24 * 3600 * 1000
# The longest pause any broker's "retry after" can impose on a poll loop.
MAX_DELAY = 3600.0


class AccountPoller:
    """Poll positions, balances, orders and transactions of every account of one instance."""

    def __init__(self, runtime: BrokerRuntime) -> None:
        self.rt = runtime
        self.log = logging.getLogger(f"livedata.runner.{runtime.name}.poll")
        self.started_ms = now_ms()
        self.started = time.monotonic()
        self.accounts: list[str] = []

    def kinds(self) -> list[str]:
        poll = self.rt.config.poll
        return [k for k in POLL_KINDS if getattr(poll, k) > 0 and self.rt.broker.has(f"fetch_{k}")]

    async def run(self) -> None:
        if self.rt.recorder is not None:
            HTTP_RECORDING.set(self.rt.recorder)  # the polls' REST answers go into the recording
        kinds = self.kinds()
        if not kinds:
            return
        self.accounts = await self._resolve_accounts()
        self.rt.status.extra["accounts"] = self.accounts
        async with asyncio.TaskGroup() as group:
            for account in self.accounts:
                for kind in kinds:
                    group.create_task(self._poll_loop(account, kind), name=f"poll-{self.rt.name}-{kind}-{account}")

    async def _resolve_accounts(self) -> list[str]:
        if self.rt.config.accounts is not None:
            return list(self.rt.config.accounts)
        if not self.rt.broker.has("fetch_accounts"):
            self.log.warning("no accounts configured and the broker cannot list them; not polling")
            return []
        backoff = Backoff(self.rt.backoff_config.initial, self.rt.backoff_config.max)
        while True:
            generation = self.rt.auth_generation
            try:
                await self.rt.ensure_authenticated()
                generation = self.rt.auth_generation
                accounts = await self.rt.broker.call("fetch_accounts", ctx=self.rt.ctx)
                found = [a.account_id for a in accounts or () if isinstance(a, Account)]
                if not found:
                    # Polling nothing for the whole run would be silent data loss: ask again until there are some.
                    raise BrokerError("fetch_accounts returned no accounts; asking again (or set `accounts` in "
                                      f"[brokers.{self.rt.name}])")  # fmt: skip
                return found
            except PermanentError as exc:  # nothing to poll until a person fixes it
                self.rt.give_up("fetch_accounts", exc)
                return []
            except Exception as exc:
                reraise_if_cancelling()
                delay = self._handle_error("fetch_accounts", exc, generation, backoff)
                await asyncio.sleep(delay)

    def _handle_error(self, what: str, exc: Exception, generation: int, backoff: Backoff) -> float:
        if isinstance(exc, AuthError):
            self.rt.auth_failed(generation)
        message = f"{what} failed: {type(exc).__name__}: {exc}"
        self.rt.status.error(message)
        if isinstance(exc, (AuthError, RateLimited)) or type(exc).__module__.startswith("livedata"):
            self.log.warning("%s", message)
        else:
            self.log.exception("%s", message)
        delay = backoff.next_delay()
        if isinstance(exc, RateLimited) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        if not math.isfinite(delay) or delay > MAX_DELAY:  # a broker's "retry after" of hours (or inf)
            delay = MAX_DELAY
        if isinstance(exc, LoginRequired):
            delay = max(delay, self.rt.backoff_config.login_retry)
            if not self.rt.broker.has("stream"):
                self.rt.status.state = "login_required"
        return delay

    def _until_next_tick(self, interval: float, at_least: float = 0.0) -> float:
        # Polls run on ticks counted from the start (not "interval after the last poll"), so the loops of one
        # account stay together even after errors: brokers can answer positions and balances with one request.
        # The next tick is the first one strictly after now + at_least (a backoff after an error).
        now = time.monotonic()
        ticks = math.floor((now + at_least - self.started) / interval) + 1
        return self.started + ticks * interval - now

    async def _seed_from_book(self, kind: str, differ: PositionChanges | BalanceChanges, account: str) -> None:
        # The account's book in Redis is what consumers believe is held, possibly left by an earlier run. Diffing
        # the first poll against it publishes a position closed while the runner was down as closed (quantity 0,
        # which also takes it out of the book), takes currencies no longer reported out of the balances book, and
        # does not publish unchanged entries again.
        try:
            stored = await self.rt.publisher.read_book(kind, account)
        except Exception as exc:
            reraise_if_cancelling()
            self.rt.log.warning("could not read the %s book of %s (every entry is published): %s", kind, account, exc)
            return
        previous = []
        for field, data in stored.items():
            try:
                previous.append(from_dict(MODEL_FOR_TYPE[kind], data))
            except (ValueError, TypeError) as exc:
                self.rt.log.warning("ignoring %s in the %s book of %s: %s", field, kind, account, exc)
        differ.seed(previous)

    async def _seed_from_stream(self, kind: str, account: str) -> int | None:
        # Order states and transactions an earlier run published are in the account's capped stream: marking
        # them seen keeps a restart from publishing them a second time. Returns when the newest was received.
        try:
            stored = await self.rt.publisher.read_stream(kind, account)
        except Exception as exc:
            reraise_if_cancelling()
            self.rt.log.warning("could not read the %s stream of %s (states published before a restart may be "
                                "published again): %s", kind, account, exc)  # fmt: skip
            return None
        events = self._events(kind)
        events.reserve(account, len(stored))
        model_cls = MODEL_FOR_TYPE[kind]
        newest: int | None = None
        for data in reversed(stored):  # oldest first: the newest end up the most recently seen, forgotten last
            try:
                model = from_dict(model_cls, data)
            except (ValueError, TypeError):
                continue  # not ours to judge: it was published; it just will not count as seen
            events.add(model)
            if model.received_at < self.started_ms:  # this run's own (a stream may publish before the first poll)
                newest = model.received_at if newest is None else max(newest, model.received_at)
        return newest

    def _events(self, kind: str) -> OrderEvents | TransactionEvents:
        return self.rt.order_events if kind == "orders" else self.rt.transaction_events

    async def _poll_loop(self, account: str, kind: str) -> None:
        interval = getattr(self.rt.config.poll, kind)
        hook = f"fetch_{kind}"
        # Orders and transactions are deduplicated by the runtime (shared with the stream); positions and
        # balances are published when they changed since this account's previous poll.
        differ = differ_for(kind) if kind in ("positions", "balances") else list
        model_cls = MODEL_FOR_TYPE[kind]
        backoff = Backoff(self.rt.backoff_config.initial, self.rt.backoff_config.max)
        last_ok = self.started_ms
        seeded_events = False
        while not self.rt.stopping.is_set():
            delay = 0.0
            generation = self.rt.auth_generation
            try:
                await self.rt.ensure_authenticated()
                generation = self.rt.auth_generation
                poll_started = now_ms()
                if kind in ("positions", "balances") and not differ.seeded:
                    await self._seed_from_book(kind, differ, account)
                elif kind in ("orders", "transactions") and not seeded_events:
                    newest = await self._seed_from_stream(kind, account)
                    seeded_events = True
                    if newest is not None and newest < last_ok:
                        # Catch up from the last event an earlier run published, as its next poll would have.
                        last_ok = max(newest, self.started_ms - MAX_CATCH_UP_MS)
                since = last_ok - LOOKBACK_MS
                items = await self.rt.broker.call(hook, ctx=self.rt.ctx, account_id=account, since=since)
                good = []
                for model in items or ():
                    if type(model) is model_cls:
                        good.append(model)
                    else:
                        self.rt.skip(f"{hook} returned a {type(model).__name__}, not a {model_cls.__name__}", model)
                if kind in ("orders", "transactions"):
                    # The next poll reports these again: the dedupe keeps room for all of them.
                    self._events(kind).reserve(account, len(good))
                for model in differ(good):
                    if self.rt.publish(model):
                        self.rt.status.messages += 1
                        self.rt.status.last_message_at = time.time()
                if kind == "balances" and self.rt.may_publish(account):
                    for currency in differ.vanished:
                        self.rt.publisher.drop_from_book("balances", account, currency)
                last_ok = poll_started
                self.rt.status.polls[kind] = self.rt.status.polls.get(kind, 0) + 1
                if not self.rt.broker.has("stream"):
                    self.rt.status.state = "polling"
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except PermanentError as exc:  # this kind of this account only; the other loops go on
                self.rt.give_up(f"{hook}({account})", exc)
                return
            except Exception as exc:
                reraise_if_cancelling()
                delay = self._handle_error(f"{hook}({account})", exc, generation, backoff)
            with contextlib.suppress(asyncio.TimeoutError):
                await within(self.rt.stopping.wait(), self._until_next_tick(interval, delay))
