"""livedata broker plugin for the Example exchange: quotes over a websocket, account data over HTTP."""

from __future__ import annotations

import re

import attrs
import httpx

from livedata_core import (
    Account,
    AuthError,
    Balance,
    BrokerContext,
    BrokerError,
    BrokerInfo,
    InvalidIdentifier,
    LoginRequired,
    Position,
    hookimpl,
)
from livedata_core.plugin_kit.tokens import Credential

from .stream import BROKER, ExampleStream

_SYMBOL = re.compile(r"[A-Z][A-Z0-9.]{0,9}")


@attrs.frozen
class ExampleSettings:
    """The ``[brokers.example]`` settings."""

    url: str = "http://127.0.0.1:8765"


@hookimpl
def broker_info() -> BrokerInfo:
    return BrokerInfo(
        name=BROKER,
        capabilities={"authenticate", "stream", "fetch_accounts", "fetch_positions", "fetch_balances"},
        settings_cls=ExampleSettings,
        credentials=(Credential("api_key", "API key"),),  # `livedata auth example` stores it
        description="The Example exchange: websocket quotes, HTTP account data",
    )


@hookimpl
def normalize_symbol(symbol: str) -> str:
    cleaned = symbol.strip().upper()
    if not _SYMBOL.fullmatch(cleaned):
        raise InvalidIdentifier(f"example: {symbol!r} is not a symbol (a letter, then letters, digits or '.')")
    return cleaned


@hookimpl
async def authenticate(ctx: BrokerContext) -> None:
    api_key = ctx.credentials()["api_key"]  # LoginRequired, saying how to give it, when none is set or stored
    if ctx.session is not None:
        await ctx.session.aclose()
    ctx.session = httpx.AsyncClient(base_url=ctx.settings.url, headers={"X-Api-Key": api_key}, timeout=5)
    await _get(ctx, "/accounts")  # proves the key works


async def _get(ctx: BrokerContext, path: str):
    if ctx.session is None:  # authenticate failed (no key): the runner calls it again before any fetch
        raise LoginRequired("the Example exchange: not logged in")
    try:
        response = await ctx.session.get(path)
    except httpx.HTTPError as exc:
        raise BrokerError(f"GET {path} failed: {type(exc).__name__}") from None
    if response.status_code == 401:
        raise AuthError("the Example exchange rejected the API key")
    if response.status_code != 200:
        raise BrokerError(f"GET {path}: HTTP {response.status_code}")
    return response.json()


@hookimpl
async def shutdown(ctx: BrokerContext) -> None:
    if ctx.session is not None:
        await ctx.session.aclose()


@hookimpl
def stream(ctx: BrokerContext) -> ExampleStream:
    return ExampleStream(ctx.settings.url, ctx.credentials()["api_key"], ctx.quotes)  # ctx.quotes outlives the stream


@hookimpl
async def fetch_accounts(ctx: BrokerContext) -> list[Account]:
    rows = await _get(ctx, "/accounts")
    return [Account(broker=BROKER, account_id=row["id"], account_type=row["type"]) for row in rows]


@hookimpl
async def fetch_positions(ctx: BrokerContext, account_id: str) -> list[Position]:
    rows = await _get(ctx, f"/accounts/{account_id}/positions")
    return [
        Position(
            broker=BROKER,
            account_id=account_id,
            symbol=row["symbol"],
            quantity=float(row["qty"]),
            average_price=float(row["avg_price"]),
        )
        for row in rows
    ]


@hookimpl
async def fetch_balances(ctx: BrokerContext, account_id: str) -> list[Balance]:
    row = await _get(ctx, f"/accounts/{account_id}/balances")
    return [Balance(broker=BROKER, account_id=account_id, cash=float(row["cash"]), currency=row["currency"])]
