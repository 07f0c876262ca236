"""The Schwab plugin, driven from Django: the web OAuth login's two steps, and fetching account data to publish.

Both use the Schwab plugin's own code (its settings, token endpoint, client and parsers) with the
``[brokers.schwab]`` table of the runner's configuration (:func:`livedata_django.conf.schwab_table`) and a
:class:`~livedata_django.tokens.ModelTokenStore` bound to the logged-in user.
"""

from __future__ import annotations

import asyncio
from typing import Any

from livedata_core.models import to_dict
from livedata_core.plugin_kit.plugins import get_broker
from livedata_core.redis_io.publisher import AsyncPublisher
from livedata_core.errors import ConfigError, LivedataError, PublishError
from livedata_schwab.client import make_http
from livedata_schwab.oauth import authorize_url
from livedata_schwab.settings import SchwabSettings
from livedata_schwab.tokens import TokenRecord, request_tokens

from . import conf

__all__ = ["UnknownAccount", "authorize_url", "exchange_code", "fetch", "schwab_settings"]

PUBLISH_TIMEOUT = 10.0


class UnknownAccount(LivedataError):
    """The Schwab login sees no such account."""


def schwab_settings() -> SchwabSettings:
    """The Schwab app's settings, checked (``ConfigError`` names the key, or the missing key and secret)."""
    config = conf.runner_config()
    ctx = get_broker("schwab").make_context(conf.schwab_table(config))
    ctx.settings.credentials()
    return ctx.settings


def exchange_code(settings: SchwabSettings, code: str, redirect_uri: str) -> TokenRecord:
    """Trade the authorization code for tokens at once (codes expire within about 30 seconds).

    :raises TokenRefused: Schwab refused the code. :raises BrokerError: Schwab could not be reached or failed.
    """

    async def go() -> TokenRecord:
        async with make_http(settings) as http:
            form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
            return await request_tokens(http, settings, form)

    return asyncio.run(go())


def fetch(kind: str, store: Any, account_id: str | None = None) -> list[dict[str, Any]]:
    """Fetch ``accounts``, or one account's ``positions`` or ``balances``, with the tokens in ``store``; publish
    positions and balances to Redis like ``livedata positions schwab`` does; return them as JSON-able dicts.

    :raises LivedataError: ``UnknownAccount``, ``LoginRequired`` (no usable tokens), ``AuthError``, ``RateLimited``, ``BrokerError``,
        ``ConfigError``, ``PublishError`` (Redis refused or is unreachable; nothing was returned then).
    """
    config = conf.runner_config()
    broker = get_broker("schwab")
    ctx = broker.make_context(conf.schwab_table(config), store)

    async def go() -> list[Any]:
        try:
            await broker.call("authenticate", ctx=ctx)
            if kind == "accounts":
                return list(await broker.call("fetch_accounts", ctx=ctx))
            try:
                items = list(await broker.call(f"fetch_{kind}", ctx=ctx, account_id=account_id))
            except ConfigError as exc:  # after authenticate, only the account can be wrong
                raise UnknownAccount(str(exc)) from None
            if items:
                await _publish(config, items)
            return items
        finally:
            await broker.call("shutdown", ctx=ctx)

    return [to_dict(item) for item in asyncio.run(go())]


async def _publish(config: Any, items: list[Any]) -> None:
    redis = config.redis
    publisher = AsyncPublisher(redis.url, prefix=redis.prefix, latest=redis.latest, streams=redis.streams,
                               stream_maxlen=redis.stream_maxlen)  # fmt: skip
    await publisher.start()
    publisher.publish_many(items)
    lost = await publisher.close(timeout=PUBLISH_TIMEOUT)
    if lost:
        raise PublishError(f"{lost} of {len(items)} could not be published to Redis")
