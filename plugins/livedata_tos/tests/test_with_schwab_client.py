"""The tos plugin with the real Schwab client: Schwab's HTTP answered by respx, the streamer by the fake."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import respx

from livedata_core.runner import Runner, load_config
from livedata_core.plugin_kit.tokens import MemoryTokenStore
from livedata_schwab.tokens import TokenRecord
from livedata_tos.testing import FakeStreamer

API = "https://api.schwabapi.com/trader/v1"
TOKEN_URL = "https://api.schwabapi.com/v1/oauth/token"
OLD, NEW, REFRESH = "old-ACCESS-secret", "new-ACCESS-secret", "REFRESH-secret"


def test_login_denied_refreshes_through_schwab_and_logs_in_with_the_new_token(redis_server, caplog):
    caplog.set_level(logging.DEBUG)
    store = MemoryTokenStore()
    now = time.time()
    store.save("schwab", TokenRecord(access_token=OLD, refresh_token=REFRESH, access_expires_at=int((now + 3600) * 1000),
                                     refresh_issued_at=int(now * 1000)).to_dict())  # fmt: skip

    async def main():
        async with FakeStreamer(valid_tokens=[NEW]) as fake:
            with respx.mock(assert_all_called=True) as router:
                prefs = router.get(f"{API}/userPreference").mock(return_value=httpx.Response(200, json=fake.user_preference()))
                grant = router.post(TOKEN_URL).mock(return_value=httpx.Response(
                    200, json={"access_token": NEW, "refresh_token": REFRESH, "expires_in": 1800, "token_type": "Bearer"}))  # fmt: skip
                config = load_config({
                    "redis": {"url": redis_server.url},
                    "brokers": {"tos": {"symbols": ["AAPL"], "login_timeout": 2.0,
                                        "schwab": {"app_key": "app-key", "app_secret": "app-SECRET"}}},
                    "backoff": {"initial": 0.02, "max": 0.1}})  # fmt: skip
                runner = Runner(config, token_store=store)
                task = asyncio.create_task(runner.run())
                await fake.wait_for(lambda: fake.subscriptions.get("LEVELONE_EQUITIES") == {"AAPL"}, timeout=5)
                assert fake.login_tokens == [OLD, NEW]
                assert grant.call_count == 1
                assert prefs.call_count == 2  # streamerInfo read again when re-authenticating
                assert store.load("schwab")["access_token"] == NEW
                runner.stop()
                await asyncio.wait_for(task, 10)
        assert fake.logouts == 1

    asyncio.run(main())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (OLD, NEW, REFRESH, "app-SECRET", "SECRET"):
        assert secret not in logged
