"""The Schwab broker's hooks: login, authenticate, and polling accounts, positions, balances, orders and
transactions from the Trader API. Streaming quotes and account activity is the ``tos`` plugin's job."""

from __future__ import annotations

import attrs

from livedata_core import BrokerContext, BrokerInfo, hookimpl
from livedata_core.models import Account, Balance, Order, Position, Transaction, now_ms

from . import oauth
from .client import SchwabClient
from .parsers import Skips, parse_accounts, parse_balances, parse_orders, parse_positions, parse_transactions
from .settings import SchwabSettings

DAY_MS = 86_400_000
MAX_RANGE_MS = 364 * DAY_MS  # Schwab refuses order/transaction ranges longer than a year
# Transactions can post with an earlier time than when they appear (dividends, corrections): always look back
# a day. The runner publishes each transaction id once, so the overlap costs nothing downstream.
TRANSACTION_OVERLAP_MS = DAY_MS
CLOCK_SKEW_MS = 60_000


@attrs.define
class SchwabSession:
    """What ``authenticate`` leaves in ``ctx.session``."""

    client: SchwabClient
    skips: Skips


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


def _session(ctx: BrokerContext) -> SchwabSession:
    if not isinstance(ctx.session, SchwabSession):
        if ctx.tokens is None:
            from livedata_core.tokens import resolve_token_store

            ctx.tokens = resolve_token_store(ctx.broker)
        client = SchwabClient(_settings(ctx), ctx.tokens, ctx.log, status=ctx.status)
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
    """Interactive OAuth login; saves tokens under ``"schwab"`` in ``ctx.tokens``."""
    if ctx.tokens is None:
        from livedata_core.tokens import resolve_token_store

        ctx.tokens = resolve_token_store(ctx.broker)
    await oauth.login(_settings(ctx), ctx.tokens, ctx.log, manual)
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


def _window(since: int, lookback_ms: float, now: int) -> tuple[int, int]:
    start = min(int(since), int(now - lookback_ms))
    return max(start, now - MAX_RANGE_MS), now + CLOCK_SKEW_MS


@hookimpl
async def fetch_orders(ctx: BrokerContext, account_id: str, since: int) -> list[Order]:
    """Orders entered since ``since``, and every order entered in the last ``orders_lookback_days`` (a
    working order entered long ago can still change status)."""
    session = _session(ctx)
    start, end = _window(since, _settings(ctx).orders_lookback_days * DAY_MS, now_ms())
    data = await session.client.orders(account_id, start, end)
    orders = parse_orders(data, account_id, session.skips)
    _track_skips(ctx, session)
    return orders


@hookimpl
async def fetch_transactions(ctx: BrokerContext, account_id: str, since: int) -> list[Transaction]:
    session = _session(ctx)
    start, end = _window(since, TRANSACTION_OVERLAP_MS, now_ms())
    data = await session.client.transactions(account_id, start, end, list(_settings(ctx).transaction_types))
    transactions = parse_transactions(data, account_id, session.skips)
    _track_skips(ctx, session)
    return transactions

