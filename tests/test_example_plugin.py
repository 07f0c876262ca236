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


def _livedata(args: list[str], cwd, env: dict[str, str], **kwargs):
    """``livedata ARGS`` as a user types it in ``cwd``, with a file token store in ``cwd/tokens`` and no other
    ``LIVEDATA_`` variable of the developer's shell."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEDATA_", "PYTEST_"))}
    base.update(LIVEDATA_TOKEN_STORE="file", LIVEDATA_TOKEN_DIR=str(cwd / "tokens"), **env)
    command = [sys.executable, "-m", "livedata_core", *args]
    if kwargs.pop("background", False):
        return subprocess.Popen(command, cwd=cwd, env=base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=cwd, env=base, capture_output=True, text=True, timeout=60, **kwargs)


def _write_config(where, url: str) -> None:
    """The tutorial's step 7 livedata.toml (no key in it: `livedata auth example` stores that)."""
    (where / "livedata.toml").write_text(
        f'status_interval = 0.2\n[brokers.example]\nurl = "{url}"\n'
        'symbols = ["AAPL", "MSFT"]\npoll = { positions = 5, balances = 10 }\n'
    )


def test_livedata_auth_stores_the_api_key_and_livedata_run_streams_with_it(redis_server, tmp_path):
    """Step 7 of docs/plugins/tutorial.md, as a user does it: livedata.toml, `livedata auth example --from-env`,
    then `livedata run` (without the variable) streams quotes to Redis with the stored key."""
    import signal
    import time

    import redis

    from livedata_core.plugin_kit.tokens import FileTokenStore
    from livedata_core.testing import ServerThread
    from livedata_example.exchange import Exchange

    _require_installed()
    with ServerThread(Exchange(api_key="k-123")) as exchange:
        _write_config(tmp_path, exchange.url)
        auth = _livedata(["auth", "example", "--from-env"], tmp_path, {"LIVEDATA_EXAMPLE_API_KEY": "k-123"})
        assert auth.returncode == 0, auth.stderr
        assert "accepted by the broker" in auth.stdout
        assert "k-123" not in auth.stdout + auth.stderr
        assert FileTokenStore(tmp_path / "tokens").load("example") == {"credentials": {"api_key": "k-123"}}

        proc = _livedata(["run", "-q"], tmp_path, {"LIVEDATA_REDIS_URL": redis_server.url}, background=True)
        try:
            r = redis.Redis(port=redis_server.port)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (
                r.get("live_data:latest:quotes:AAPL") and r.get("live_data:latest:balances:ACC-1")
            ):
                time.sleep(0.05)
            quote = json.loads(r.get("live_data:latest:quotes:AAPL") or b"{}")
            balance = json.loads(r.get("live_data:latest:balances:ACC-1") or b"{}")
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert quote.get("broker") == "example" and quote.get("symbol") == "AAPL", err
    assert balance.get("cash") == 1000.0, err
    assert proc.returncode == 0, err
    assert "k-123" not in err


def test_livedata_auth_refuses_a_wrong_key_and_keeps_nothing(tmp_path):
    from livedata_core.plugin_kit.tokens import FileTokenStore
    from livedata_core.testing import ServerThread
    from livedata_example.exchange import Exchange

    _require_installed()
    with ServerThread(Exchange(api_key="k-123")) as exchange:
        _write_config(tmp_path, exchange.url)
        auth = _livedata(["auth", "example", "--from-env"], tmp_path, {"LIVEDATA_EXAMPLE_API_KEY": "wrong-key-77"})
    assert auth.returncode != 0
    assert "rejected the API key" in auth.stderr and "nothing was saved" in auth.stderr, auth.stderr
    assert "wrong-key-77" not in auth.stdout + auth.stderr
    assert FileTokenStore(tmp_path / "tokens").load("example") is None


def test_without_a_key_livedata_says_how_to_give_one(tmp_path):
    """No key stored or set: `livedata accounts example` names `livedata auth example` and the variable."""
    _require_installed()
    _write_config(tmp_path, "http://127.0.0.1:9")
    fetch = _livedata(["accounts", "example"], tmp_path, {})
    assert fetch.returncode != 0 and "Traceback" not in fetch.stderr, fetch.stderr
    assert "livedata auth example" in fetch.stderr and "LIVEDATA_EXAMPLE_API_KEY" in fetch.stderr, fetch.stderr


def test_after_a_reconnect_no_published_quote_is_less_complete(published, redis_url):
    """The example merges trades and quotes in ctx.quotes, which outlives the connection: the first update after a
    reconnect (a trade) still publishes the bid and ask known before it."""
    import asyncio

    from livedata_core.runner import Runner, load_config
    from livedata_core.testing import ServerThread, running
    from livedata_core.plugin_kit.tokens import MemoryTokenStore, save_credentials
    from livedata_example.exchange import Exchange

    _require_installed()
    with ServerThread(Exchange(api_key="k-1", interval=0.05)) as exchange:
        table = {"url": exchange.url, "symbols": ["AAPL"]}
        config = load_config({"redis": {"url": redis_url}, "brokers": {"example": table},
                              "backoff": {"initial": 0.02, "max": 0.1}}, env={})  # fmt: skip

        async def scenario():
            tokens = MemoryTokenStore()
            save_credentials(tokens, "example", {"api_key": "k-1"})  # as `livedata auth example` stores it
            async with running(Runner(config, token_store=tokens)) as runner:
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
