"""Through the lead's Runner: poll intervals drive the Schwab hooks and data lands on Redis."""

from __future__ import annotations

import asyncio
import json
import time

import redis

from livedata_core.runner import Runner, load_config


def test_runner_polls_schwab_into_redis(fake_schwab, settings_for, saved_tokens, redis_server):
    settings_for()  # sets the credentials and token-dir environment
    store = saved_tokens()
    table = {
        "accounts": ["12345678"],
        "poll": {"positions": 0.1, "balances": 0.1, "orders": 0.1, "transactions": 0.1},
        "api_base_url": fake_schwab.base + "/trader/v1",
        "auth_base_url": fake_schwab.base + "/v1/oauth",
        "ca_file": fake_schwab.ca_file,
    }
    config = load_config({"redis": {"url": redis_server.url}, "status_interval": 0.1, "brokers": {"schwab": table}})
    r = redis.Redis(port=redis_server.port, decode_responses=True)

    async def go():
        runner = Runner(config, token_store=store)
        task = asyncio.create_task(runner.run())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if r.xlen("live_data:stream:transactions:12345678") >= 2 and r.get("live_data:latest:balances:12345678"):
                break
            await asyncio.sleep(0.05)
        status = runner.status()
        runner.stop()
        await asyncio.wait_for(task, 10)
        return status

    status = asyncio.run(go())
    assert json.loads(r.get("live_data:latest:balances:12345678"))["buying_power"] == 24000.0
    assert r.xlen("live_data:stream:transactions:12345678") == 2  # published once although polled repeatedly
    assert r.xlen("live_data:stream:orders:12345678") == 2
    assert "valid for" in json.dumps(status["brokers"]["schwab"])
