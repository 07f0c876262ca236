"""Token refresh (early, once for many tasks and for two processes, the 7-day limit) and REST retries."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from livedata_core.errors import AuthError, LoginRequired, RateLimited
from livedata_core.plugin_kit.tokens import FileTokenStore
from livedata_schwab.client import SchwabClient, parse_retry_after


def run(coro):
    return asyncio.run(coro)


def test_access_token_is_refreshed_before_it_expires(fake_schwab, settings_for, saved_tokens):
    store = saved_tokens(expires_in_s=120)  # inside the 300 s refresh margin
    old = store.load("schwab")

    async def go():
        client = SchwabClient(settings_for(), store)
        try:
            token = await client.access_token()
            again = await client.access_token()
            return token, again
        finally:
            await client.aclose()

    token, again = run(go())
    assert token != old["access_token"] and token == again and token in fake_schwab.access_tokens
    assert fake_schwab.refreshes == 1
    saved = store.load("schwab")
    assert saved["access_token"] == token
    assert saved["refresh_issued_at"] == old["refresh_issued_at"]  # refreshing does not renew the 7 days
    assert saved["access_expires_at"] > time.time() * 1000 + 1700_000


def test_many_concurrent_callers_refresh_once(fake_schwab, settings_for, saved_tokens):
    store = saved_tokens(expires_in_s=10)
    fake_schwab.refresh_delay = 0.2

    async def go():
        client = SchwabClient(settings_for(), store)
        try:
            tokens = await asyncio.gather(*(client.access_token() for _ in range(20)), client.refresh(), client.refresh())
            return set(tokens)
        finally:
            await client.aclose()

    tokens = run(go())
    assert fake_schwab.refreshes == 1
    assert len(tokens) == 1 and tokens <= fake_schwab.access_tokens


def test_two_clients_sharing_a_file_store_refresh_once(fake_schwab, settings_for, saved_tokens, tmp_path):
    # Two processes would each have their own client; the file lock and re-reading the store make the second
    # one use the first one's new token instead of refreshing (and invalidating) it again.
    store = saved_tokens(FileTokenStore(tmp_path), expires_in_s=10)
    fake_schwab.refresh_delay = 0.2

    async def go():
        a, b = SchwabClient(settings_for(), FileTokenStore(tmp_path)), SchwabClient(settings_for(), FileTokenStore(tmp_path))
        try:
            return await asyncio.gather(a.access_token(), b.access_token())
        finally:
            await a.aclose()
            await b.aclose()

    first, second = run(go())
    assert first == second and fake_schwab.refreshes == 1
    assert store.load("schwab")["access_token"] == first


def test_refresh_token_age_warns_then_requires_login(fake_schwab, settings_for, saved_tokens, caplog):
    status: dict = {}
    store = saved_tokens(issued_days_ago=5.4)

    async def go(store):
        client = SchwabClient(settings_for(), store, status=status)
        try:
            return await client.access_token()
        finally:
            await client.aclose()

    with caplog.at_level(logging.WARNING):
        run(go(store))
    assert "expires in 1d 14h" in status["refresh_token"] and "livedata auth schwab" in status["refresh_token"]
    assert "Schwab refresh token expires in 1d 14h" in caplog.text
    left_days = (status["refresh_token_expires_at"] - time.time()) / 86400  # what the days-left metric reads
    assert 1.5 < left_days < 1.7, left_days

    expired = saved_tokens(issued_days_ago=7.1, expires_in_s=60)
    with pytest.raises(LoginRequired, match="expired.*run `livedata auth schwab`"):
        run(go(expired))
    assert status["refresh_token"].startswith("expired at")
    assert fake_schwab.refreshes == 0  # Schwab was not even asked


def test_an_unknown_refresh_issue_time_stays_unknown_and_status_says_so(fake_schwab, settings_for, saved_tokens):
    """A token store that cannot keep the issue time (an application's table without the column) saves None: the
    refresh keeps it None instead of inventing 'now', and status says the expiry is unknown, not 'valid for 7d'."""
    status: dict = {}
    store = saved_tokens(expires_in_s=60)
    record = store.load("schwab")
    store.save("schwab", {**record, "refresh_issued_at": None})

    async def go():
        client = SchwabClient(settings_for(), store, status=status)
        try:
            return await client.access_token()
        finally:
            await client.aclose()

    run(go())
    assert fake_schwab.refreshes == 1
    assert store.load("schwab")["refresh_issued_at"] is None
    assert status["refresh_token"].startswith("issue time unknown"), status


def test_refused_refresh_token_requires_login(fake_schwab, settings_for, saved_tokens):
    store = saved_tokens(expires_in_s=10)
    fake_schwab.refresh_token = "a-token-from-a-newer-login"
    status: dict = {}

    async def go():
        client = SchwabClient(settings_for(), store, status=status)
        try:
            await client.access_token()
        finally:
            await client.aclose()

    with pytest.raises(LoginRequired) as info:
        run(go())
    assert "refresh_token_authentication_error" in str(info.value) and "livedata auth schwab" in str(info.value)
    assert "RT-secret" not in str(info.value)
    assert status["refresh_token"] == "refused by Schwab: run `livedata auth schwab` to log in again"


def test_401_refreshes_and_retries_once(fake_schwab, settings_for, saved_tokens):
    store = saved_tokens()
    fake_schwab.script("/trader/v1/userPreference", (401, {}, {"message": "token invalid"}))

    async def go():
        client = SchwabClient(settings_for(), store)
        try:
            return await client.user_preference()
        finally:
            await client.aclose()

    prefs = run(go())
    assert prefs["streamerInfo"][0]["schwabClientChannel"] == "N9"
    assert fake_schwab.refreshes == 1
    calls = fake_schwab.api_requests("/userPreference")
    assert len(calls) == 2 and calls[0]["auth"] != calls[1]["auth"]


def test_401_after_refresh_is_an_auth_error_with_advice(fake_schwab, settings_for, saved_tokens):
    store = saved_tokens()
    fake_schwab.script("/trader/v1/userPreference", (401, {}, {"message": "Unauthorized"}), (401, {}, {"message": "Unauthorized"}))

    async def go():
        client = SchwabClient(settings_for(), store)
        try:
            return await client.user_preference()
        finally:
            await client.aclose()

    with pytest.raises(AuthError, match="even after a token refresh.*Unauthorized.*Ready For Use"):
        run(go())
    assert fake_schwab.refreshes == 1


def test_429_waits_for_retry_after_then_succeeds(fake_schwab, settings_for, saved_tokens):
    store = saved_tokens()
    fake_schwab.script("/trader/v1/accounts/accountNumbers", (429, {"Retry-After": "0.3"}, {"message": "slow down"}))

    async def go():
        client = SchwabClient(settings_for(), store)
        try:
            started = time.monotonic()
            hashes = await client.account_hashes()
            return hashes, time.monotonic() - started
        finally:
            await client.aclose()

    hashes, took = run(go())
    assert hashes["12345678"] == "A" * 64
    assert took >= 0.3
    assert len(fake_schwab.api_requests("accountNumbers")) == 2


def test_429_until_retries_run_out_raises_rate_limited(fake_schwab, settings_for, saved_tokens):
    store = saved_tokens()
    fake_schwab.script("/trader/v1/accounts", *[(429, {"Retry-After": "0.01"}, {})] * 3)

    async def go():
        client = SchwabClient(settings_for(max_retries=2), store)
        try:
            await client.accounts()
        finally:
            await client.aclose()

    with pytest.raises(RateLimited) as info:
        run(go())
    assert info.value.retry_after == pytest.approx(0.01)


def test_5xx_is_retried_with_backoff(fake_schwab, settings_for, saved_tokens):
    store = saved_tokens()
    fake_schwab.script("/trader/v1/accounts", (503, {}, {"message": "busy"}), (500, {}, None))

    async def go():
        client = SchwabClient(settings_for(), store)
        try:
            return await client.accounts()
        finally:
            await client.aclose()

    assert len(run(go())) == 2
    assert len(fake_schwab.api_requests("/trader/v1/accounts")) == 3


def test_rate_limiter_spaces_requests(fake_schwab, settings_for, saved_tokens):
    store = saved_tokens()

    async def go():
        client = SchwabClient(settings_for(requests_per_minute=600), store)  # 10/s, burst 50
        client.limiter.capacity = client.limiter._tokens = 1.0
        try:
            started = time.monotonic()
            await asyncio.gather(*(client.user_preference() for _ in range(4)))
            return time.monotonic() - started
        finally:
            await client.aclose()

    assert run(go()) >= 0.29  # 1 at once, then one every 0.1 s


def test_retry_after_header_forms():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 0 <= parse_retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 5))) <= 6
    # A value that would stall polling for hours, or break the scheduler, is capped or ignored.
    assert parse_retry_after("1e12") == 600.0 and parse_retry_after("inf") is None and parse_retry_after("nan") is None
    assert parse_retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 86400))) == 600.0


def test_an_answer_that_is_not_a_list_is_an_error_not_an_empty_account(fake_schwab, settings_for, saved_tokens):
    from livedata_core.errors import BrokerError

    fake_schwab.script("/trader/v1/accounts", (200, {}, {"error": "something odd"}))

    async def go():
        client = SchwabClient(settings_for(), saved_tokens())
        try:
            with pytest.raises(BrokerError, match="/accounts answered with dict instead of a list"):
                await client.accounts()
        finally:
            await client.aclose()

    run(go())


def test_tokens_never_in_debug_logs_or_reprs(fake_schwab, settings_for, saved_tokens, caplog):
    store = saved_tokens(expires_in_s=10)
    fake_schwab.script("/trader/v1/accounts", (401, {}, {"message": "expired"}))

    async def go():
        client = SchwabClient(settings_for(), store)
        try:
            await client.accounts()
            return repr(client), repr(client.tokens), repr(client.tokens.load())
        finally:
            await client.aclose()

    with caplog.at_level(logging.DEBUG):
        reprs = run(go())
    text = caplog.text + "".join(reprs)
    assert "refreshed the Schwab access token" in caplog.text
    for secret in ("AT-secret-access", "RT-secret-refresh", "S" * 16):
        assert secret not in text, secret


def test_a_new_login_is_picked_up_without_restart(fake_schwab, settings_for, saved_tokens):
    store = saved_tokens(issued_days_ago=7.5)

    async def go():
        client = SchwabClient(settings_for(), store)
        try:
            with pytest.raises(LoginRequired):
                await client.access_token()
            saved_tokens(store)  # the user ran `livedata auth schwab` in another terminal
            return await client.access_token()
        finally:
            await client.aclose()

    assert run(go()) == store.load("schwab")["access_token"]


def test_a_stale_account_hash_is_mapped_again_after_schwab_refuses_it(fake_schwab, settings_for, saved_tokens):
    from livedata_core.errors import BrokerError

    old_hash, new_hash = "A" * 64, "C" * 64  # the fake Schwab's hash of account 12345678 (conftest.py), and a new one
    fake_schwab.script(f"/trader/v1/accounts/{old_hash}/orders",
                       (400, {}, {"message": "Invalid account number", "errors": ["stale"]}))  # fmt: skip

    async def go():
        client = SchwabClient(settings_for(), saved_tokens())
        try:
            await client.account_hashes()
            # Schwab re-issued the hash meanwhile: the old one is refused once.
            fake_schwab.routes["/trader/v1/accounts/accountNumbers"] = [{"accountNumber": "12345678", "hashValue": new_hash}]
            fake_schwab.routes[f"/trader/v1/accounts/{new_hash}/orders"] = []
            with pytest.raises(BrokerError, match="Invalid account number"):
                await client.orders("12345678", 0, 1)
            assert await client.orders("12345678", 0, 1) == []
        finally:
            await client.aclose()

    run(go())
    assert fake_schwab.api_requests(f"/accounts/{new_hash}/orders")
