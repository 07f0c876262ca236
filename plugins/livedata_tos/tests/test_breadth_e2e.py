"""Issue 15's "done when", as a user runs it: `livedata run` in its own process with a livedata.toml, the fake
Schwab streamer and the fake Schwab REST server over real sockets, `livedata subscribe` and `livedata status` in
their own processes, and Redis read as a consumer reads it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from livedata_core.plugin_kit.tokens import FileTokenStore
from livedata_core.testing import ServerThread
from livedata_schwab.testing import APP_KEY, APP_SECRET, FakeSchwab, FakeSchwabServer, fake_candle
from livedata_tos.testing import FakeStreamer, book_item

OPTION = "AAPL  261218C00200000"
FOP = "./OZCZ25C565"
FAST = {"login_timeout": 2.0, "command_timeout": 2.0, "open_timeout": 2.0, "heartbeat_timeout": 30.0,
        "connection_limit_retry": 0.2}  # fmt: skip



def toml(tables: dict[str, dict]) -> str:
    lines = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
        lines.append("")
    return "\n".join(lines)


def wait_until(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def schwab():
    """The fake Schwab (REST: tokens, /userPreference, /pricehistory, /chains) and its streamer, sharing the
    streamer's market clock."""
    fake = FakeSchwab()
    rest = FakeSchwabServer(fake).start()
    streamer = ServerThread(FakeStreamer()).start()
    fake.routes["/trader/v1/userPreference"] = streamer.server.user_preference()
    fake.market_now_ms = streamer.server.clock.now_ms
    try:
        yield fake, streamer
    finally:
        streamer.stop()
        rest.stop()


