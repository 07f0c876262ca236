"""Issue 19's done-when, as a user runs it: `livedata run --record DIR` for 30 s against the fake Schwab streamer
(with a fake Schwab for its login) and the fake IBKR gateway side by side; `livedata replay DIR --speed max`
publishes the same quotes (values and order per symbol) and the same order events; the recording holds no
secret; `livedata replay --speed 1` keeps the recorded inter-frame timing within 5 ms at the 99th percentile.

Slow (about 80 s): `python3 dev.py test -m slow`. The default suite runs shorter recordings of each plugin
(plugins/livedata_tos/tests/test_recording.py, plugins/livedata_ibkr/tests/test_recording.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("zstandard", reason="recordings need zstandard: run `python3 dev.py shell true` to install it")

from livedata_core.models import to_dict  # noqa: E402
from livedata_core.plugin_kit.tokens import FileTokenStore  # noqa: E402
from livedata_core.recording.reader import read_file  # noqa: E402
from livedata_core.testing import PublishedCollector, ServerThread  # noqa: E402

pytestmark = pytest.mark.slow

SECONDS = float(os.environ.get("RECORD_SECONDS", 30))
ACCOUNT = "12345678"


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "livedata_core.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def payload(model) -> dict:
    return to_dict(model)  # received_at too: a replay stamps each frame's recorded receive time


def quotes_by_symbol(messages) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for m in messages:
        if m.kind == "quotes":
            out.setdefault(m.data.symbol, []).append(payload(m.data))
    return out


def orders(messages) -> dict[str, list[dict]]:
    """Order events per account, in order (two instances' connections are independent of each other)."""
    out: dict[str, list[dict]] = {}
    for m in messages:
        if m.kind == "orders":
            out.setdefault(m.data.account_id, []).append(payload(m.data))
    return out


def test_thirty_seconds_of_tos_and_ibkr_recorded_and_replayed(redis_server, tmp_path, monkeypatch):
    from livedata_ibkr.testing import SESSION_TOKEN, FakeGateway
    from livedata_schwab.testing import APP_KEY, APP_SECRET, FakeSchwab, FakeSchwabServer
    from livedata_tos.testing import FakeStreamer, activity_item

    fake = FakeSchwab("slow")
    rest = FakeSchwabServer(fake).start()
    streamer = ServerThread(FakeStreamer()).start()
    gateway = ServerThread(FakeGateway(hb_interval=1.0)).start()
    gateway.server.cookie_auth = False
    fake.routes["/trader/v1/userPreference"] = streamer.server.user_preference()
    tokens = fake.saved_tokens()
    FileTokenStore(tmp_path / "tokens").save("schwab", tokens)
    env = {**os.environ, "LIVEDATA_SCHWAB_APP_KEY": APP_KEY, "LIVEDATA_SCHWAB_APP_SECRET": APP_SECRET,
           "LIVEDATA_TOKEN_STORE": "file", "LIVEDATA_TOKEN_DIR": str(tmp_path / "tokens"),
           "LIVEDATA_REDIS_URL": redis_server.url}  # fmt: skip
    table = fake.table()
    del table["app_key"], table["app_secret"]
    ibkr = {**gateway.server.settings(), "symbols": ["AAPL", "IBM@8314"], "tickle_interval": 5.0,
            "poll": {"positions": 0, "balances": 0, "orders": 0, "transactions": 0}}  # fmt: skip
    config = tmp_path / "livedata.toml"
    config.write_text(
        "[backoff]\ninitial = 0.05\nmax = 0.5\n"
        "[brokers.schwab]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
        + "poll = { positions = 0, balances = 0, orders = 0, transactions = 0 }\n"
        + '[brokers.tos]\nsymbols = ["MSFT", "SPY"]\n'
        + "[brokers.ibkr]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in ibkr.items() if k != "poll")
        + 'poll = { positions = 0, balances = 0, orders = 0, transactions = 0 }\n')  # fmt: skip
    record = tmp_path / "rec"
    live = PublishedCollector(redis_server.url).start()
    runner = _cli("run", "-c", str(config), "--record", str(record), "--quiet", env=env)
    try:
        deadline = time.monotonic() + 20
        while not (streamer.server.subscriptions.get("LEVELONE_EQUITIES") == {"MSFT", "SPY"}
                   and gateway.server.subscribed(265598) and gateway.server.subscribed(8314)
                   and any(c.orders for c in gateway.server.clients)):  # fmt: skip
            assert runner.poll() is None, runner.communicate()[1]
            assert time.monotonic() < deadline, "the runner never subscribed"
            time.sleep(0.05)
        n = 0
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            n += 1
            streamer.call(streamer.server.send_data, "LEVELONE_EQUITIES",
                          [{"key": "MSFT", "1": 400 + n / 100, "2": 400.02 + n / 100, "8": n},
                           {"key": "SPY", "3": 500 + (n % 13) / 10}])  # fmt: skip
            gateway.call(gateway.server.push_quote, 265598, {"31": f"{190 + n / 100:.2f}", "84": f"{189 + n / 100:.2f}"})
            if n % 3 == 0:
                gateway.call(gateway.server.push_quote, 8314, {"31": f"{130 + n / 100:.2f}"})
            if n % 100 == 50:
                streamer.call(streamer.server.send_activity, [activity_item(n, ACCOUNT, "OrderAccepted",
                              {"SchwabOrderID": str(7000 + n), "AccountNumber": ACCOUNT})])  # fmt: skip
                gateway.call(gateway.server.push_order, {"acct": "DU1234", "orderId": 9000 + n, "ticker": "AAPL",
                             "side": "BUY", "status": "Submitted", "remainingQuantity": 5.0, "filledQuantity": 0.0,
                             "orderType": "Limit", "price": 10})  # fmt: skip
            time.sleep(0.04)  # a pace Redis keeps up with on a loaded machine: nothing conflated live
        time.sleep(1.0)
        status = subprocess.run([sys.executable, "-m", "livedata_core.cli", "status", "--json"], env=env,
                                capture_output=True, text=True, timeout=30)  # fmt: skip
        state = json.loads(status.stdout)
        assert state["publisher"]["conflated"] == 0  # every quote published live: comparable one by one
        assert "dropped" not in state["brokers"]["tos"]["extra"]["recording"]
    finally:
        runner.send_signal(signal.SIGINT)
        out, err = runner.communicate(timeout=30)
        live.close()
        streamer.stop()
        gateway.stop()
        rest.stop()
    assert runner.returncode == 0, err
    live_quotes, live_orders = quotes_by_symbol(live.messages), orders(live.messages)
    assert len(live_quotes["MSFT"]) > 10 * SECONDS and len(live_quotes["AAPL"]) > 10 * SECONDS and live_orders

    text = "\n".join(json.dumps(r) for p in sorted(record.rglob("*.jsonl.zst")) for r in read_file(p))
    for secret in {tokens["access_token"], tokens["refresh_token"], APP_SECRET, APP_KEY, SESSION_TOKEN, *fake.access_tokens}:
        assert secret not in text
        assert all(secret.encode() not in p.read_bytes() for p in record.rglob("*") if p.is_file())

    replayed = PublishedCollector(redis_server.url, prefix="replay").start()
    try:
        result = subprocess.run([sys.executable, "-m", "livedata_core.cli", "replay", str(record), "--speed", "max",
                                 "--prefix", "replay", "-c", str(config)], env=env, capture_output=True, text=True,
                                timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 10
        while len(replayed.messages) < len(live.messages) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        replayed.close()
    assert quotes_by_symbol(replayed.messages) == live_quotes, result.stderr[-3000:]
    assert orders(replayed.messages) == live_orders

    paced = _cli("replay", str(record), "--speed", "1", "--prefix", "paced", "-c", str(config), env=env)
    time.sleep(SECONDS / 2)
    status = subprocess.run([sys.executable, "-m", "livedata_core.cli", "status", "--prefix", "paced"], env=env,
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert re.search(r"replay +[1-9][0-9]?% \([0-9,]+ of [0-9,]+ frames\)", status.stdout), status.stdout
    out, err = paced.communicate(timeout=SECONDS * 3)
    assert paced.returncode == 0, err
    error_ms = float(re.search(r"pace error p99 ([0-9.]+) ms", err).group(1))
    assert error_ms < 5.0, err
