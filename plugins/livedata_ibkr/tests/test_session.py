"""Session checks, brokerage-session recovery and the keep-alive, against the fake gateway over HTTPS."""

import asyncio

import pytest

from livedata_core.errors import AuthError, LoginRequired, RateLimited, StreamError
from livedata_ibkr.testing import FakeGateway


def run(coro):
    return asyncio.run(coro)


def test_authenticate_checks_status_preflights_and_tickles(ibkr, make_ctx):
    async def main():
        async with FakeGateway() as gw:
            ctx = make_ctx(gw, tickle_interval=0.05, pacing_overrides={"POST /tickle": 0.0})
            await ibkr.call("authenticate", ctx=ctx)
            paths = [r.path for r in gw.requests]
            assert paths[:3] == ["/iserver/auth/status", "/iserver/accounts", "/tickle"]
            assert "/iserver/auth/ssodh/init" not in paths
            await gw.wait_for(lambda: len(gw.calls("/tickle", "POST")) >= 4, timeout=2)
            assert ctx.status["session"] == "authenticated"
            assert ctx.status["tickle"].startswith("ok at")
            await ibkr.call("shutdown", ctx=ctx)
            n = len(gw.calls("/tickle"))
            await asyncio.sleep(0.2)
            assert len(gw.calls("/tickle")) == n, "tickle must stop at shutdown"

    run(main())


def test_closed_brokerage_session_is_reopened_with_ssodh_init(ibkr, make_ctx):
    async def main():
        async with FakeGateway() as gw:
            gw.authenticated = False
            ctx = make_ctx(gw)
            await ibkr.call("authenticate", ctx=ctx)
            init = gw.calls("/iserver/auth/ssodh/init", "POST")
            assert len(init) == 1 and init[0].body == {"publish": True, "compete": False}
            assert gw.authenticated
            await ibkr.call("shutdown", ctx=ctx)

    run(main())


def test_browser_login_needed_is_reported_plainly(ibkr, make_ctx):
    async def main():
        async with FakeGateway() as gw:
            gw.logged_in = False
            ctx = make_ctx(gw)
            with pytest.raises(LoginRequired) as info:
                await ibkr.call("authenticate", ctx=ctx)
            message = str(info.value)
            assert f"open https://127.0.0.1:{gw.rest_port} in a browser" in message
            assert "Client login succeeds" in message
            await ibkr.call("shutdown", ctx=ctx)

    run(main())


def test_reopen_that_does_not_take_asks_for_login_and_names_competition(ibkr, make_ctx):
    async def main():
        async with FakeGateway() as gw:
            gw.authenticated = False
            gw.competing = True
            gw.reauth_allowed = False
            ctx = make_ctx(gw, login_wait=0.2, compete=True)
            with pytest.raises(LoginRequired, match="another IBKR session") as info:
                await ibkr.call("authenticate", ctx=ctx)
            assert "compete is on but the gateway did not hand the session over" in str(info.value)
            assert len(gw.calls("/iserver/auth/status")) >= 2, "status is polled after ssodh/init"
            await ibkr.call("shutdown", ctx=ctx)

    run(main())


def test_tickle_notices_lost_auth_and_hooks_raise_autherror_until_reauthenticated(ibkr, authenticated):
    async def main():
        async with FakeGateway() as gw, authenticated(gw, tickle_interval=0.05) as ctx:
            gw.authenticated = False  # silently, no websocket to tell us
            await gw.wait_for(lambda: ctx.session.auth_lost, timeout=2)
            assert ctx.status["session"].startswith("lost")
            with pytest.raises(AuthError):
                await ibkr.call("fetch_orders", ctx=ctx, account_id="DU1234", since=0)
            await ibkr.call("authenticate", ctx=ctx)  # what the runner does after AuthError
            assert gw.calls("/iserver/auth/ssodh/init")
            orders = await ibkr.call("fetch_orders", ctx=ctx, account_id="DU1234", since=0)
            assert orders == []

    run(main())


def test_http_401_on_a_fetch_is_an_autherror(ibkr, authenticated):
    async def main():
        async with FakeGateway() as gw, authenticated(gw) as ctx:
            gw.authenticated = False
            with pytest.raises(AuthError, match="401"):
                await ibkr.call("fetch_orders", ctx=ctx, account_id="DU1234", since=0)

    run(main())


def test_untrusted_certificate_is_refused_without_opt_in(ibkr):
    async def main():
        async with FakeGateway() as gw:
            ctx = ibkr.make_context({"base_url": gw.base_url, "ws_url": gw.ws_url})  # no ca_bundle
            with pytest.raises(StreamError, match="not reachable"):
                await ibkr.call("authenticate", ctx=ctx)
            await ibkr.call("shutdown", ctx=ctx)
            ctx = ibkr.make_context({"base_url": gw.base_url, "ws_url": gw.ws_url, "allow_self_signed": True})
            await ibkr.call("authenticate", ctx=ctx)
            await ibkr.call("shutdown", ctx=ctx)

    run(main())


def test_gateway_down_is_a_stream_error_naming_the_gateway(ibkr):
    ctx = ibkr.make_context({"base_url": "https://127.0.0.1:9/v1/api", "connect_timeout": 1.0})

    async def main():
        with pytest.raises(StreamError, match="is the Client Portal gateway running"):
            await ibkr.call("authenticate", ctx=ctx)
        await ibkr.call("shutdown", ctx=ctx)

    run(main())


