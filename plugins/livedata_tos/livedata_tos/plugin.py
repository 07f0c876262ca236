"""The tos broker's hooks: log in to the Schwab streamer with a Schwab login and stream from it.

The login is a Schwab instance's (``BrokerInfo.login_plugin = "schwab"``): the one the instance names with
``schwab = "<instance>"``, else the instance named ``schwab`` when the configuration has one; core hands its
context over as ``ctx.login``. Without a linked instance the streamer uses its own ``[brokers.<instance>.schwab]``
table (or the environment) and the tokens under the key ``schwab``, as before instances existed.

``authenticate`` builds a :class:`livedata_schwab.client.SchwabClient` on that login, reads ``streamerInfo`` from
``/userPreference``, and after the streamer denied a login forces a token refresh. ``stream`` returns a new
:class:`~livedata_tos.stream.TosStream` for each connection. ``login`` (``livedata auth <instance>``) logs the
Schwab login in, saving only its tokens. ``fetch_bars`` reads the 1-minute bars a reconnect missed from Schwab's
``/pricehistory``; ``option_chain`` resolves an underlying's contracts through ``/chains``.
"""

from __future__ import annotations

from typing import Any

import attrs
from livedata_schwab import oauth
from livedata_schwab.settings import SchwabSettings
from livedata_schwab.tokens import TOKEN_KEY

from livedata_core import BrokerInfo, hookimpl
from livedata_core.errors import InvalidIdentifier, NotSupported
from livedata_core.models import Bar
from livedata_schwab.marketdata import chain_symbols, parse_candles
from livedata_core.plugin_kit.broker import BrokerContext

from . import symbols
from .activity import ActivityParser
from .protocol import StreamerInfo
from .settings import TosSettings
from .stream import StreamerTokens, TosStream, url_host

__all__ = ["TosSession"]


@attrs.define
class TosSession:
    """What ``authenticate`` keeps in ``ctx.session`` for the streams it creates."""

    client: Any
    tokens: StreamerTokens
    activity: ActivityParser
    info: StreamerInfo | None = None
    levelone: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    """The merged option, futures option and forex fields per symbol, kept across reconnects."""


def make_client(settings: Any, tokens: Any, log: Any, status: dict[str, Any] | None = None, token_key: str = TOKEN_KEY) -> Any:
    """The Schwab REST client that supplies access tokens and ``/userPreference`` for the login whose tokens are
    under ``token_key`` in ``tokens``."""
    from livedata_schwab.client import SchwabClient

    return SchwabClient(settings, tokens, log, status=status, token_key=token_key)


@attrs.frozen
class SchwabLogin:
    """The Schwab login an instance streams with: app settings, token store and the key of its tokens."""

    settings: SchwabSettings
    tokens: Any
    token_key: str
    linked: bool
    """Whether it is a Schwab instance's (``ctx.login``) rather than this instance's own ``schwab`` table."""


def schwab_login(ctx: BrokerContext) -> SchwabLogin:
    """The linked Schwab instance's login (``ctx.login``), else this instance's ``schwab`` settings with the tokens
    under the key ``schwab`` in its own token store."""
    from livedata_core.plugin_kit.tokens import resolve_token_store

    linked = ctx.login
    if linked is not None:
        if linked.tokens is None:
            linked.tokens = resolve_token_store(linked.token_key, plugin=linked.broker)
        settings = linked.settings if linked.settings is not None else SchwabSettings()
        return SchwabLogin(settings, linked.tokens, linked.token_key, linked=True)
    if ctx.tokens is None:
        ctx.tokens = resolve_token_store(ctx.instance, plugin=ctx.broker)
    return SchwabLogin(ctx.settings.schwab, ctx.tokens, TOKEN_KEY, linked=False)


@hookimpl
def broker_info() -> BrokerInfo:
    return BrokerInfo(
        name="tos",
        capabilities={"authenticate", "login", "stream", "fetch_bars", "option_chain"},
        settings_cls=TosSettings,
        description="Schwab (thinkorswim) streamer: quotes of equities, indexes, futures, options, futures options "
        "and forex; 1-minute bars; book depth; account activity",
        kinds=("quotes", "bars", "depth"),
        max_symbols=500,  # the streamer refuses more than about 500 keys per service (REACHED_SYMBOL_LIMIT)
        login_plugin="schwab",  # streams with a Schwab instance's login (ctx.login)
    )


@hookimpl
def normalize_symbol(symbol: str) -> str:
    return symbols.normalize_symbol(symbol)


@hookimpl
async def authenticate(ctx: BrokerContext) -> None:
    session: TosSession | None = ctx.session
    if session is None:
        login = schwab_login(ctx)
        if login.linked:
            client = make_client(login.settings, login.tokens, ctx.log, ctx.status, token_key=login.token_key)
        else:
            client = make_client(login.settings, login.tokens, ctx.log, ctx.status)
        session = TosSession(client, StreamerTokens(client.access_token, client.refresh), ActivityParser(ctx.broker))
        ctx.session = session
    if session.tokens.stale:
        # The streamer refused the last token: make sure the next LOGIN carries a new one.
        await session.tokens.refresh()
        ctx.log.info("refreshed the Schwab access token after the streamer denied the login")
    else:
        await session.client.access_token()  # LoginRequired here when nobody logged the Schwab login in
    session.info = StreamerInfo.from_preference(await session.client.user_preference())
    url = ctx.settings.streamer_url or session.info.url
    ctx.status["streamer"] = url_host(url)


