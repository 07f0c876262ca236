"""The tos broker's hooks: log in to the Schwab streamer with the Schwab login and stream from it.

``authenticate`` builds a :class:`livedata_schwab.client.SchwabClient` (tokens under the key ``schwab`` in this
broker's token store), reads ``streamerInfo`` from ``/userPreference``, and after the streamer denied a login
forces a token refresh. ``stream`` returns a new :class:`~livedata_tos.stream.TosStream` for each connection.
"""

from __future__ import annotations

from typing import Any

import attrs

from livedata_core import BrokerInfo, hookimpl
from livedata_core.broker import BrokerContext

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


def make_client(settings: Any, tokens: Any, log: Any, status: dict[str, Any] | None = None) -> Any:
    """The Schwab REST client that supplies access tokens and ``/userPreference``."""
    from livedata_schwab.client import SchwabClient

    return SchwabClient(settings, tokens, log, status=status)


@hookimpl
def broker_info() -> BrokerInfo:
    return BrokerInfo(
        name="tos",
        capabilities={"authenticate", "stream"},
        settings_cls=TosSettings,
        description="Schwab (thinkorswim) streamer: level-one equity/index/futures quotes and account activity",
        max_symbols=500,  # the streamer refuses more than about 500 keys per service (REACHED_SYMBOL_LIMIT)
    )


@hookimpl
def normalize_symbol(symbol: str) -> str:
    return symbols.normalize_symbol(symbol)


@hookimpl
async def authenticate(ctx: BrokerContext) -> None:
    session: TosSession | None = ctx.session
    if session is None:
        client = make_client(ctx.settings.schwab, ctx.tokens, ctx.log, ctx.status)
        session = TosSession(client, StreamerTokens(client.access_token, client.refresh), ActivityParser(ctx.broker))
        ctx.session = session
    if session.tokens.stale:
        # The streamer refused the last token: make sure the next LOGIN carries a new one.
        await session.tokens.refresh()
        ctx.log.info("refreshed the Schwab access token after the streamer denied the login")
    else:
        await session.client.access_token()  # LoginRequired here when nobody ran `livedata auth schwab`
    session.info = StreamerInfo.from_preference(await session.client.user_preference())
    url = ctx.settings.streamer_url or session.info.url
    ctx.status["streamer"] = url_host(url)


@hookimpl
def stream(ctx: BrokerContext) -> TosStream:
    session: TosSession = ctx.session
    s: TosSettings = ctx.settings
    return TosStream(
        session.info,
        session.tokens,
        broker=ctx.broker,
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
    )


@hookimpl
async def shutdown(ctx: BrokerContext) -> None:
    session: TosSession | None = ctx.session
    if session is not None:
        try:
            await session.client.aclose()
        except Exception as exc:
            ctx.log.debug("closing the Schwab client failed: %s", type(exc).__name__)
