"""The Schwab broker's hooks: login, authenticate, and polling accounts, positions, balances, orders and
transactions from the Trader API. Streaming quotes and account activity is the ``tos`` plugin's job."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from livedata_core import BrokerContext, BrokerInfo, hookimpl
from livedata_core.models import Account, Balance, Order, Position, Transaction, now_ms

from . import oauth
from .client import SchwabClient, iso_ms
from .parsers import Skips, parse_accounts, parse_balances, parse_orders, parse_positions, parse_transactions
from .settings import SchwabSettings

DAY_MS = 86_400_000
MAX_RANGE_MS = 364 * DAY_MS  # Schwab refuses order/transaction ranges longer than a year
CLOCK_SKEW_MS = 60_000  # windows end a minute in the future: our clock may be behind Schwab's
RESULT_CAP = 3000  # Schwab answers with at most this many orders (maxResults) or transactions per request
MAX_WINDOW_REQUESTS = 16  # requests one poll may spend on narrower windows when an answer hits the cap
MIN_SPLIT_MS = 120_000  # a window this short is not split any further
SPLIT_OVERLAP_MS = 1_000  # halves overlap a second (Schwab's time filter may round); duplicates are dropped
CAP_WARN_EVERY = 600.0  # seconds between warnings about the cap for one account and kind
ID_KEY = {"orders": "orderId", "transactions": "activityId"}


@attrs.define
class SchwabSession:
    """What ``authenticate`` leaves in ``ctx.session``."""

    client: SchwabClient
    skips: Skips
    cap_warned: dict[tuple[str, str], float] = attrs.Factory(dict)  # (kind, account): monotonic time warned


@hookimpl
def broker_info() -> BrokerInfo:
    return BrokerInfo(
        name="schwab",
        capabilities={
            "authenticate",
            "login",
            "fetch_accounts",
            "fetch_positions",
            "fetch_balances",
            "fetch_orders",
            "fetch_transactions",
        },
        settings_cls=SchwabSettings,
        description="Charles Schwab Trader API: accounts, positions, balances, orders, transactions",
    )


def _settings(ctx: BrokerContext) -> SchwabSettings:
    return ctx.settings if ctx.settings is not None else SchwabSettings()


def _token_store(ctx: BrokerContext) -> Any:
    if ctx.tokens is None:
        from livedata_core.plugin_kit.tokens import resolve_token_store

        ctx.tokens = resolve_token_store(ctx.token_key, plugin=ctx.broker)
    return ctx.tokens


def _session(ctx: BrokerContext) -> SchwabSession:
    if not isinstance(ctx.session, SchwabSession):
        client = SchwabClient(_settings(ctx), _token_store(ctx), ctx.log, status=ctx.status, token_key=ctx.token_key)
        ctx.session = SchwabSession(client=client, skips=Skips(ctx.log))
    return ctx.session


def _track_skips(ctx: BrokerContext, session: SchwabSession) -> None:
    if session.skips.counts:
        ctx.status["skipped_records"] = dict(session.skips.counts)


@hookimpl
async def authenticate(ctx: BrokerContext) -> None:
    """Check the app credentials and that a valid access token can be had (refreshing it if needed)."""
    _settings(ctx).credentials()
    session = _session(ctx)
    await session.client.access_token()


@hookimpl
async def login(ctx: BrokerContext, manual: bool) -> None:
    """Interactive OAuth login; saves tokens under this instance's ``ctx.token_key`` in ``ctx.tokens``."""
    await oauth.login(_settings(ctx), _token_store(ctx), ctx.log, manual, key=ctx.token_key)
    if isinstance(ctx.session, SchwabSession):
        ctx.session.client.tokens.load()  # forget the old tokens in a live session


@hookimpl
async def shutdown(ctx: BrokerContext) -> None:
    if isinstance(ctx.session, SchwabSession):
        try:
            await ctx.session.client.aclose()
        except Exception as exc:  # shutdown must not raise
            ctx.log.debug("closing the Schwab client failed: %s", type(exc).__name__)
        ctx.session = None


@hookimpl
async def fetch_accounts(ctx: BrokerContext) -> list[Account]:
    session = _session(ctx)
    accounts = parse_accounts(await session.client.accounts(), session.skips)
    _track_skips(ctx, session)
    return accounts


# Positions and balances come from the same GET /accounts/{hash}?fields=positions, shared for
# account_cache_seconds (SchwabClient.account_snapshot): a positions and a balances poll cost one request.


@hookimpl
async def fetch_positions(ctx: BrokerContext, account_id: str) -> list[Position]:
    session = _session(ctx)
    data = await session.client.account_snapshot(account_id)
    positions = parse_positions(data, account_id, session.skips)
    _track_skips(ctx, session)
    return positions


@hookimpl
async def fetch_balances(ctx: BrokerContext, account_id: str) -> list[Balance]:
    session = _session(ctx)
    data = await session.client.account_snapshot(account_id)
    balances = parse_balances(data, account_id, session.skips)
    _track_skips(ctx, session)
    return balances


