"""`livedata subscribe --bars/--depth/--chain`, `status` and `tail` of the new kinds (issue 15), through a real
`livedata run` of the demo broker and a real redis-server."""

import json
import os
import re
import signal
import subprocess
import time

import pytest
import redis

from test_cli import LIVEDATA, run

MINUTE = 60_000


@pytest.fixture
def kinds_runner(redis_server, tmp_path):
    (tmp_path / "livedata.toml").write_text(
        "status_interval = 0.2\n[backoff]\ninitial = 0.3\nmax = 0.3\n"
        "[brokers.demo]\nsymbols = ['AAPL']\nbars = ['/ES']\nquotes_per_second = 20\nbar_seconds = 0.2\n"
        "poll = { orders = 0, positions = 0, balances = 0, transactions = 0 }\n"
    )
    env = {**os.environ, "LIVEDATA_REDIS_URL": redis_server.url}
    proc = subprocess.Popen(LIVEDATA + ["run"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    r = redis.Redis(port=redis_server.port)
    deadline = time.monotonic() + 20
    while not r.get("live_data:status") and time.monotonic() < deadline:
        time.sleep(0.05)
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)


def test_subscribe_status_and_tail_of_bars_books_and_a_chain(kinds_runner, redis_server):
    env = {"LIVEDATA_REDIS_URL": redis_server.url}
    out = run("subscribe", "demo", "msft", "--bars", "aapl", "--depth", "aapl", "qqq", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["demo: subscribed MSFT", "demo: subscribed bars AAPL",
                                       "demo: subscribed depth AAPL, QQQ"]  # fmt: skip
    out = run("subscribe", "demo", "--chain", "AAPL", "--expiration", "2026-12-18", "--strikes", "2", env=env)
    assert out.returncode == 0, out.stderr
    assert re.match(r"demo: chain AAPL: 4 contracts, 4 newly subscribed \(AAPL  261218C\d{8}, ", out.stdout)

    out = run("tail", "bars:/ES", "-n", "2", env=env, timeout=30)
    assert out.returncode == 0 and all(re.search(r"bars:/ES\s+demo\s+start=\d\d:\d\d open=", line)
                                       for line in out.stdout.splitlines()), out.stdout  # fmt: skip
    out = run("tail", "depth", "-n", "2", env=env, timeout=30)
    assert all(re.search(r"depth:(AAPL|QQQ)\s+demo\s+book=DEMO bids=[\d.]+x[\d.]+\(10\) asks=", line)
               for line in out.stdout.splitlines()), out.stdout  # fmt: skip
    out = run("tail", "quotes:AAPL  2612*", "-n", "1", env=env, timeout=30)
    assert re.search(r"quotes:AAPL  261218[CP]\d{8}\s+demo\s+bid=.* delta=-?0\.\d+ implied_volatility=0.3", out.stdout)

    out = run("status", env=env)
    assert out.returncode == 0
    assert re.search(r"symbols\s+AAPL, AAPL  261218C", out.stdout)
    assert re.search(r"bars\s+/ES, AAPL\n", out.stdout)
    assert re.search(r"depth\s+AAPL, QQQ \(top 10 levels\)", out.stdout)
    assert re.search(r"chain\s+AAPL: 4 contracts, expiring 2026-12-18, 2 strikes", out.stdout)
    assert re.search(r"bar figures\s+published \d+ \(backfilled \d+\), repeats dropped \d+, gaps filled \d+", out.stdout)

    out = run("subscribe", "demo", "--chain", "/ES", env=env)
    assert out.returncode == 1 and "no options on '/ES'" in out.stderr
    out = run("subscribe", "demo", env=env)
    assert out.returncode == 2 and "nothing to subscribe" in out.stderr
    out = run("subscribe", "demo", "AAPL", "--strikes", "3", env=env)
    assert out.returncode == 2 and "--expiration and --strikes go with --chain" in out.stderr
    out = run("unsubscribe", "demo", "--depth", "QQQ", "--chain", "AAPL", env=env)
    assert out.returncode == 0 and out.stdout.splitlines() == [
        "demo: unsubscribed depth QQQ", "demo: chain AAPL: unsubscribed 4 contracts"]

    r = redis.Redis(port=redis_server.port)
    starts = [json.loads(f[b"data"])["start"] for _, f in r.xrange("live_data:stream:bars:/ES")]
    assert starts == list(range(starts[0], starts[0] + MINUTE * len(starts), MINUTE))

    kinds_runner.send_signal(signal.SIGTERM)
    _, err = kinds_runner.communicate(timeout=15)
    assert kinds_runner.returncode == 0, err
