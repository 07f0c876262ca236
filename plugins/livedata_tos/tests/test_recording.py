"""Record and replay (issue 19) against the fake Schwab streamer, driven as a user does: a livedata.toml with
``[record] dir``, tokens in files, the real Schwab REST client on a fake Schwab, a real redis-server.

The live run publishes quotes and order events; its recording holds no token, key or secret; replaying it
(``replay_recording`` and ``livedata replay --speed max`` into Redis) publishes the same quotes, in the same
order per symbol, and the same order events; ``--speed 1`` keeps the recorded pace."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("zstandard", reason="recordings need zstandard: run `python3 dev.py shell true` to install it")
from livedata_core.models import to_dict
from livedata_core.plugin_kit.tokens import FileTokenStore
from livedata_core.recording.reader import Recording, read_file
from livedata_core.runner.replay import Replay
from livedata_core.runner import Runner, load_config_file
from livedata_core.testing import PublishedCollector, ServerThread, replay_recording, running
from livedata_schwab.testing import APP_KEY, APP_SECRET, FakeSchwab, FakeSchwabServer
from livedata_tos.testing import FakeStreamer, activity_item, number

ACCOUNT = "12345678"
FAST = {"login_timeout": 2.0, "command_timeout": 2.0, "open_timeout": 2.0, "heartbeat_timeout": 30.0}
SYMBOLS = ["AAPL", "MSFT", "/ES"]


def _orders() -> list[dict]:
    oid = "1000000077"
    created = {"SchwabOrderID": oid, "AccountNumber": ACCOUNT, "BaseEvent": {"EventType": "OrderCreated",
               "OrderCreatedEventEquityOrder": {"Order": {"OrderTypeCode": "Limit", "LimitPrice": number(10.5),
               "OrderLegs": [{"Quantity": number(3), "BuySellCode": "Buy", "Security": {"Symbol": "AMD"}}]}}}}  # fmt: skip
    fill = {"SchwabOrderID": oid, "AccountNumber": ACCOUNT, "BaseEvent": {"EventType": "OrderFillCompleted",
            "OrderFillCompletedEventOrderLegQuantityInfo": {"QuantityInfo": {"CumulativeQuantity": number(3),
            "LeavesQuantity": number(0), "AveragePrice": number(10.5)}}}}  # fmt: skip
    types = [("OrderCreated", created), ("OrderAccepted", {"SchwabOrderID": oid, "AccountNumber": ACCOUNT}),
             ("OrderFillCompleted", fill)]
    return [activity_item(i + 1, ACCOUNT, t, d) for i, (t, d) in enumerate(types)]


class Session:
    """A fake Schwab (REST) and its fake streamer, the tokens in files, and a livedata.toml recording into
    ``tmp/rec``."""

    def __init__(self, tmp: Path, redis_url: str, monkeypatch) -> None:
        self.fake = FakeSchwab("rec")
        self.rest = FakeSchwabServer(self.fake).start()
        self.streamer = ServerThread(FakeStreamer()).start()
        self.fake.routes["/trader/v1/userPreference"] = self.streamer.server.user_preference()
        monkeypatch.setenv("LIVEDATA_SCHWAB_APP_KEY", APP_KEY)
        monkeypatch.setenv("LIVEDATA_SCHWAB_APP_SECRET", APP_SECRET)
        monkeypatch.setenv("LIVEDATA_TOKEN_STORE", "file")
        monkeypatch.setenv("LIVEDATA_TOKEN_DIR", str(tmp / "tokens"))
        self.tokens = self.fake.saved_tokens()
        FileTokenStore(tmp / "tokens").save("schwab", self.tokens)
        self.record = tmp / "rec"
        table = self.fake.table()
        del table["app_key"], table["app_secret"]
        self.config = tmp / "livedata.toml"
        self.config.write_text(
            f'[redis]\nurl = "{redis_url}"\n[backoff]\ninitial = 0.02\nmax = 0.2\n[record]\ndir = "{self.record}"\n'
            f"[brokers.schwab]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
            + 'poll = { positions = 0.3, balances = 0, orders = 0, transactions = 0 }\n'
            + f"[brokers.tos]\nsymbols = {json.dumps(SYMBOLS)}\n"
            + "".join(f"{k} = {json.dumps(v)}\n" for k, v in FAST.items()))  # fmt: skip

    def secrets(self) -> list[str]:
        return [self.tokens["access_token"], self.tokens["refresh_token"], APP_SECRET, APP_KEY,
                *self.fake.access_tokens]  # fmt: skip

    async def feed(self, seconds: float, interval: float = 0.01) -> None:
        """Quotes for every symbol every ``interval`` seconds for ``seconds``, and one order's life."""
        server = self.streamer.server
        orders = _orders()
        n = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            n += 1
            content = [{"key": s, "1": 100.0 + n / 100, "2": 100.01 + n / 100, "3": 100.0 + (n % 7) / 10, "8": n * 10}
                       for s in SYMBOLS if not s.startswith("/")]  # fmt: skip
            self.streamer.call(server.send_data, "LEVELONE_EQUITIES", content)
            if n % 3 == 0:
                self.streamer.call(server.send_data, "LEVELONE_FUTURES", [{"key": "/ES", "1": 5000 + n / 4, "2": 5000.25 + n / 4}])
            if n % 30 == 0 and orders:
                self.streamer.call(server.send_activity, [orders.pop(0)])
            await asyncio.sleep(interval)

    def stop(self) -> None:
        self.streamer.stop()
        self.rest.stop()


@pytest.fixture
def session(tmp_path, redis_server, monkeypatch):
    s = Session(tmp_path, redis_server.url, monkeypatch)
    try:
        yield s
    finally:
        s.stop()


