"""Bars whose ``seq`` is no order, as Schwab's are (0 on every CHART item in its samples; a count that starts over on a
new connection): the runner publishes every minute once, through the fake streamer and a real Redis."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis

from livedata_core.plugin_kit.tokens import MemoryTokenStore
from livedata_core.runner import Runner, load_config
from livedata_tos import plugin
from livedata_tos.testing import FakeSchwabClient, FakeStreamer

MINUTE = 60_000


def bars(r, symbol):
    return [json.loads(f[b"data"]) for _, f in r.xrange(f"live_data:stream:bars:{symbol}")]


@pytest.mark.parametrize("seq_mode", ["zero", "connection"])
def test_every_minute_is_published_once_whatever_the_seq(seq_mode, redis_server, monkeypatch):
    r = redis.Redis(port=redis_server.port)

    async def main():
        async with FakeStreamer() as fake:
            fake.seq_mode = seq_mode
            client = FakeSchwabClient(fake)
            monkeypatch.setattr(plugin, "make_client", lambda settings, store, log, status=None: client)
            table = {"bars": ["/ES", "AAPL"], "streamer_url": fake.url, "login_timeout": 2.0, "command_timeout": 2.0,
                     "heartbeat_timeout": 30.0, "connection_limit_retry": 0.2, "account_activity": False}  # fmt: skip
            config = load_config({"redis": {"url": redis_server.url}, "brokers": {"tos": table},
                                  "backoff": {"initial": 0.02, "max": 0.1}})  # fmt: skip
            runner = Runner(config, token_store=MemoryTokenStore())
            task = asyncio.create_task(runner.run())
            try:
                await fake.wait_for(lambda: fake.subscriptions.get("CHART_FUTURES") == {"/ES"}
                                    and fake.subscriptions.get("CHART_EQUITY") == {"AAPL"})  # fmt: skip
                t0 = fake.clock.ms - fake.clock.ms % MINUTE
                await fake.advance(180)  # t0, t0+1, t0+2 end
                await fake.outage(2)  # t0+3, t0+4 end unseen
                await fake.wait_for(lambda: fake.connected_total == 2 and "/ES" in fake.subscriptions.get("CHART_FUTURES", ()))
                await fake.advance(120)  # t0+5, t0+6
                last = t0 + 6 * MINUTE
                await fake.wait_for(lambda: all(bars(r, s) and bars(r, s)[-1]["start"] == last for s in ("/ES", "AAPL")))
                if seq_mode == "zero":
                    assert {seq for *_, seq in fake.bars_sent} == {0}
                else:  # the second connection counted from 0 again
                    seqs = [seq for _, k, _, seq in fake.bars_sent if k == "/ES"]
                    assert seqs[0] == 0 and any(b < a for a, b in zip(seqs, seqs[1:])), seqs
                for symbol in ("/ES", "AAPL"):
                    starts = [b["start"] for b in bars(r, symbol)]
                    assert starts == list(range(t0 - MINUTE, last + 1, MINUTE)), (symbol, starts)
                status = runner.status()["brokers"]["tos"]["bars"]
                assert status["unfilled"] == 0 and status["backfilled"] >= 2
            finally:
                runner.stop()
                await asyncio.wait_for(task, 10)

    asyncio.run(main())
