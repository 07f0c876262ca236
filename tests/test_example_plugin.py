"""The example plugin is discovered the way a third party's would be: installed, through its entry point.

It must be installed in the environment (``pip install -e examples/livedata_example``).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys

import pytest

from livedata_core.plugin_kit.plugins import get_broker

CAPABILITIES = ["authenticate", "fetch_accounts", "fetch_balances", "fetch_positions", "stream"]


def _require_installed() -> md.Distribution:
    try:
        return md.distribution("livedata-example")
    except md.PackageNotFoundError:
        pytest.fail("livedata-example is not installed: run `.venv/bin/pip install -e examples/livedata_example`")


def test_entry_point_is_declared_in_group_livedata():
    dist = _require_installed()
    points = [ep for ep in dist.entry_points if ep.group == "livedata"]
    assert [(ep.name, ep.value) for ep in points] == [("example", "livedata_example")]


def test_livedata_plugins_json_lists_it_with_version_and_capabilities():
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEDATA_")}
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from livedata_core.cli import main; sys.exit(main(['plugins', '--json']))"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    [record] = [p for p in listing["plugins"] if p["broker"] == "example"]
    assert record["distribution"] == "livedata-example"
    assert record["version"] == _require_installed().version == "0.1.0"
    assert record["capabilities"] == CAPABILITIES
    assert "normalize_symbol" in record["hooks"] and "shutdown" in record["hooks"]
    assert not [e for e in listing["errors"] if e["distribution"] == "livedata-example"]


def test_loaded_in_process_through_the_entry_point():
    _require_installed()
    broker = get_broker("example")
    assert broker.distribution == "livedata-example"
    assert sorted(broker.info.capabilities) == CAPABILITIES
    assert broker.normalize_symbol(" brk.b ") == "BRK.B"


def test_livedata_run_drives_it_with_the_tutorials_configuration(redis_server, tmp_path):
    """Step 7 of docs/plugins/tutorial.md, as a user does it: livedata.toml, `livedata run`, quotes on Redis."""
    import signal
    import time

    import redis

    from livedata_core.testing import ServerThread
    from livedata_example.exchange import Exchange

    _require_installed()
    with ServerThread(Exchange(api_key="k-123")) as exchange:
        (tmp_path / "livedata.toml").write_text(
            f'status_interval = 0.2\n[brokers.example]\nurl = "{exchange.url}"\napi_key = "k-123"\n'
            'symbols = ["AAPL", "MSFT"]\npoll = { positions = 5, balances = 10 }\n'
        )
        env = {**os.environ, "LIVEDATA_REDIS_URL": redis_server.url}
        proc = subprocess.Popen([sys.executable, "-m", "livedata_core", "run", "-q"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            r = redis.Redis(port=redis_server.port)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (
                r.get("live_data:latest:quotes:AAPL") and r.get("live_data:latest:balances:ACC-1")
            ):
                time.sleep(0.05)
            quote = json.loads(r.get("live_data:latest:quotes:AAPL") or b"{}")
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert quote.get("broker") == "example" and quote.get("symbol") == "AAPL", err
    assert proc.returncode == 0, err
    assert "k-123" not in err


def test_after_a_reconnect_no_published_quote_is_less_complete(published, redis_url):
    """The example merges trades and quotes in ctx.quotes, which outlives the connection: the first update after a
    reconnect (a trade) still publishes the bid and ask known before it."""
    import asyncio

    from livedata_core.runner import Runner, load_config
    from livedata_core.testing import ServerThread, running
    from livedata_core.plugin_kit.tokens import MemoryTokenStore
    from livedata_example.exchange import Exchange

    _require_installed()
    with ServerThread(Exchange(api_key="k-1", interval=0.05)) as exchange:
        table = {"url": exchange.url, "api_key": "k-1", "symbols": ["AAPL"]}
        config = load_config({"redis": {"url": redis_url}, "brokers": {"example": table},
                              "backoff": {"initial": 0.02, "max": 0.1}}, env={})  # fmt: skip

        async def scenario():
            async with running(Runner(config, token_store=MemoryTokenStore())) as runner:
                await published.wait_for_async("quotes", "AAPL", where=lambda q: None not in (q.bid, q.last))
                before = len(published.messages)
                exchange.drop()
                status = runner.status()["brokers"]["example"]
                while runner.status()["brokers"]["example"]["reconnects"] == status["reconnects"]:
                    await asyncio.sleep(0.02)
                await published.wait_for_async("quotes", "AAPL", after=before, count=4)
            return [m.data for m in published.messages[before:] if m.kind == "quotes"]

        after = asyncio.run(scenario())
    assert after and all(None not in (q.bid, q.ask, q.last, q.volume) for q in after)
