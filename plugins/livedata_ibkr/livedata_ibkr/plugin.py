"""The livedata hooks of the Interactive Brokers plugin (Client Portal Web API through the local gateway)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import attrs

from livedata_core import hookimpl
from livedata_core.plugin_kit.broker import BrokerContext, BrokerInfo
from livedata_core.errors import AuthError, BrokerError, LoginRequired
from livedata_core.models import Account, Balance, Order, Position

from . import symbols
from .parsers import BROKER, parse_account, parse_balances, parse_order, parse_position
from .session import IbkrSession
from .settings import IbkrSettings
from .stream import IbkrStream
from .values import BadValue

POSITIONS_PAGE_SIZE = 100
MAX_POSITION_PAGES = 100
_BAD_ROW = (BadValue, KeyError, TypeError, ValueError)


@hookimpl
def broker_info() -> BrokerInfo:
    return BrokerInfo(
        name=BROKER,
        capabilities={"authenticate", "login", "stream", "fetch_accounts", "fetch_positions", "fetch_balances", "fetch_orders"},
        settings_cls=IbkrSettings,
        description="Interactive Brokers through the Client Portal gateway (quotes, positions, balances, orders)",
        max_symbols=100,  # an account's market-data lines: at least 100, shared with TWS, mobile and web
    )


@hookimpl
def normalize_symbol(symbol: str) -> str:
    return symbols.normalize(symbol)


def _settings(ctx: BrokerContext) -> IbkrSettings:
    return ctx.settings if isinstance(ctx.settings, IbkrSettings) else IbkrSettings()


@hookimpl
async def authenticate(ctx: BrokerContext) -> None:
    """Check the gateway's session, open the brokerage session if needed, start the keep-alive."""
    if ctx.session is None:
        ctx.session = IbkrSession(_settings(ctx), ctx.log, ctx.status)
    await ctx.session.authenticate()


@hookimpl
async def login(ctx: BrokerContext, manual: bool) -> None:
    """``livedata auth <instance>``: say where to log in, and wait until the gateway's brokerage session is open.

    The login itself (username, password, second factor) happens only in the gateway's browser page; nothing
    is stored in the token store. ``manual`` changes nothing: the URL is always printed, never opened.
    """
    settings = _settings(ctx)
    session = IbkrSession(settings, ctx.log, ctx.status)
    try:
        print(f"Open {session.login_url} in a browser on the gateway's machine and log in (with 2FA).")
        print(f"Waiting up to {settings.browser_login_timeout:g}s for the gateway's brokerage session...")
        if not await session.wait_for_login(settings.browser_login_timeout):
            raise LoginRequired(
                f"IBKR: no login at {session.login_url} within {settings.browser_login_timeout:g}s; "
                f"run `livedata auth {ctx.instance}` again after logging in"
            )
        print("IBKR gateway session is open.")
    finally:
        await session.close()


@hookimpl
async def shutdown(ctx: BrokerContext) -> None:
    if isinstance(ctx.session, IbkrSession):
        await ctx.session.close()
        ctx.session = None


def _session(ctx: BrokerContext) -> IbkrSession:
    session = ctx.session
    if not isinstance(session, IbkrSession) or not session.authenticated:
        raise AuthError("IBKR session is not authenticated yet")
    session.check()
    return session


@hookimpl
def stream(ctx: BrokerContext) -> IbkrStream:
    return IbkrStream(_session(ctx), _settings(ctx), ctx.log, quotes=ctx.quotes)


@hookimpl
def replay_stream(ctx: BrokerContext) -> IbkrStream:
    """``livedata replay``: a stream like :func:`stream`'s on a session taken as authenticated (its REST calls are
    answered from the recording; a recording holds no session token, so a placeholder stands in)."""
    # No connection is made: the gateway's certificate file need not be on the machine replaying.
    settings = attrs.evolve(_settings(ctx), ca_bundle="")
    if not isinstance(ctx.session, IbkrSession):
        ctx.session = IbkrSession(settings, ctx.log, ctx.status)
    session = ctx.session
    session.authenticated = True
    session.auth_lost = False
    session.ws_token = session.ws_token or "replay"
    return IbkrStream(session, settings, ctx.log, quotes=ctx.quotes)