def _window(start: int, now: int) -> tuple[int, int]:
    """``[start, now + CLOCK_SKEW_MS]``, no longer than Schwab's one-year maximum."""
    end = now + CLOCK_SKEW_MS
    return max(min(int(start), now), end - MAX_RANGE_MS), end


async def _fetch_window(
    ctx: BrokerContext,
    session: SchwabSession,
    kind: str,
    account_id: str,
    start: int,
    end: int,
    fetch: Callable[[int, int], Awaitable[list[Any]]],
) -> list[Any]:
    """Every row ``fetch(start, end)`` answers, asking again in narrower windows while an answer holds
    Schwab's maximum of :data:`RESULT_CAP` rows (it would silently leave rows out). Warns when it had to,
    and says how many rows may be missing when :data:`MAX_WINDOW_REQUESTS` or :data:`MIN_SPLIT_MS` stop it."""
    pending = [(start, end)]
    rows: list[Any] = []
    seen: set[str] = set()
    capped: list[tuple[int, int]] = []
    requests = 0
    while pending:
        lo, hi = pending.pop()
        answer = await fetch(lo, hi)
        requests += 1
        for raw in answer:
            key = _row_key(kind, raw)
            if key not in seen:
                seen.add(key)
                rows.append(raw)
        if len(answer) < RESULT_CAP:
            continue
        if hi - lo >= MIN_SPLIT_MS and requests + len(pending) + 2 <= MAX_WINDOW_REQUESTS:
            mid = lo + (hi - lo) // 2
            pending += [(mid - SPLIT_OVERLAP_MS, hi), (lo, mid)]  # the older half is asked first
        else:
            capped.append((lo, hi))
    if requests > 1 or capped:
        _warn_cap(ctx, session, kind, account_id, start, end, requests, len(rows), capped)
    return rows


def _row_key(kind: str, raw: Any) -> str:
    value = raw.get(ID_KEY[kind]) if isinstance(raw, dict) else None
    if value is not None and not isinstance(value, bool):
        return f"id:{value}"
    return "raw:" + json.dumps(raw, sort_keys=True, default=str)


def _warn_cap(ctx, session, kind, account_id, start, end, requests, count, capped) -> None:
    window = f"{iso_ms(start)} to {iso_ms(end)}"
    if capped:
        where = ", ".join(f"{iso_ms(lo)} to {iso_ms(hi)}" for lo, hi in capped[:3])
        message = (
            f"Schwab {kind} of account {account_id} from {window}: {len(capped)} window(s) still hold Schwab's "
            f"maximum of {RESULT_CAP} rows ({where}), so some {kind} may be missing; got {count} in {requests} "
            f"requests. Poll {kind} more often"
            + (" or lower orders_lookback_days" if kind == "orders" else "")
        )
        ctx.status["result_cap"] = f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {message}"
    else:
        message = (
            f"Schwab {kind} of account {account_id} from {window}: an answer held Schwab's maximum of "
            f"{RESULT_CAP} rows, so the window was asked for again in parts ({requests} requests, {count} {kind}, "
            "none missing)"
            + (". Lower orders_lookback_days to save the extra requests" if kind == "orders" else "")
        )
    now = time.monotonic()
    last = session.cap_warned.get((kind, account_id))
    if last is None or now - last >= CAP_WARN_EVERY:
        session.cap_warned[(kind, account_id)] = now
        ctx.log.warning("%s", message)
    else:
        ctx.log.debug("%s", message)


@hookimpl
async def fetch_orders(ctx: BrokerContext, account_id: str, since: int) -> list[Order]:
    """Orders entered from ``since`` or from ``orders_lookback_days`` ago, whichever is earlier (a working
    order entered long ago can still change status), to now; at most a year."""
    session = _session(ctx)
    now = now_ms()
    start, end = _window(min(int(since), now - int(_settings(ctx).orders_lookback_days * DAY_MS)), now)

    async def fetch(lo: int, hi: int) -> list[Any]:
        return await session.client.orders(account_id, lo, hi)

    data = await _fetch_window(ctx, session, "orders", account_id, start, end, fetch)
    orders = parse_orders(data, account_id, session.skips)
    _track_skips(ctx, session)
    return orders


@hookimpl
async def fetch_transactions(ctx: BrokerContext, account_id: str, since: int) -> list[Transaction]:
    """Transactions from ``since`` (the runner's sliding window already reaches a day before the previous
    poll, for late postings) to now; at most a year."""
    session = _session(ctx)
    start, end = _window(since, now_ms())
    types = list(_settings(ctx).transaction_types)

    async def fetch(lo: int, hi: int) -> list[Any]:
        return await session.client.transactions(account_id, lo, hi, types)

    data = await _fetch_window(ctx, session, "transactions", account_id, start, end, fetch)
    transactions = parse_transactions(data, account_id, session.skips)
    _track_skips(ctx, session)
    return transactions
