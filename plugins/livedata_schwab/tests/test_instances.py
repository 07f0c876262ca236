"""Several Schwab logins side by side: each instance keeps its tokens under its own key (``ctx.token_key``, the
instance's name), logs in, refreshes and tells the user what to run with that key, and never touches another's."""

from __future__ import annotations

import asyncio
import io
import logging
import ssl

import httpx
import pytest

from livedata_core.errors import LoginRequired
from livedata_core.plugin_kit.plugins import get_broker
from livedata_core.plugin_kit.tokens import MemoryTokenStore
from livedata_schwab import oauth
from livedata_schwab.client import SchwabClient


def _as_instance(store: MemoryTokenStore, key: str) -> MemoryTokenStore:
    """Move the login the ``saved_tokens`` fixture saved under ``schwab`` to ``key``."""
    store.save(key, store.load("schwab"))
    store.delete("schwab")
    return store


def test_a_client_reads_refreshes_and_saves_only_its_own_key(fake_schwab, settings_for, saved_tokens):
    store = _as_instance(saved_tokens(expires_in_s=1), "schwab_ira")  # about to expire: the first call refreshes
    store.save("schwab", {"access_token": "another-login", "refresh_token": "theirs",
                          "access_expires_at": 1, "refresh_issued_at": 1})  # fmt: skip
    theirs = store.load("schwab")

    async def go():
        client = SchwabClient(settings_for(), store, token_key="schwab_ira")
        try:
            token = await client.access_token()
            accounts = await client.accounts()
        finally:
            await client.aclose()
        return token, accounts

    token, accounts = asyncio.run(go())
    assert fake_schwab.refreshes == 1
    assert store.load("schwab_ira")["access_token"] == token and token in fake_schwab.access_tokens
    assert len(accounts) == 2
    assert store.load("schwab") == theirs  # the other login is untouched


def test_without_a_login_the_message_names_the_instance(fake_schwab, settings_for, saved_tokens):
    store = saved_tokens()  # a login for the instance `schwab` only
    status: dict = {}

    async def go():
        client = SchwabClient(settings_for(), store, status=status, token_key="schwab_ira")
        try:
            await client.access_token()
        finally:
            await client.aclose()

    with pytest.raises(LoginRequired, match=r"run `livedata auth schwab_ira` to log in$"):
        asyncio.run(go())
    assert status["refresh_token"] == "none saved: run `livedata auth schwab_ira` to log in"


def test_the_oauth_login_saves_under_the_instance_key_only(fake_schwab, settings_for):
    store = MemoryTokenStore()
    store.save("schwab", {"untouched": True})

    async def paste(prompt, out):
        url = [line.strip() for line in out.getvalue().splitlines() if "/authorize?" in line][0]
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=fake_schwab.ca_file)) as schwab:
            answer = await schwab.get(url)
        return answer.headers["Location"] + "\n"

    asyncio.run(oauth.login(settings_for(), store, logging.getLogger("t"), manual=True, read_line=paste,
                            out=io.StringIO(), key="schwab_ira"))  # fmt: skip
    assert store.load("schwab_ira")["access_token"] in fake_schwab.access_tokens
    assert store.load("schwab") == {"untouched": True}


def test_the_login_hook_and_the_fetch_hooks_use_ctx_token_key(fake_schwab, settings_for, saved_tokens):
    broker = get_broker("schwab")
    ctx = broker.make_context({}, _as_instance(saved_tokens(), "schwab_ira"))
    if not hasattr(ctx, "token_key"):
        pytest.skip("livedata_core's BrokerContext has no token_key yet")
    ctx.settings = settings_for()
    ctx.token_key = "schwab_ira"

    async def go():
        await broker.call("authenticate", ctx=ctx)
        accounts = await broker.call("fetch_accounts", ctx=ctx)
        await broker.call("shutdown", ctx=ctx)
        return accounts

    assert [a.account_id for a in asyncio.run(go())] == ["12345678", "87654321"]
    assert ctx.tokens.load("schwab") is None