@hookimpl
async def fetch_accounts(ctx: BrokerContext) -> list[Account]:
    session = _session(ctx)
    rows = await session.portfolio_accounts()
    out = []
    for row in rows:
        try:
            out.append(parse_account(row))
        except _BAD_ROW as exc:
            ctx.log.warning("skipped an IBKR account row: %s", exc)
    return out


async def _portfolio(ctx: BrokerContext, account_id: str) -> tuple[IbkrSession, str]:
    """The session after the portfolio pre-flight, and the account id made safe for a URL path."""
    session = _session(ctx)
    await session.portfolio_accounts()
    return session, quote(account_id, safe="")


@hookimpl
async def fetch_positions(ctx: BrokerContext, account_id: str) -> list[Position]:
    """Every position, page by page (100 rows a page)."""
    session, acct = await _portfolio(ctx, account_id)
    if session.settings.invalidate_positions:
        await session.client.post(f"/portfolio/{acct}/positions/invalidate")
    out: list[Position] = []
    for page in range(MAX_POSITION_PAGES):
        rows = await session.client.get(f"/portfolio/{acct}/positions/{page}")
        if not isinstance(rows, list):
            break
        for row in rows:
            try:
                out.append(parse_position(row, account_id))
            except _BAD_ROW as exc:
                ctx.log.warning("skipped an IBKR position row: %s", exc)
        if len(rows) < POSITIONS_PAGE_SIZE:
            break
    return out


@hookimpl
async def fetch_balances(ctx: BrokerContext, account_id: str) -> list[Balance]:
    """Cash and value per currency from the ledger; margin figures from the summary on the ``BASE`` row."""
    session, acct = await _portfolio(ctx, account_id)
    ledger = await session.client.get(f"/portfolio/{acct}/ledger")
    summary = await session.client.get(f"/portfolio/{acct}/summary")
    if not isinstance(ledger, dict):
        raise BrokerError(f"IBKR ledger of {account_id} is not an object")
    try:
        return parse_balances(ledger, summary, account_id)
    except _BAD_ROW as exc:
        raise BrokerError(f"IBKR ledger of {account_id} could not be read: {exc}") from None


@hookimpl
async def fetch_orders(ctx: BrokerContext, account_id: str, since: int) -> list[Order]:
    """Today's live orders of one account (the gateway keeps no older ones), each in its current state; the
    runner publishes only the states it has not published yet (from this poll or the websocket)."""
    session = _session(ctx)
    rows = await _live_orders(session, account_id)
    out = []
    for row in rows:
        if not isinstance(row, dict) or row.get("orderId") is None:
            ctx.log.warning("skipped an IBKR order row without orderId")
            continue
        if row.get("acct") not in (None, account_id):
            continue
        merged = session.orders.merge(row)
        try:
            order = parse_order(merged, account_id)
        except _BAD_ROW as exc:
            ctx.log.warning("skipped an IBKR order row: %s", exc)
            continue
        out.append(order)
    return out


# Sample reply: {"orders":[{...order...}], "snapshot":true}
async def _live_orders(session: IbkrSession, account_id: str) -> list[Any]:
    # The first call of a session only starts the gateway's order feed and may come back empty; ask again.
    attempts = 1 if session.orders_ready else 2
    rows: list[Any] = []
    for _ in range(attempts):
        data = await session.client.get("/iserver/account/orders", accountId=account_id)
        rows = data.get("orders") if isinstance(data, dict) else None
        rows = rows if isinstance(rows, list) else []
        session.orders_ready = True
        if rows:
            break
    return rows