def test_options_forex_chain_bars_without_gaps_and_depth_through_livedata_run(schwab, redis_server, tmp_path):
    fake, streamer = schwab
    fs = streamer.server
    token_dir = tmp_path / "tokens"
    FileTokenStore(token_dir).save("schwab", fake.saved_tokens())
    env = {**os.environ, "LIVEDATA_REDIS_URL": redis_server.url, "LIVEDATA_TOKEN_STORE": "file",
           "LIVEDATA_TOKEN_DIR": str(token_dir), "LIVEDATA_SCHWAB_APP_KEY": APP_KEY,
           "LIVEDATA_SCHWAB_APP_SECRET": APP_SECRET}  # fmt: skip
    schwab_table = fake.table()
    del schwab_table["app_key"], schwab_table["app_secret"]
    config = tmp_path / "livedata.toml"
    config.write_text(toml({
        "redis": {"url": redis_server.url},
        "backoff": {"initial": 0.05, "max": 0.2},
        "brokers.tos": {"symbols": [OPTION, FOP, "EUR/USD"], "bars": ["/ES", "AAPL"], "depth": ["AAPL", "MSFT"],
                        "account_activity": False, **FAST},
        "brokers.tos.schwab": schwab_table,
    }))  # fmt: skip
    r = redis.Redis(port=redis_server.port, decode_responses=True)

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "livedata_core.cli", *args], env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    def latest(kind: str, symbol: str) -> dict | None:
        raw = r.get(f"live_data:latest:{kind}:{symbol}")
        return json.loads(raw) if raw else None

    def subscribed(service: str, symbols: set[str]) -> bool:
        return symbols <= set(fs.subscriptions.get(service, ()))

    run = subprocess.Popen([sys.executable, "-m", "livedata_core.cli", "run", "-c", str(config)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        wait_until(lambda: subscribed("LEVELONE_OPTIONS", {OPTION}) and subscribed("LEVELONE_FOREX", {"EUR/USD"})
                   and subscribed("LEVELONE_FUTURES_OPTIONS", {FOP}) and subscribed("CHART_FUTURES", {"/ES"})
                   and subscribed("CHART_EQUITY", {"AAPL"}) and subscribed("NASDAQ_BOOK", {"AAPL", "MSFT"}),
                   what="every service subscribed")  # fmt: skip
        t0 = fs.clock.ms  # the fake market's current minute; the bar of the minute before came with the ADD

        # -- option (with Greeks), futures option and forex quotes on their channels -------------------------
        streamer.call(fs.send_data, "LEVELONE_OPTIONS", [{"key": OPTION, "2": 12.5, "3": 12.75, "4": 12.6, "9": 1520,
                      "10": 28.4, "28": 0.55, "29": 0.012, "30": -0.031, "31": 0.41, "32": 0.2, "35": 205.1}])  # fmt: skip
        streamer.call(fs.send_data, "LEVELONE_FUTURES_OPTIONS", [{"key": FOP, "1": 10.25, "2": 10.5, "18": 4410,
                      "25": 565, "28": "C", "24": "/ZCZ25"}])  # fmt: skip
        streamer.call(fs.send_data, "LEVELONE_FOREX", [{"key": "EUR/USD", "1": 1.0841, "2": 1.0843}])
        wait_until(lambda: latest("quotes", OPTION) and latest("quotes", FOP) and latest("quotes", "EUR/USD"),
                   what="option, futures option and forex quotes")  # fmt: skip
        option = latest("quotes", OPTION)
        assert (option["bid"], option["delta"], option["gamma"], option["implied_volatility"]) == (12.5, 0.55, 0.012, 0.284)
        assert (option["strike"], option["expiration"], option["put_call"], option["underlying"]) == (
            200.0, "2026-12-18", "call", "AAPL")
        fop = latest("quotes", FOP)
        assert (fop["bid"], fop["open_interest"], fop["strike"], fop["put_call"]) == (10.25, 4410.0, 565.0, "call")
        fx = latest("quotes", "EUR/USD")
        assert (fx["bid"], fx["ask"]) == (1.0841, 1.0843) and "strike" not in fx

        # -- a chain subscribed by one command ------------------------------------------------------------
        out = cli("subscribe", "tos", "--chain", "AAPL", "--expiration", "2026-12-18", "--strikes", "2")
        assert "chain AAPL: 4 contracts" in out
        contracts = {"AAPL  261218C00195000", "AAPL  261218C00200000", "AAPL  261218P00195000", "AAPL  261218P00200000"}
        wait_until(lambda: subscribed("LEVELONE_OPTIONS", contracts), what="the chain's contracts")
        status = cli("status")
        assert "chain            AAPL: 4 contracts, expiring 2026-12-18, 2 strikes" in status
        # An underlying Schwab has no chain for: a clear error, nothing subscribed.
        refused = subprocess.run([sys.executable, "-m", "livedata_core.cli", "subscribe", "tos", "--chain", "NOPE"],
                                 env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert refused.returncode != 0 and "no option chain for 'NOPE'" in refused.stderr, refused

        # -- depth for two symbols ---------------------------------------------------------------------------
        streamer.call(fs.send_data, "NASDAQ_BOOK", [
            book_item("AAPL", [(205.0, 300, 3), (204.99, 100, 1)], [(205.02, 200, 2)]),
            book_item("MSFT", [(410.0, 100, 1)], [(410.05, 400, 4), (410.1, 100, 1)])])  # fmt: skip
        wait_until(lambda: latest("depth", "AAPL") and latest("depth", "MSFT"), what="two books")
        aapl = latest("depth", "AAPL")
        assert aapl["book"] == "NASDAQ" and aapl["bids"][0] == {"price": 205.0, "size": 300.0, "count": 3}
        assert [lv["price"] for lv in latest("depth", "MSFT")["asks"]] == [410.05, 410.1]

        # -- bars for /ES and AAPL, the connection down for 3 minutes in the middle of a minute --------------
        streamer.call(fs.advance, 120)  # bars of t0 and t0+1min
        streamer.call(fs.advance, 30)  # half-way through t0+2min
        connections = fs.connected_total
        streamer.call(fs.outage, 3)  # down while t0+2, t0+3, t0+4 end: their bars are never streamed
        wait_until(lambda: fs.connected_total > connections and subscribed("CHART_FUTURES", {"/ES"})
                   and subscribed("CHART_EQUITY", {"AAPL"}), what="the reconnect")  # fmt: skip
        streamer.call(fs.advance, 60)  # t0+5 ends: a live bar again
        last = t0 + 5 * 60_000
        for symbol in ("/ES", "AAPL"):
            key = f"live_data:stream:bars:{symbol}"
            wait_until(lambda: any(json.loads(f["data"])["start"] == last for _, f in r.xrange(key)),
                       what=f"the {symbol} bar after the outage")

        # The streamer repeats a bar (same seq): dropped, counted.
        streamer.call(fs.send_bars, last - 60_000)
        wait_until(lambda: json.loads(cli("status", "--json"))["brokers"]["tos"]["bars"]["duplicates"] >= 2,
                   what="the repeats counted")

        for symbol in ("/ES", "AAPL"):
            entries = r.xrange(f"live_data:stream:bars:{symbol}", "-", "+")
            bars = [json.loads(fields["data"]) for _, fields in entries]
            starts = [b["start"] for b in bars]
            # One bar per minute from the one the subscription brought to the last: none missing, none twice.
            assert starts == list(range(t0 - 60_000, last + 1, 60_000)), (symbol, starts)
            backfilled = {b["start"] for b in bars if b["backfilled"]}
            assert backfilled == {t0 + 2 * 60_000, t0 + 3 * 60_000}, symbol  # t0+4 came with the new ADD
            for bar in bars:
                candle = fake_candle(symbol, bar["start"])
                assert (bar["open"], bar["high"], bar["low"], bar["close"]) == (
                    candle["open"], candle["high"], candle["low"], candle["close"])
        history = fake.api_requests("/marketdata/v1/pricehistory")
        assert {q["query"]["symbol"] for q in history} == {"/ES", "AAPL"}
        bar_status = json.loads(cli("status", "--json"))["brokers"]["tos"]["bars"]
        assert bar_status["unfilled"] == 0 and bar_status["backfilled"] == 4, bar_status
    finally:
        run.send_signal(signal.SIGTERM)
        try:
            output, _ = run.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            run.kill()
            output, _ = run.communicate()
        Path(tmp_path / "run.log").write_text(output or "")
    assert run.returncode == 0, output[-3000:]
