"""The core broker conformance suite, run against the quoting fake streamer and the fake Schwab REST server
(see conftest.py).

The suite runs TC-ERR-03/04 with an empty token store, so there ``authenticate`` stops at "no saved login"
(``LoginRequired``) before any request. The tests below the suite check the same errors with a saved login, so
the requests really go to the unreachable port, the streamer that is not there, or the token endpoint that
refuses the app secret.
"""

from __future__ import annotations

import asyncio

import pytest

from livedata_core.errors import AuthError, BrokerError, StreamError
from livedata_core.plugin_kit.plugins import get_broker
from livedata_core.redis_io.server import free_port
from livedata_core.testing.conformance import ConformanceSuite


class TestConformance(ConformanceSuite):
    pass


def _run(go) -> None:
    asyncio.run(asyncio.wait_for(go(), 10))


def test_unreachable_schwab_with_a_saved_login_raises_broker_error(conformance_unreachable_settings, make_saved_login):
    broker = get_broker("tos")
    ctx = broker.make_context(conformance_unreachable_settings, make_saved_login())

    async def go() -> None:
        try:
            await broker.call("authenticate", ctx=ctx)
        finally:
            await broker.call("shutdown", ctx=ctx)

    with pytest.raises(BrokerError):
        _run(go)


def test_unreachable_streamer_after_authenticating_raises_stream_error(conformance_settings, make_saved_login):
    broker = get_broker("tos")
    settings = {**conformance_settings, "streamer_url": f"ws://127.0.0.1:{free_port()}/ws"}
    ctx = broker.make_context(settings, make_saved_login())

    async def go() -> None:
        await broker.call("authenticate", ctx=ctx)
        stream = await broker.call("stream", ctx=ctx)
        try:
            with pytest.raises(StreamError):
                await stream.connect()
        finally:
            await stream.close()
            await broker.call("shutdown", ctx=ctx)

    _run(go)


def test_revoked_token_and_refused_app_secret_raise_auth_error(conformance_bad_credentials, make_saved_login, tos_fakes):
    broker = get_broker("tos")
    # A token Schwab no longer accepts: /userPreference answers 401, the refresh is refused (invalid_client).
    ctx = broker.make_context(conformance_bad_credentials, make_saved_login(access_token="revoked-ACCESS-token"))

    async def go() -> None:
        try:
            await broker.call("authenticate", ctx=ctx)
        finally:
            await broker.call("shutdown", ctx=ctx)

    with pytest.raises(AuthError):
        _run(go)
    assert ("POST", "/v1/oauth/token") in tos_fakes[1].requests, "the refresh never reached the token endpoint"
