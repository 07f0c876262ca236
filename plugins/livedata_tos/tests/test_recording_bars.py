"""A recorded tos session with bars (a gap filled from /pricehistory in the middle) replays to the same bars, the gap
filled from the recorded answer, also a second time into the same Redis prefix and into the live stream that holds
them already: a replay's bars start from the recording, not from what Redis holds."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest
import redis

pytest.importorskip("zstandard", reason="recordings need zstandard: run `python3 dev.py shell true` to install it")
from livedata_core.plugin_kit.tokens import FileTokenStore
from livedata_core.runner import Runner, load_config_file
from livedata_core.testing import ServerThread, running
from livedata_schwab.testing import APP_KEY, APP_SECRET, FakeSchwab, FakeSchwabServer
from livedata_tos.testing import FakeStreamer

MINUTE = 60_000
FAST = {"login_timeout": 2.0, "command_timeout": 2.0, "open_timeout": 2.0, "heartbeat_timeout": 30.0,
        "account_activity": False}  # fmt: skip


def bars(r, key):
    return [json.loads(f[b"data"]) for _, f in r.xrange(key)]


def test_recorded_bars_replay_the_same_twice_into_one_prefix(tmp_path, redis_server, monkeypatch):
    fake = FakeSchwab("rec")
    rest = FakeSchwabServer(fake).start()
    streamer = ServerThread(FakeStreamer()).start()
    fs = streamer.server
    fs.seq_mode = "zero"
    fake.routes["/trader/v1/userPreference"] = fs.user_preference()
    fake.market_now_ms = fs.clock.now_ms
    for name, value in (("APP_KEY", APP_KEY), ("APP_SECRET", APP_SECRET)):
        monkeypatch.setenv(f"LIVEDATA_SCHWAB_{name}", value)
    monkeypatch.setenv("LIVEDATA_TOKEN_STORE", "file")
    monkeypatch.setenv("LIVEDATA_TOKEN_DIR", str(tmp_path / "tokens"))
    FileTokenStore(tmp_path / "tokens").save("schwab", fake.saved_tokens())
    table = fake.table()
    del table["app_key"], table["app_secret"]
    record = tmp_path / "rec"
    config = tmp_path / "livedata.toml"
    config.write_text(
        f'[redis]\nurl = "{redis_server.url}"\n[backoff]\ninitial = 0.02\nmax = 0.2\n[record]\ndir = "{record}"\n'
        + '[brokers.tos]\nbars = ["/ES"]\n' + "".join(f"{k} = {json.dumps(v)}\n" for k, v in FAST.items())
        + "[brokers.tos.schwab]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items()))  # fmt: skip
    r = redis.Redis(port=redis_server.port)

    async def live():
        async with running(Runner(load_config_file(str(config)))):
            deadline = time.monotonic() + 10
            while fs.subscriptions.get("CHART_FUTURES") != {"/ES"}:
                assert time.monotonic() < deadline, "never subscribed"
                await asyncio.sleep(0.02)
            connections = fs.connected_total
            streamer.call(fs.advance, 120)
            streamer.call(fs.outage, 3)
            while fs.connected_total == connections or fs.subscriptions.get("CHART_FUTURES") != {"/ES"}:
                assert time.monotonic() < deadline, "never reconnected"
                await asyncio.sleep(0.02)
            streamer.call(fs.advance, 60)
            last = fs.clock.ms - fs.clock.ms % MINUTE - MINUTE
            while not (b := bars(r, "live_data:stream:bars:/ES")) or b[-1]["start"] != last:
                assert time.monotonic() < deadline, "the last bar never came"
                await asyncio.sleep(0.02)

    try:
        asyncio.run(live())
    finally:
        streamer.stop()
        rest.stop()
    recorded = bars(r, "live_data:stream:bars:/ES")
    starts = [b["start"] for b in recorded]
    assert starts == list(range(starts[0], starts[-1] + 1, MINUTE)) and sum(b["backfilled"] for b in recorded) == 2

    def replay(prefix):
        done = subprocess.run([sys.executable, "-m", "livedata_core.cli", "replay", str(record), "--speed", "max",
                               *(["--prefix", prefix] if prefix else []), "--redis-url", redis_server.url, "-c", str(config)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr

    def fields(bs):
        return [(b["start"], b["close"], b["backfilled"]) for b in bs]

    replay("replay")
    once = bars(r, "replay:live_data:stream:bars:/ES")
    assert fields(once) == fields(recorded)
    replay("replay")  # again into the same prefix: the same bars once more, none dropped as repeats of the first
    assert fields(bars(r, "replay:live_data:stream:bars:/ES")) == fields(recorded) * 2
    replay("")  # into the live stream, which holds them already: published again, not checked against it
    assert fields(bars(r, "live_data:stream:bars:/ES")) == fields(recorded) * 2
