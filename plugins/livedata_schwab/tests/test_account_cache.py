"""Positions and balances share one GET /accounts/{hash}?fields=positions per account_cache_seconds."""

from __future__ import annotations

import asyncio
import json

import redis

from livedata_core.plugin_kit.plugins import get_broker
from livedata_core.runner import Runner, load_config

HASH_MARGIN = "A" * 64  # the fake Schwab's hash of account 12345678 (conftest.py)
HASH_CASH = "B" * 64  # ... and of 87654321
MARGIN_PATH = f"/trader/v1/accounts/{HASH_MARGIN}"
CASH_PATH = f"/trader/v1/accounts/{HASH_CASH}"


def account_requests(fake, path: str) -> list[dict]:
    return [r for r in fake.requests if r["path"] == path]


def run_hooks(settings, store, body):
    """Run ``body(broker, ctx)`` against an authenticated Schwab broker context; shut it down after."""
    broker = get_broker("schwab")
    ctx = broker.make_context({}, store)
    ctx.settings = settings

    async def go():
        await broker.call("authenticate", ctx=ctx)
        try:
            return await body(broker, ctx)
        finally:
            await broker.call("shutdown", ctx=ctx)

    return asyncio.run(go())


def test_positions_then_balances_cost_one_request(fake_schwab, settings_for, saved_tokens):
    async def body(broker, ctx):
        positions = await broker.call("fetch_positions", ctx=ctx, account_id="12345678")
        balances = await broker.call("fetch_balances", ctx=ctx, account_id="12345678")
        return positions, balances

    positions, balances = run_hooks(settings_for(), saved_tokens(), body)
    assert {p.symbol for p in positions} == {"AAPL", "TSLA"}
    assert balances[0].buying_power == 24000.0 and balances[0].account_value == 25000.0
    calls = account_requests(fake_schwab, MARGIN_PATH)
    assert len(calls) == 1 and calls[0]["query"] == {"fields": "positions"}


def test_concurrent_positions_and_balances_polls_wait_for_one_request(fake_schwab, settings_for, saved_tokens):
    # The runner starts every poll loop at once: both hit the account at the same moment.
    async def body(broker, ctx):
        return await asyncio.gather(
            broker.call("fetch_positions", ctx=ctx, account_id="12345678"),
            broker.call("fetch_balances", ctx=ctx, account_id="12345678"),
            broker.call("fetch_positions", ctx=ctx, account_id="87654321"),
            broker.call("fetch_balances", ctx=ctx, account_id="87654321"),
        )

    margin_positions, margin_balances, cash_positions, cash_balances = run_hooks(settings_for(), saved_tokens(), body)
    assert len(margin_positions) == 2 and cash_positions == []
    assert margin_balances[0].buying_power == 24000.0 and cash_balances[0].buying_power is None
    assert len(account_requests(fake_schwab, MARGIN_PATH)) == 1  # accounts are cached separately
    assert len(account_requests(fake_schwab, CASH_PATH)) == 1


def test_an_older_answer_is_asked_for_again(fake_schwab, settings_for, saved_tokens):
    async def body(broker, ctx):
        await broker.call("fetch_positions", ctx=ctx, account_id="12345678")
        await asyncio.sleep(0.25)
        await broker.call("fetch_balances", ctx=ctx, account_id="12345678")

    run_hooks(settings_for(account_cache_seconds=0.2), saved_tokens(), body)
    assert len(account_requests(fake_schwab, MARGIN_PATH)) == 2


def test_cache_off_asks_every_time_and_failures_are_not_cached(fake_schwab, settings_for, saved_tokens):
    fake_schwab.script(MARGIN_PATH, (400, {}, {"message": "Bad request"}))

    async def body(broker, ctx):
        try:
            await broker.call("fetch_positions", ctx=ctx, account_id="12345678")
        except Exception as exc:
            failed = exc
        return failed, await broker.call("fetch_balances", ctx=ctx, account_id="12345678")

    failed, balances = run_hooks(settings_for(), saved_tokens(), body)
    assert "HTTP 400" in str(failed) and balances[0].buying_power == 24000.0
    assert len(account_requests(fake_schwab, MARGIN_PATH)) == 2

    fake_schwab.requests.clear()

    async def twice(broker, ctx):
        await broker.call("fetch_positions", ctx=ctx, account_id="12345678")
        await broker.call("fetch_balances", ctx=ctx, account_id="12345678")

    run_hooks(settings_for(account_cache_seconds=0), saved_tokens(), twice)
    assert len(account_requests(fake_schwab, MARGIN_PATH)) == 2


def test_runner_positions_and_balances_polls_share_requests(fake_schwab, settings_for, saved_tokens, redis_server):
    settings_for()  # credentials and token-dir environment
    store = saved_tokens()
    table = {
        "accounts": ["12345678"],
        "poll": {"positions": 0.1, "balances": 0.1, "orders": 0, "transactions": 0},
        "api_base_url": fake_schwab.base + "/trader/v1",
        "auth_base_url": fake_schwab.base + "/v1/oauth",
        "ca_file": fake_schwab.ca_file,
        "account_cache_seconds": 0.5,
    }
    config = load_config({"redis": {"url": redis_server.url}, "status_interval": 0.1, "brokers": {"schwab": table}})
    r = redis.Redis(port=redis_server.port, decode_responses=True)

    async def go():
        runner = Runner(config, token_store=store)
        task = asyncio.create_task(runner.run())
        await asyncio.sleep(1.2)
        status = runner.status()
        runner.stop()
        await asyncio.wait_for(task, 10)
        return status

    status = asyncio.run(go())
    polls = status["brokers"]["schwab"]["polls"]
    asked = len(account_requests(fake_schwab, MARGIN_PATH))
    assert polls["positions"] >= 5 and polls["balances"] >= 5
    assert asked <= 4  # once per 0.5 s, not once per poll of each kind (>= 10)
    assert json.loads(r.get("live_data:latest:balances:12345678"))["buying_power"] == 24000.0
    assert r.get("live_data:latest:positions:12345678")
