"""What the CLI prints reads as written for a person: plurals, plain lists, help descriptions, tables that fit the
terminal, a tail that says what it waits for and keeps its columns."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis

from livedata_core.cli import main

LIVEDATA = [sys.executable, "-m", "livedata_core.cli"]


def run(*args, env=None, timeout=60, cwd=None):
    return subprocess.run(LIVEDATA + list(args), env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


@pytest.fixture
def one_symbol_runner(redis_server, tmp_path):
    """`livedata run --symbols AAPL` on the demo broker, with its stderr lines collected as they come."""
    (tmp_path / "livedata.toml").write_text("status_interval = 0.2\n[brokers.demo]\npoll = { positions = 0.2 }\n")
    env = {**os.environ, "LIVEDATA_REDIS_URL": redis_server.url}
    proc = subprocess.Popen(LIVEDATA + ["run", "--symbols", "AAPL"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    r = redis.Redis(port=redis_server.port)
    deadline = time.monotonic() + 20
    while not (r.get("live_data:status") and any("running" in l for l in lines)) and time.monotonic() < deadline:
        time.sleep(0.05)
    r.close()
    yield proc, lines
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)


def test_one_symbol_is_not_one_symbols_and_status_lists_read_plainly(one_symbol_runner, redis_server):
    _, lines = one_symbol_runner
    running = next(l for l in lines if "running" in l)
    assert "demo (1 symbol)" in running, running
    out = run("status", env={"LIVEDATA_REDIS_URL": redis_server.url})
    assert out.returncode == 0, out.stderr
    assert re.search(r"^  accounts +DEMO-1$", out.stdout, re.M), out.stdout
    assert "[" not in out.stdout.split("[demo]", 1)[1], out.stdout  # no Python list or dict anywhere


def test_status_prints_lists_and_mappings_as_text():
    from livedata_core.cli.commands import _plain

    assert _plain(["DEMO-1", "DEMO-2"]) == "DEMO-1, DEMO-2"
    assert _plain({"bad_price": 2, "no_symbol": 1}) == "bad_price 2, no_symbol 1"
    assert _plain([]) == "-" and _plain(None) == "-" and _plain("ok at 12:00") == "ok at 12:00"


@pytest.mark.parametrize("argv, description", [
    (["auth", "--help"], "Log in to BROKER"),
    (["plugin", "new", "--help"], "Write a new broker plugin"),
])
def test_every_command_help_has_a_description(argv, description):
    out = run(*argv)
    assert out.returncode == 0
    usage, _, rest = out.stdout.partition("\n\n")
    assert rest.startswith(description), out.stdout


def test_the_plugins_table_fits_the_terminal():
    wide = run("plugins", env={"COLUMNS": "400"})
    assert "fetch_transactions" in wide.stdout
    for columns in (80, 100):
        out = run("plugins", env={"COLUMNS": str(columns)})
        assert out.returncode == 0
        lines = out.stdout.rstrip("\n").splitlines()
        assert max(len(l) for l in lines) <= columns, "\n".join(l for l in lines if len(l) > columns)
        # Nothing is lost: every capability and hook of every broker is still there.
        assert sorted(re.findall(r"\w+", wide.stdout)) == sorted(re.findall(r"\w+", out.stdout))


def _publisher(redis_server, channels, stop):
    def go():
        client = redis.Redis(port=redis_server.port)
        while not stop.is_set():
            for channel in channels:
                symbol = channel.rsplit(":", 1)[1]
                client.publish(channel, json.dumps({"broker": "demo", "symbol": symbol, "bid": 1.5, "ask": 1.6}))
            time.sleep(0.02)
        client.close()

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def test_tail_says_what_it_listens_to_and_keeps_its_columns(redis_server, capsys):
    option = "AAPL  241220C00150000"  # an OCC option symbol: 21 characters
    stop = threading.Event()
    feeder = _publisher(redis_server, ["live_data:quotes:AAPL", f"live_data:quotes:{option}"], stop)
    try:
        assert main(["tail", "quotes", "-n", "6", "--redis-url", redis_server.url]) == 0
    finally:
        stop.set()
        feeder.join(5)
    out, err = capsys.readouterr()
    assert f"listening to live_data:quotes:* at {redis_server.url}" in err and "Ctrl-C" in err
    lines = out.splitlines()
    assert any(option in l for l in lines) and any("quotes:AAPL " in l and option not in l for l in lines)
    assert len({l.index(" demo ") for l in lines}) == 1, out  # one column for the broker, whatever the symbol
    assert len({l.index("bid=") for l in lines}) == 1, out


def test_tail_widens_its_columns_for_a_longer_identifier_and_keeps_them(redis_server, capsys):
    long = "X" * 60
    stop = threading.Event()
    feeder = _publisher(redis_server, ["live_data:quotes:AAPL", f"live_data:quotes:{long}"], stop)
    try:
        assert main(["tail", "quotes", "-n", "8", "--redis-url", redis_server.url]) == 0
    finally:
        stop.set()
        feeder.join(5)
    lines = capsys.readouterr().out.splitlines()
    after = lines[next(i for i, l in enumerate(lines) if long in l):]
    assert len(after) >= 2 and len({l.index("bid=") for l in after}) == 1, "\n".join(lines)


def test_tail_names_the_instance_so_two_logins_of_one_plugin_are_told_apart():
    from livedata_core.cli.commands import _TailLines

    lines = _TailLines()
    ira = lines.format("quotes", "SPY", {"broker": "demo", "instance": "demo2", "bid": 1.0})
    plain = lines.format("quotes", "SPY", {"broker": "demo", "bid": 1.0})  # an older publisher: no instance
    assert " demo2 " in ira and " demo " in plain
