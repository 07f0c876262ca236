"""A tos instance linked to a Schwab instance uses that instance's app settings: the app key and secret in the
Schwab instance's table are enough, none in the tos table or the environment."""

from __future__ import annotations

import pytest

from livedata_core.errors import ConfigError
from livedata_core.runner import Runner, load_config
from livedata_core.plugin_kit.tokens import MemoryTokenStore

APP = {"app_key": "k" * 32, "app_secret": "s" * 16}


@pytest.fixture(autouse=True)
def no_app_credentials_in_the_environment(monkeypatch):
    monkeypatch.delenv("LIVEDATA_SCHWAB_APP_KEY", raising=False)
    monkeypatch.delenv("LIVEDATA_SCHWAB_APP_SECRET", raising=False)


def test_a_linked_tos_instance_needs_no_app_credentials_of_its_own():
    config = load_config({"brokers": {"schwab_ira": {"plugin": "schwab", **APP},
                                      "tos_ira": {"plugin": "tos", "schwab": "schwab_ira", "symbols": ["AAPL"]}}},
                         env={})  # fmt: skip
    runner = Runner(config, token_store=MemoryTokenStore())
    ctx = runner.runtimes["tos_ira"].ctx
    assert ctx.login is runner.runtimes["schwab_ira"].ctx


def test_without_a_linked_instance_the_credentials_are_still_required_before_start():
    config = load_config({"brokers": {"tos_ira": {"plugin": "tos", "symbols": ["AAPL"]}}}, env={})
    with pytest.raises(ConfigError, match=r"LIVEDATA_SCHWAB_APP_KEY.*\[brokers\.tos"):
        Runner(config, token_store=MemoryTokenStore())
