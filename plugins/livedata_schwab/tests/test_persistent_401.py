"""A 401 that a new token does not cure must not refresh the token on every request or poll."""

from __future__ import annotations

import asyncio
import json
import time

import redis

from livedata_core.errors import AuthError
from livedata_core.plugin_kit.plugins import get_broker
from livedata_core.runner import Runner, load_config

HASH_MARGIN = "A" * 64  # the fake Schwab's hash of account 12345678 (conftest.py)

ACCOUNT_PATH = f"/trader/v1/accounts/{HASH_MARGIN}"
NOT_AUTHORIZED = (401, {}, {"message": "Client not authorized", "errors": []})
UNAUTHORIZED = (401, {}, {"message": "Unauthorized", "errors": ["token invalid"]})


def poll_positions(settings, store, polls: int, pause: float = 0.0) -> list[Exception]:
    """``polls`` positions polls through the plugin's hooks, as the runner makes them; their errors."""
    broker = get_broker("schwab")
    ctx = broker.make_context({}, store)
    ctx.settings = settings

    async def go() -> list[Exception]:
        errors: list[Exception] = []
        await broker.call("authenticate", ctx=ctx)
        try:
            for _ in range(polls):
                try:
                    await broker.call("fetch_positions", ctx=ctx, account_id="12345678")
                except AuthError as exc:
                    errors.append(exc)
                await asyncio.sleep(pause)
        finally:
            await broker.call("shutdown", ctx=ctx)
        return errors

    return asyncio.run(go())


def test_client_not_authorized_never_refreshes_and_says_what_to_fix(fake_schwab, settings_for, saved_tokens):
    # The app lacks the "Accounts and Trading Production" product: Schwab answers every request so.
    fake_schwab.script(ACCOUNT_PATH, *[NOT_AUTHORIZED] * 20)
    errors = poll_positions(settings_for(), saved_tokens(), polls=10)
    assert len(errors) == 10
    assert fake_schwab.refreshes == 0
    assert len(fake_schwab.api_requests(ACCOUNT_PATH)) == 10  # one request a poll, no retries
    text = str(errors[-1])
    assert "Client not authorized" in text and "Accounts and Trading Production" in text and "Ready For Use" in text


def test_persistent_401_refreshes_at_most_once_per_backoff(fake_schwab, settings_for, saved_tokens):
    fake_schwab.script(ACCOUNT_PATH, *[UNAUTHORIZED] * 40)
    settings = settings_for(refresh_401_backoff=60.0, requests_per_minute=6000)
    errors = poll_positions(settings, saved_tokens(), polls=15)
    assert len(errors) == 15
    assert fake_schwab.refreshes == 1  # the first poll refreshed once; it did not help, so no more
    assert "did not help" in str(errors[-1]) and "refresh_401_backoff" in str(errors[-1])
    # One retry after the single refresh, then one request per poll.
    assert len(fake_schwab.api_requests(ACCOUNT_PATH)) == 16


def test_refresh_is_tried_again_once_the_backoff_is_over(fake_schwab, settings_for, saved_tokens):
    fake_schwab.script(ACCOUNT_PATH, *[UNAUTHORIZED] * 40)
    settings = settings_for(refresh_401_backoff=0.3)
    started = time.monotonic()
    errors = poll_positions(settings, saved_tokens(), polls=8, pause=0.1)
    took = time.monotonic() - started
    assert len(errors) == 8
    # At most one refresh per 0.3 s window (plus the first), never one per poll.
    assert 2 <= fake_schwab.refreshes <= 1 + int(took / 0.3) < 8


def test_a_transient_401_is_still_cured_by_one_refresh(fake_schwab, settings_for, saved_tokens):
    fake_schwab.script(ACCOUNT_PATH, UNAUTHORIZED)
    errors = poll_positions(settings_for(), saved_tokens(), polls=3)
    assert errors == [] and fake_schwab.refreshes == 1


def test_runner_with_persistent_client_not_authorized_does_not_hammer_the_token_endpoint(
    fake_schwab, settings_for, saved_tokens, redis_server
):
    settings_for()  # credentials and token-dir environment
    store = saved_tokens()
    for path in (ACCOUNT_PATH, ACCOUNT_PATH + "/orders", ACCOUNT_PATH + "/transactions"):
        fake_schwab.script(path, *[NOT_AUTHORIZED] * 200)
    table = {
        "accounts": ["12345678"],
        "poll": {"positions": 0.05, "balances": 0.05, "orders": 0.05, "transactions": 0.05},
        "api_base_url": fake_schwab.base + "/trader/v1",
        "auth_base_url": fake_schwab.base + "/v1/oauth",
        "ca_file": fake_schwab.ca_file,
        "requests_per_minute": 6000,
    }
    config = load_config(
        {
            "redis": {"url": redis_server.url},
            "status_interval": 0.1,
            "backoff": {"initial": 0.05, "max": 0.1},
            "brokers": {"schwab": table},
        }
    )
    r = redis.Redis(port=redis_server.port, decode_responses=True)

    async def go():
        runner = Runner(config, token_store=store)
        task = asyncio.create_task(runner.run())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(fake_schwab.api_requests(ACCOUNT_PATH)) < 12:
            await asyncio.sleep(0.05)
        status = runner.status()
        runner.stop()
        await asyncio.wait_for(task, 10)
        return status

    status = asyncio.run(go())
    assert len(fake_schwab.api_requests(ACCOUNT_PATH)) >= 12  # many polls failed...
    assert fake_schwab.refreshes == 0  # ...without a single token refresh
    assert "Accounts and Trading Production" in json.dumps(status["brokers"]["schwab"])
    assert r.get("live_data:latest:positions:12345678") is None
