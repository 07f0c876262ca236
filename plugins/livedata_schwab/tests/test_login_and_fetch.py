"""End to end: log in through the real callback server against the fake Schwab over HTTPS, then fetch every kind
of account data through the hooks and publish it to the test's Redis."""

from __future__ import annotations

import ssl
import asyncio
import io
import json
import logging

import httpx
import pytest
import redis

from livedata_core.errors import AuthError, ConfigError, LoginRequired
from livedata_core.plugin_kit.plugins import get_broker
from livedata_core.redis_io.publisher import AsyncPublisher
from livedata_core.plugin_kit.tokens import MemoryTokenStore
from livedata_schwab import oauth



def play_browser(ca_file: str):
    """What the user's browser does: open the login URL, follow Schwab's redirect to the callback."""
    result: dict = {}

    def on_listening(url: str) -> None:
        async def go() -> None:
            async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=ca_file)) as schwab:
                answer = await schwab.get(url)
            assert answer.status_code == 302
            # The callback's certificate is self-signed: the user accepts the browser's warning.
            async with httpx.AsyncClient(verify=False) as browser:
                page = await browser.get(answer.headers["Location"])
            result["page"] = page

        result["task"] = asyncio.get_running_loop().create_task(go())

    return on_listening, result


def test_browser_login_then_fetch_everything_lands_on_redis(fake_schwab, settings_for, redis_server, caplog):
    caplog.set_level(logging.DEBUG)
    settings = settings_for()
    store = MemoryTokenStore()
    broker = get_broker("schwab")
    ctx = broker.make_context({}, store)
    ctx.settings = settings
    on_listening, browser = play_browser(fake_schwab.ca_file)

    async def go():
        out = io.StringIO()
        record = await oauth.login(settings, store, ctx.log, manual=False, on_listening=on_listening, out=out)
        await browser["task"]
        assert "Logged in" in browser["page"].text
        assert "accept it to continue" in out.getvalue()

        await broker.call("authenticate", ctx=ctx)
        accounts = await broker.call("fetch_accounts", ctx=ctx)
        items = []
        for account in accounts:
            for kind in ("positions", "balances"):
                items += await broker.call(f"fetch_{kind}", ctx=ctx, account_id=account.account_id)
            for kind in ("orders", "transactions"):
                items += await broker.call(f"fetch_{kind}", ctx=ctx, account_id=account.account_id, since=0)
        publisher = AsyncPublisher(redis_server.url)
        await publisher.start()
        publisher.publish_many(items)
        assert await publisher.close() == 0
        await broker.call("shutdown", ctx=ctx)
        return record, accounts

    record, accounts = asyncio.run(go())

    # The token exchange: HTTP Basic client auth, the URL-decoded code ("...@", not "%40"), the callback.
    token_post = fake_schwab.api_requests("/v1/oauth/token")[0]
    assert token_post["form"]["code"].endswith("@")
    assert token_post["form"]["redirect_uri"] == settings.callback_url
    assert store.load("schwab")["refresh_token"] == fake_schwab.refresh_token
    assert record.access_token in fake_schwab.access_tokens

    assert [(a.account_id, a.account_type) for a in accounts] == [("12345678", "MARGIN"), ("87654321", "CASH")]
    # Account numbers go to Schwab only as hashes.
    urls = [r["path"] for r in fake_schwab.requests if r["path"].startswith("/trader/v1/accounts/")]
    assert not any("12345678" in u or "87654321" in u for u in urls)

    r = redis.Redis(port=redis_server.port, decode_responses=True)
    positions = json.loads(r.get("live_data:latest:positions:12345678"))
    assert positions["symbol"] in ("AAPL", "TSLA")
    balance = json.loads(r.get("live_data:latest:balances:12345678"))
    assert (balance["cash"], balance["buying_power"], balance["account_value"], balance["equity"]) == (1000.0, 24000.0, 25000.0, 25000.0)
    cash = json.loads(r.get("live_data:latest:balances:87654321"))
    assert cash["buying_power"] is None
    assert (cash["cash"], cash["account_value"], cash["extra"]["cash_available_for_trading"]) == (5000.0, 6700.0, 4800.0)

    orders = [json.loads(fields["data"]) if "data" in fields else fields for _, fields in r.xrange("live_data:stream:orders:12345678")]
    assert orders, r.keys("*")
    order_text = json.dumps(orders)
    assert "1000001" in order_text and "1000002" in order_text
    transactions = r.xrange("live_data:stream:transactions:12345678")
    assert len(transactions) == 2
    assert "95512265692" in json.dumps(transactions)

    # Orders and transactions were asked with Schwab's required parameters.
    order_query = fake_schwab.api_requests("/orders")[0]["query"]
    assert order_query["fromEnteredTime"].endswith("Z") and order_query["toEnteredTime"].endswith("Z")
    tx_query = fake_schwab.api_requests("/transactions")[0]["query"]
    assert set(tx_query) >= {"startDate", "endDate", "types"} and "TRADE" in tx_query["types"]

    # Nothing secret in livedata's debug log (the test's own browser client logs the callback URL; ignore it).
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("livedata"))
    assert "Schwab login complete" in ours
    for secret in ("AT-secret-access", "RT-secret-refresh", "fakeCode", "S" * 16):
        assert secret not in ours, secret