def test_429_is_retried_then_raised_as_ratelimited(ibkr, authenticated):
    async def main():
        async with FakeGateway() as gw, authenticated(gw, rate_limit_retries=2) as ctx:
            gw.rate_limit("/portfolio/accounts", times=2)
            accounts = await ibkr.call("fetch_accounts", ctx=ctx)
            assert [a.account_id for a in accounts] == ["DU1234"]
            calls = gw.calls("/portfolio/accounts")
            assert len(calls) == 3
            assert calls[1].at - calls[0].at >= 0.045, "waits Retry-After before retrying"
            gw.rate_limit("/portfolio/DU1234/ledger", times=5)
            with pytest.raises(RateLimited) as info:
                await ibkr.call("fetch_balances", ctx=ctx, account_id="DU1234")
            assert info.value.retry_after == pytest.approx(0.05)

    run(main())


def test_an_unreadable_or_endless_retry_after_does_not_block_the_endpoint(ibkr, authenticated):
    async def main():
        async with FakeGateway() as gw, authenticated(gw, rate_limit_retries=2) as ctx:
            gw.rate_limit("/portfolio/accounts", times=1, retry_after="inf")
            accounts = await asyncio.wait_for(ibkr.call("fetch_accounts", ctx=ctx), 5)
            assert [a.account_id for a in accounts] == ["DU1234"]  # retried after rate_limit_backoff instead

    run(main())


def test_login_waits_for_the_browser_login_and_opens_the_brokerage_session(ibkr, make_ctx, capsys):
    async def main():
        async with FakeGateway() as gw:
            gw.logged_in = False
            gw.authenticated = False
            ctx = make_ctx(gw, browser_login_timeout=5.0)

            async def user_logs_in():
                await asyncio.sleep(0.3)
                gw.logged_in = True  # browser login done; brokerage session still closed

            helper = asyncio.create_task(user_logs_in())
            await ibkr.call("login", ctx=ctx, manual=False)
            await helper
            assert gw.authenticated and gw.calls("/iserver/auth/ssodh/init")
            out = capsys.readouterr().out
            assert f"Open https://127.0.0.1:{gw.rest_port} in a browser" in out
            assert "session is open" in out

    run(main())


def test_login_gives_up_after_the_timeout(ibkr, make_ctx):
    async def main():
        async with FakeGateway() as gw:
            gw.logged_in = False
            ctx = make_ctx(gw, browser_login_timeout=0.3)
            with pytest.raises(LoginRequired, match="no login at"):
                await ibkr.call("login", ctx=ctx, manual=True)

    run(main())


def test_plain_http_gateway_uses_ws_without_tls(ibkr, make_ctx):
    async def main():
        async with FakeGateway(tls=False) as gw:
            ctx = ibkr.make_context({"base_url": gw.base_url, "ws_url": gw.ws_url})
            assert gw.base_url.startswith("http://") and gw.ws_url.startswith("ws://")
            await ibkr.call("authenticate", ctx=ctx)
            stream = await ibkr.call("stream", ctx=ctx)
            await stream.connect()
            await stream.close()
            await ibkr.call("shutdown", ctx=ctx)

    run(main())


def test_competing_session_is_reported_not_taken_over_by_default(ibkr, make_ctx):
    # Taking the session over would log the user's TWS / mobile / web session out, and the two would keep
    # taking it back from each other.
    async def main():
        async with FakeGateway() as gw:
            gw.authenticated = False
            gw.competing = True
            ctx = make_ctx(gw)
            with pytest.raises(LoginRequired) as info:
                await ibkr.call("authenticate", ctx=ctx)
            message = str(info.value)
            assert "another IBKR session (TWS, mobile or web) holds the brokerage session" in message
            assert "brokers.ibkr.compete = true" in message and "in a browser" not in message
            assert gw.calls("/iserver/auth/ssodh/init") == [], "never competes without the setting"
            assert gw.competing and not gw.authenticated
            gw.competing = False  # the user logged out of TWS; the runner retries authenticate
            await ibkr.call("authenticate", ctx=ctx)
            (init,) = gw.calls("/iserver/auth/ssodh/init")
            assert init.body == {"publish": True, "compete": False}
            assert ctx.session.authenticated
            await ibkr.call("shutdown", ctx=ctx)

    run(main())


def test_compete_setting_takes_the_session_over(ibkr, make_ctx):
    async def main():
        async with FakeGateway() as gw:
            gw.authenticated = False
            gw.competing = True
            ctx = make_ctx(gw, compete=True)
            await ibkr.call("authenticate", ctx=ctx)
            (init,) = gw.calls("/iserver/auth/ssodh/init")
            assert init.body == {"publish": True, "compete": True}
            assert gw.authenticated and not gw.competing
            await ibkr.call("shutdown", ctx=ctx)

    run(main())


def test_login_does_not_compete_and_says_why_it_gave_up(ibkr, make_ctx):
    async def main():
        async with FakeGateway() as gw:
            gw.authenticated = False
            gw.competing = True
            ctx = make_ctx(gw, browser_login_timeout=0.3)
            with pytest.raises(LoginRequired, match="another IBKR session"):
                await ibkr.call("login", ctx=ctx, manual=False)
            assert gw.calls("/iserver/auth/ssodh/init") == []

    run(main())
