"""The core broker conformance suite, run against the fake Schwab over HTTPS (see conftest.py).

The suite runs TC-ERR-03/04 with an empty token store, so there ``authenticate`` stops at "no saved login"
(``LoginRequired``) before any request. The two tests below the suite check the same errors with a saved login,
so the request really reaches the unreachable port or the token endpoint that refuses the app secret.
"""

from __future__ import annotations

import asyncio

import pytest

from livedata_core.errors import AuthError, BrokerError, LivedataError
from livedata_core.plugin_kit.plugins import get_broker
from livedata_core.testing.conformance import ConformanceSuite


class TestConformance(ConformanceSuite):
    pass


def _authenticate_and_fetch(settings: dict, store) -> None:
    broker = get_broker("schwab")
    ctx = broker.make_context(settings, store)

    async def go() -> None:
        try:
            await broker.call("authenticate", ctx=ctx)
            await broker.call("fetch_accounts", ctx=ctx)
        finally:
            await broker.call("shutdown", ctx=ctx)

    asyncio.run(asyncio.wait_for(go(), 10))


def test_unreachable_server_with_a_saved_login_raises_broker_error(
    saved_tokens, conformance_unreachable_settings
):
    with pytest.raises(BrokerError) as info:
        _authenticate_and_fetch(conformance_unreachable_settings, saved_tokens())
    assert isinstance(info.value, LivedataError)


def test_refused_app_secret_with_an_expiring_login_raises_auth_error(
    fake_schwab, saved_tokens, conformance_bad_credentials
):
    store = saved_tokens(expires_in_s=10)  # inside refresh_margin: authenticate must refresh
    with pytest.raises(AuthError):
        _authenticate_and_fetch(conformance_bad_credentials, store)
    assert fake_schwab.api_requests("/v1/oauth/token"), "the refresh never reached the token endpoint"