def test_manual_login_reads_the_pasted_redirect(fake_schwab, settings_for):
    settings = settings_for()
    store = MemoryTokenStore()

    async def paste(prompt, out):
        url = [line.strip() for line in out.getvalue().splitlines() if "/authorize?" in line][0]
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=fake_schwab.ca_file)) as schwab:
            answer = await schwab.get(url)
        return answer.headers["Location"] + "\n"

    out = io.StringIO()
    asyncio.run(oauth.login(settings, store, logging.getLogger("t"), manual=True, read_line=paste, out=out))
    assert "paste it here within 30 seconds" in out.getvalue()
    assert "client_id=" + "K" * 32 in out.getvalue()
    assert store.load("schwab")["access_token"] in fake_schwab.access_tokens


def test_expired_code_says_what_to_do(fake_schwab, settings_for):
    settings = settings_for()
    store = MemoryTokenStore()

    async def paste(prompt, out):
        url = [line.strip() for line in out.getvalue().splitlines() if "/authorize?" in line][0]
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=fake_schwab.ca_file)) as schwab:
            answer = await schwab.get(url)
        fake_schwab.valid_code = "a-newer-code"  # the pasted code has expired meanwhile
        return answer.headers["Location"]

    with pytest.raises(AuthError) as info:
        asyncio.run(oauth.login(settings, store, logging.getLogger("t"), manual=True, read_line=paste, out=io.StringIO()))
    message = str(info.value)
    assert "invalid_grant" in message and "expire about 30 seconds" in message and "livedata auth schwab" in message
    assert "fakeCode" not in message
    assert store.load("schwab") is None


def test_wrong_state_or_not_a_redirect_is_refused():
    with pytest.raises(AuthError, match="state does not match"):
        oauth.parse_redirect("https://127.0.0.1:8182/?code=C0.x%40&state=other", "mine")
    with pytest.raises(AuthError, match="containing '\\?code='"):
        oauth.parse_redirect("https://127.0.0.1:8182/", "mine")
    with pytest.raises(AuthError, match="access_denied"):
        oauth.parse_redirect("https://127.0.0.1:8182/?error=access_denied&state=mine", "mine")
    assert oauth.parse_redirect("https://127.0.0.1:8182/?code=C0.x%40&session=s&state=mine", "mine") == "C0.x@"


def test_wrong_app_secret_names_the_env_vars(fake_schwab, settings_for, monkeypatch):
    settings = settings_for(app_secret="W" * 16)

    async def paste(prompt, out):
        url = [line.strip() for line in out.getvalue().splitlines() if "/authorize?" in line][0]
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=fake_schwab.ca_file)) as schwab:
            return (await schwab.get(url)).headers["Location"]

    with pytest.raises(AuthError, match="LIVEDATA_SCHWAB_APP_SECRET.*Ready For Use"):
        asyncio.run(oauth.login(settings, MemoryTokenStore(), logging.getLogger("t"), True, read_line=paste, out=io.StringIO()))


def test_missing_credentials_and_tokens_give_clear_errors(settings_for, monkeypatch):
    settings = settings_for()
    monkeypatch.delenv("LIVEDATA_SCHWAB_APP_SECRET")
    with pytest.raises(ConfigError, match="LIVEDATA_SCHWAB_APP_SECRET") as info:
        settings.credentials()
    assert "LIVEDATA_SCHWAB_APP_KEY" not in str(info.value)
    monkeypatch.setenv("LIVEDATA_SCHWAB_APP_SECRET", "x" * 16)
    broker = get_broker("schwab")
    ctx = broker.make_context({}, MemoryTokenStore())
    ctx.settings = settings
    with pytest.raises(LoginRequired, match="livedata auth schwab"):
        asyncio.run(broker.call("authenticate", ctx=ctx))
    assert "livedata auth schwab" in ctx.status["refresh_token"]


def test_settings_from_toml_table_mask_secrets():
    broker = get_broker("schwab")
    ctx = broker.make_context({"app_key": "my-key-123", "app_secret": "my-secret-456", "requests_per_minute": 60}, MemoryTokenStore())
    assert ctx.settings.requests_per_minute == 60
    assert "my-key-123" not in repr(ctx.settings) and "my-secret-456" not in repr(ctx.settings)
    with pytest.raises(ConfigError, match="callback_url"):
        broker.make_context({"callback_url": "http://example.com"}, MemoryTokenStore())
    with pytest.raises(ConfigError, match="app_kee"):
        broker.make_context({"app_kee": "x"}, MemoryTokenStore())