def payload(model) -> dict:
    """What a consumer compares: the published payload, whole."""
    return to_dict(model)  # received_at too: a replay stamps each frame's recorded receive time


def by_symbol(models) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for m in models:
        if m.TYPE == "quotes":
            out.setdefault(m.symbol, []).append(payload(m))
    return out


def orders_of(models) -> list[dict]:
    return [payload(m) for m in models if m.TYPE == "orders"]


def record_live(session: Session, published: PublishedCollector, seconds: float) -> list:
    async def scenario():
        async with running(Runner(load_config_file(str(session.config)))) as runner:
            deadline = time.monotonic() + 10
            while session.streamer.server.subscriptions.get("LEVELONE_EQUITIES") != {"AAPL", "MSFT"}:
                assert time.monotonic() < deadline, "never subscribed"
                await asyncio.sleep(0.02)
            await session.feed(seconds)
            await published.wait_for_async("orders", ACCOUNT, count=3)
            await asyncio.sleep(0.3)
            status = runner.status()["brokers"]["tos"]
            assert status["extra"]["recording"].endswith("records"), status["extra"]  # nothing dropped
            assert runner.publisher.stats.conflated == 0  # the live run published every quote: comparable

    asyncio.run(scenario())
    return [m.data for m in published.messages]


def recorded_text(folder: Path) -> str:
    return "\n".join(json.dumps(r) for p in sorted(folder.rglob("*.jsonl.zst")) for r in read_file(p))


def test_a_recorded_session_replays_to_the_same_quotes_and_orders_and_holds_no_secret(session, published, redis_server):
    live = record_live(session, published, seconds=2.0)
    assert len(by_symbol(live)["AAPL"]) > 50 and len(orders_of(live)) == 3

    recording = Recording(session.record)
    # The schwab instance's polls are recorded (REST answers only: polls are not replayed, the instance is skipped).
    assert recording.instances == ["schwab", "tos"] and recording.plugin("tos") == "tos"
    assert {r["kind"] for r in recording.records("schwab")} == {"meta", "rest"}
    kinds = {r["kind"] for r in recording.records("tos")}
    assert {"meta", "connect", "in", "out", "streaming"} <= kinds
    assert any(r["kind"] == "rest" and r["url"].endswith("/userPreference") for r in recording.records("tos"))
    text = recorded_text(session.record)
    assert '"Authorization\\":\\"[redacted]' in text or "[redacted]" in text
    for secret in session.secrets():
        assert secret not in text, f"{secret[:12]}... is in the recording"
        for path in session.record.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes()

    # Through the plugin's parsers into a collector (the testing kit), as fast as it parses.
    replayed = replay_recording(session.record)
    assert by_symbol(replayed.models) == by_symbol(live)
    assert orders_of(replayed.models) == orders_of(live)
    assert replayed.status["tos"]["extra"]["replay"].startswith("100%")

    # `livedata replay --speed max` into Redis under a prefix, while the live data stays where it was.
    again = PublishedCollector(redis_server.url, prefix="replay").start()
    try:
        result = subprocess.run([sys.executable, "-m", "livedata_core.cli", "replay", str(session.record), "--speed",
                                 "max", "--prefix", "replay", "--redis-url", redis_server.url, "-c", str(session.config)],
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "replayed" in result.stderr and "frames" in result.stderr
        again.wait_for("orders", ACCOUNT, count=3)
        deadline = time.monotonic() + 5
        while len(again.of("quotes")) < len([m for m in live if m.TYPE == "quotes"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        from_redis = [m.data for m in again.messages]
    finally:
        again.close()
    assert by_symbol(from_redis) == by_symbol(live)
    assert orders_of(from_redis) == orders_of(live)


def test_replay_at_speed_1_keeps_the_recorded_pace(session, published):
    record_live(session, published, seconds=1.5)
    collected = []

    class Sink:
        queued_quotes = 0

        def publish(self, model):
            collected.append(model)

    async def main():
        replay = Replay(session.record, Sink(), speed=1.0, instances=["tos"])
        started = time.perf_counter()
        await replay.run()
        return replay, time.perf_counter() - started

    frames = [r["t"] for r in Recording(session.record).records("tos") if r["kind"] == "in"]
    errors = []
    # Best of three, at the 90th percentile of 150 gaps: this machine is shared, and a process not scheduled for
    # tens of ms is the machine's error, not the replay's (a pace that is wrong is wrong in every run). The issue's
    # p99 over 30 s is tests/test_recording_slow.py's.
    for _ in range(3):
        collected.clear()
        replay, elapsed = asyncio.run(main())
        assert elapsed >= (frames[-1] - frames[0]) * 0.95
        assert len(replay.pace.delivered) > 100
        assert by_symbol(collected) == by_symbol(m.data for m in published.messages)
        errors.append(replay.pace.timing_error(0.90))
        if errors[-1] < 0.005:
            break
    assert min(errors) < 0.005, errors

    # --from paces from there (what came before is fed at once); --to stops after that time.
    middle = frames[0] + (frames[-1] - frames[0]) / 2

    async def window():
        replay = Replay(session.record, Sink(), speed=1.0, instances=["tos"], start=middle, end=middle + 0.3)
        started = time.perf_counter()
        await replay.run()
        return replay, time.perf_counter() - started

    collected.clear()
    replay, elapsed = asyncio.run(window())
    assert 0.25 < elapsed < (frames[-1] - frames[0]) / 2
    assert replay.runtimes["tos"].replayed_at <= middle + 0.3
    quotes = [m for m in collected if m.TYPE == "quotes"]
    assert quotes and quotes[-1].received_at <= (middle + 0.3) * 1000
    assert quotes[0].received_at < middle * 1000  # the frames before --from were fed (at once)
