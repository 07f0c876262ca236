"""A [brokers.schwab] table without an app key and secret (nor the environment variables) is refused before
anything starts, instead of the runner retrying a ConfigError every few seconds."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from livedata_core.errors import ConfigError
from livedata_core.runner import Runner, load_config
from livedata_schwab.settings import SchwabSettings

URL = "redis://127.0.0.1:1/0"  # Runner() connects to nothing


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    monkeypatch.delenv("LIVEDATA_SCHWAB_APP_KEY", raising=False)
    monkeypatch.delenv("LIVEDATA_SCHWAB_APP_SECRET", raising=False)
    monkeypatch.setenv("LIVEDATA_TOKEN_STORE", "memory")


def runner(table: dict) -> Runner:
    return Runner(load_config({"redis": {"url": URL}, "brokers": {"schwab": table}}, env={}))


def test_missing_credentials_are_refused_when_the_table_is_loaded(no_env):
    with pytest.raises(ConfigError) as info:
        runner({})
    text = str(info.value)
    for way in ("LIVEDATA_SCHWAB_APP_KEY", "LIVEDATA_SCHWAB_APP_SECRET", "app_key", "app_secret", "[brokers.schwab]"):
        assert way in text
    with pytest.raises(ConfigError, match="app secret is missing: set LIVEDATA_SCHWAB_APP_SECRET") as info:
        runner({"app_key": "my-key"})
    assert "LIVEDATA_SCHWAB_APP_KEY" not in str(info.value)


def test_credentials_from_the_table_or_the_environment_are_enough(no_env, monkeypatch):
    assert runner({"app_key": "k", "app_secret": "s"}).runtimes["schwab"].ctx.settings.app_key == "k"
    monkeypatch.setenv("LIVEDATA_SCHWAB_APP_KEY", "k")
    monkeypatch.setenv("LIVEDATA_SCHWAB_APP_SECRET", "s")
    assert runner({}).runtimes["schwab"].ctx.settings.credentials() == ("k", "s")


def test_settings_still_construct_without_credentials(no_env):
    assert SchwabSettings().app_key is None  # plugin authors build it directly; checked on use


def test_livedata_run_exits_2_at_once(tmp_path):
    (tmp_path / "livedata.toml").write_text("[brokers.schwab]\naccounts = ['12345678']\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEDATA_SCHWAB_APP_")}
    out = subprocess.run([sys.executable, "-m", "livedata_core.cli", "run", "--no-embedded", "--redis-url", URL],
                         cwd=tmp_path, env={**env, "LIVEDATA_TOKEN_STORE": "memory"}, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "livedata.toml: Schwab app key and secret are missing" in out.stderr
    assert "LIVEDATA_SCHWAB_APP_KEY and LIVEDATA_SCHWAB_APP_SECRET" in out.stderr