@hookimpl
async def login(ctx: BrokerContext, manual: bool) -> None:
    """``livedata auth <instance>``: the Schwab OAuth login of the login this instance streams with (the linked
    Schwab instance's, saved under its token key only; else under ``schwab``)."""
    login = schwab_login(ctx)
    await oauth.login(login.settings, login.tokens, ctx.log, manual, key=login.token_key)
    if isinstance(ctx.session, TosSession):
        ctx.session.client.tokens.load()  # forget the old tokens in a live session


@hookimpl
def stream(ctx: BrokerContext) -> TosStream:
    session: TosSession = ctx.session
    s: TosSettings = ctx.settings
    return TosStream(
        session.info,
        session.tokens,
        broker=ctx.broker,
        instance=ctx.instance,
        url=s.streamer_url,
        account_activity=s.account_activity,
        activity=session.activity,
        login_timeout=s.login_timeout,
        command_timeout=s.command_timeout,
        open_timeout=s.open_timeout,
        heartbeat_timeout=s.heartbeat_timeout,
        connection_limit_retry=s.connection_limit_retry,
        max_keys_per_command=s.max_keys_per_command,
        status=ctx.status,
        log=ctx.log,
        quotes=ctx.quotes,
        levelone=session.levelone,
        nyse_book=s.nyse_book,  # every level is published; the runner keeps the top depth_levels
    )


@hookimpl
async def fetch_bars(ctx: BrokerContext, symbol: str, interval: int, start: int, end: int) -> list[Bar]:
    """The 1-minute bars of ``symbol`` in ``[start, end)`` from ``/pricehistory`` (extended hours included)."""
    if interval != 60:
        raise NotSupported(f"Schwab's streamer sends 1-minute bars; no {interval} s bars to fetch")
    session = await _session(ctx)
    data = await session.client.price_history(symbol, start, end)
    return parse_candles(data, broker=ctx.broker, symbol=symbol, interval=interval, start=start, end=end, log=ctx.log)


@hookimpl
async def option_chain(ctx: BrokerContext, underlying: str, expiration: str | None, strikes: int | None) -> list[str]:
    """The option symbols of ``underlying`` from ``/chains`` (calls and puts; one expiration or all; the
    ``strikes`` strikes nearest the money or Schwab's default)."""
    session = await _session(ctx)
    data = await session.client.option_chain(underlying, from_date=expiration, to_date=expiration, strike_count=strikes)
    contracts: list[str] = []
    odd: list[str] = []
    for symbol in chain_symbols(data, underlying):
        try:
            contracts.append(symbols.normalize_symbol(symbol))
        except InvalidIdentifier:
            odd.append(symbol)
    if odd:  # a contract the streamer could not take is left out, said once per chain
        ctx.log.warning("option chain of %s: %d contract symbol(s) the streamer does not take were left out, the "
                        "first: %r", underlying, len(odd), odd[0])  # fmt: skip
    return contracts


async def _session(ctx: BrokerContext) -> TosSession:
    if ctx.session is None:
        await authenticate(ctx)
    return ctx.session


@hookimpl
def replay_stream(ctx: BrokerContext) -> TosStream:
    """``livedata replay``: a stream like :func:`stream`'s, with a placeholder login (a recording holds no token)."""
    if not isinstance(ctx.session, _ReplaySession):
        ctx.session = _ReplaySession(ActivityParser(ctx.broker), _replay_client(ctx))

    async def token() -> str:
        return "replay"

    s: TosSettings = ctx.settings
    info = StreamerInfo("wss://replay.invalid/ws", "replay", "replay", "replay", "replay")
    return TosStream(info, StreamerTokens(token, token), broker=ctx.broker, instance=ctx.instance,
                     account_activity=s.account_activity,
                     activity=ctx.session.activity, max_keys_per_command=s.max_keys_per_command, status=ctx.status,
                     log=ctx.log, quotes=ctx.quotes)  # fmt: skip


@attrs.define
class _ReplaySession:
    activity: ActivityParser
    client: Any
    """A Schwab client on a placeholder token: its REST calls (a bar gap's ``/pricehistory``) are answered from the
    recording."""


def _replay_client(ctx: BrokerContext) -> Any:
    from livedata_core.plugin_kit.tokens import MemoryTokenStore

    store = MemoryTokenStore()
    store.save(TOKEN_KEY, {"access_token": "replay", "refresh_token": "replay", "access_expires_at": 253_402_300_799_000,
                           "refresh_issued_at": None})  # fmt: skip
    settings = getattr(ctx.settings, "schwab", None) or SchwabSettings()
    return make_client(settings, store, ctx.log, ctx.status)


@hookimpl
async def shutdown(ctx: BrokerContext) -> None:
    session: TosSession | None = ctx.session
    if session is not None:
        try:
            await session.client.aclose()
        except Exception as exc:
            ctx.log.debug("closing the Schwab client failed: %s", type(exc).__name__)
