"""The event loop `livedata run` runs on (event_loop, LIVEDATA_EVENT_LOOP, --event-loop): uvloop when asked for or,
by default, when installed; the standard library's otherwise. Real processes against a private redis-server."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import redis

from livedata_core.errors import ConfigError
from livedata_core.runner import load_config
from livedata_core.runner.event_loop import loop_factory

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None and sys.platform != "win32"
needs_uvloop = pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop is not installed (pip install 'livedata-core[uvloop]')")
# The CLI with uvloop made unimportable, as on a machine without it.
WITHOUT_UVLOOP = "import sys; sys.modules['uvloop'] = None; from livedata_core.cli.commands import main; sys.exit(main())"
CONFIG = "status_interval = 0.2\n[brokers.demo]\nsymbols = ['AAPL']\nquotes_per_second = 50\n"


def start(tmp_path, redis_server, *args: str, without_uvloop: bool = False, env: dict | None = None,
          file_loop: str | None = None) -> subprocess.Popen:
    (tmp_path / "livedata.toml").write_text((f"event_loop = {file_loop!r}\n" if file_loop else "") + CONFIG)
    code = WITHOUT_UVLOOP if without_uvloop else "import sys; from livedata_core.cli.commands import main; sys.exit(main())"
    environment = {**os.environ, "LIVEDATA_REDIS_URL": redis_server.url}
    environment.pop("LIVEDATA_EVENT_LOOP", None)
    environment.update(env or {})
    redis.Redis(port=redis_server.port).flushdb()  # no status or quote of an earlier run
    return subprocess.Popen([sys.executable, "-c", code, "run", *args], cwd=tmp_path, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def running_on(proc: subprocess.Popen, redis_server) -> tuple[str, str]:
    """The loop ``livedata status`` shows once a quote was published, and what the process printed; stops it."""
    client = redis.Redis(port=redis_server.port)
    status = None
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            raw = client.get("live_data:status")
            if raw and client.get("live_data:latest:quotes:AAPL"):
                status = json.loads(raw)
                break
            time.sleep(0.05)
    finally:
        client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert status is not None, err
    assert proc.returncode == 0, err
    return status["event_loop"], err


@pytest.mark.parametrize("choice", ["asyncio", pytest.param("uvloop", marks=needs_uvloop)])
def test_the_runner_runs_on_the_loop_it_is_told_and_says_so(tmp_path, redis_server, choice):
    loop, err = running_on(start(tmp_path, redis_server, "--event-loop", choice), redis_server)
    assert loop == choice
    assert f"event loop {choice}. Ctrl-C to stop." in err


def test_by_default_the_runner_takes_uvloop_when_it_is_installed_and_asyncio_when_not(tmp_path, redis_server):
    loop, _ = running_on(start(tmp_path, redis_server), redis_server)
    assert loop == ("uvloop" if HAVE_UVLOOP else "asyncio")
    loop, _ = running_on(start(tmp_path, redis_server, without_uvloop=True), redis_server)
    assert loop == "asyncio"


@needs_uvloop
def test_the_file_chooses_the_environment_wins_over_it_and_the_flag_over_both(tmp_path, redis_server):
    assert running_on(start(tmp_path, redis_server, file_loop="asyncio"), redis_server)[0] == "asyncio"
    proc = start(tmp_path, redis_server, file_loop="asyncio", env={"LIVEDATA_EVENT_LOOP": "uvloop"})
    assert running_on(proc, redis_server)[0] == "uvloop"
    proc = start(tmp_path, redis_server, "--event-loop", "uvloop", env={"LIVEDATA_EVENT_LOOP": "asyncio"})
    assert running_on(proc, redis_server)[0] == "uvloop"
    # A bad variable does not matter where the flag decides.
    proc = start(tmp_path, redis_server, "--event-loop", "asyncio", env={"LIVEDATA_EVENT_LOOP": "bogus"})
    assert running_on(proc, redis_server)[0] == "asyncio"


def test_asking_for_uvloop_where_it_cannot_be_imported_is_a_clear_error_before_anything_starts(tmp_path, redis_server):
    proc = start(tmp_path, redis_server, "--event-loop", "uvloop", without_uvloop=True)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, err
    assert "the event loop is \"uvloop\" but uvloop cannot be imported" in err
    assert "pip install 'livedata-core[uvloop]'" in err
    assert redis.Redis(port=redis_server.port).get("live_data:status") is None  # nothing started


def test_replay_takes_the_same_choice_and_refuses_a_uvloop_it_cannot_import(tmp_path, redis_server):
    environment = {**os.environ, "LIVEDATA_REDIS_URL": redis_server.url, "LIVEDATA_EVENT_LOOP": "uvloop"}
    out = subprocess.run([sys.executable, "-c", WITHOUT_UVLOOP, "replay", str(tmp_path)], cwd=tmp_path, env=environment,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "the event loop is \"uvloop\" but uvloop cannot be imported" in out.stderr
    assert "--event-loop" in subprocess.run([sys.executable, "-m", "livedata_core.cli", "replay", "--help"],
                                            capture_output=True, text=True, timeout=60).stdout  # fmt: skip


def test_a_bad_event_loop_setting_is_refused_naming_where_it_came_from():
    assert load_config({}, env={}).event_loop == "auto"
    assert load_config({"event_loop": "asyncio"}, env={}).event_loop == "asyncio"
    assert load_config({"event_loop": "asyncio"}, env={"LIVEDATA_EVENT_LOOP": "uvloop"}).event_loop == "uvloop"
    with pytest.raises(ConfigError, match=r"^event_loop must be one of auto, asyncio, uvloop, was 'trio'$"):
        load_config({"event_loop": "trio"}, env={})
    with pytest.raises(ConfigError, match=r"^event_loop must be one of auto, asyncio, uvloop, was True$"):
        load_config({"event_loop": True}, env={})
    with pytest.raises(ConfigError, match=r"^LIVEDATA_EVENT_LOOP must be one of auto, asyncio, uvloop, was 'UVLOOP'$"):
        load_config({}, env={"LIVEDATA_EVENT_LOOP": "UVLOOP"})
    assert loop_factory("asyncio") == (None, "asyncio")
    assert loop_factory("auto")[1] == ("uvloop" if HAVE_UVLOOP else "asyncio")


def test_a_uvloop_older_than_the_floor_is_not_taken(monkeypatch, caplog):
    import types

    old = types.ModuleType("uvloop")
    old.__version__ = "0.17.0"
    old.new_event_loop = lambda: None
    monkeypatch.setitem(sys.modules, "uvloop", old)
    with caplog.at_level("WARNING", logger="livedata.runner.event_loop"):
        assert loop_factory("auto") == (None, "asyncio")
    assert "uvloop 0.17.0 is older than 0.19" in caplog.text
    with pytest.raises(ConfigError, match=r"uvloop 0.17.0 is older than 0.19.*pip install 'livedata-core\[uvloop\]'"):
        loop_factory("uvloop")
    old.__version__ = "0.21.0b1"
    assert loop_factory("uvloop") == (old.new_event_loop, "uvloop")
