"""Market data kinds in the runner against the fake streamer: a chain the streamer partly refuses is kept with the
contracts it took, and a new chain of the underlying or an unchain unsubscribes only what a chain subscribed, never
a contract the user subscribed; books are published with the top depth_levels levels."""

from __future__ import annotations

import asyncio
import json

import redis

from livedata_core.plugin_kit.tokens import MemoryTokenStore
from livedata_core.runner import Runner, load_config
from livedata_tos import plugin
from livedata_tos.testing import FakeSchwabClient, FakeStreamer, book_item

C195, C200, P195, P200 = (f"AAPL  261218{r}00{k}000" for r, k in (("C", 195), ("C", 200), ("P", 195), ("P", 200)))


def test_a_partly_refused_chain_is_kept_and_explicit_contracts_survive_rechain_and_unchain(redis_server, monkeypatch):
    async def main():
        async with FakeStreamer() as fake:
            client = FakeSchwabClient(fake)
            monkeypatch.setattr(plugin, "make_client", lambda settings, store, log, status=None: client)
            table = {"symbols": [C195], "streamer_url": fake.url, "login_timeout": 2.0, "command_timeout": 2.0,
                     "heartbeat_timeout": 30.0, "account_activity": False}  # fmt: skip
            config = load_config({"redis": {"url": redis_server.url}, "brokers": {"tos": table},
                                  "backoff": {"initial": 0.02, "max": 0.1}})  # fmt: skip
            runner = Runner(config, token_store=MemoryTokenStore())
            task = asyncio.create_task(runner.run())
            try:
                await fake.wait_for(lambda: fake.subscriptions.get("LEVELONE_OPTIONS") == {C195})
                rt = runner.runtimes["tos"]
                fake.unknown_symbols = {P200}
                result = await rt.chain("AAPL", "2026-12-18", 2)
                assert result["refused"] == [P200] and set(result["contracts"]) == {C195, C200, P195}
                assert set(result["added"]) == {C200, P195} and result["already"] == [C195]
                assert runner.status()["brokers"]["tos"]["chains"]["AAPL"]["contracts"] == 3
                assert fake.subscriptions["LEVELONE_OPTIONS"] == {C195, C200, P195}

                # The chain again, one strike: P195 (the old chain's) goes; C195 (the user's) stays.
                result = await rt.chain("AAPL", "2026-12-18", 1)
                assert result["contracts"] == [C200] and result["refused"] == [P200]
                assert fake.subscriptions["LEVELONE_OPTIONS"] == {C195, C200}

                # The user subscribes a contract of the chain: the unchain leaves it too.
                await runner.subscribe("tos", [C200])
                removed = await rt.unchain("AAPL")
                assert removed["removed"] == [] and fake.subscriptions["LEVELONE_OPTIONS"] == {C195, C200}
                assert runner.status()["brokers"]["tos"]["chains"] == {}
            finally:
                runner.stop()
                await asyncio.wait_for(task, 10)

    asyncio.run(main())


def test_books_are_published_with_the_top_depth_levels_levels(redis_server, monkeypatch):
    r = redis.Redis(port=redis_server.port)

    async def main():
        async with FakeStreamer() as fake:
            client = FakeSchwabClient(fake)
            monkeypatch.setattr(plugin, "make_client", lambda settings, store, log, status=None: client)
            table = {"depth": ["AAPL"], "depth_levels": 2, "streamer_url": fake.url, "login_timeout": 2.0,
                     "command_timeout": 2.0, "heartbeat_timeout": 30.0, "account_activity": False}  # fmt: skip
            config = load_config({"redis": {"url": redis_server.url}, "brokers": {"tos": table},
                                  "backoff": {"initial": 0.02, "max": 0.1}})  # fmt: skip
            runner = Runner(config, token_store=MemoryTokenStore())
            task = asyncio.create_task(runner.run())
            try:
                await fake.wait_for(lambda: fake.subscriptions.get("NASDAQ_BOOK") == {"AAPL"})
                await fake.send_data("NASDAQ_BOOK", [book_item("AAPL", [(189.48, 100, 1), (189.5, 200, 3), (189.49, 300, 2)],
                                                               [(189.52, 100, 1), (189.53, 400, 4), (189.54, 50, 1)])])  # fmt: skip
                await fake.wait_for(lambda: r.get("live_data:latest:depth:AAPL") is not None)
            finally:
                runner.stop()
                await asyncio.wait_for(task, 10)

    asyncio.run(main())
    book = json.loads(r.get("live_data:latest:depth:AAPL"))
    assert [lv["price"] for lv in book["bids"]] == [189.5, 189.49] and [lv["price"] for lv in book["asks"]] == [189.52, 189.53]
