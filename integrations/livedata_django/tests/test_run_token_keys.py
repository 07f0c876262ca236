"""livedata_run checks, before anything starts, whose row serves each Schwab login its instances use."""

from __future__ import annotations

from livedata_core.runner import Runner, load_config
from livedata_core.plugin_kit.token_stores import MemoryTokenStore
from livedata_django.management.commands.livedata_run import schwab_token_keys

APP = {"app_key": "k" * 32, "app_secret": "s" * 16}


def test_each_schwab_login_of_the_configuration_is_checked_by_its_own_key():
    config = load_config({"brokers": {
        "schwab": dict(APP),
        "schwab_ira": {"plugin": "schwab", **APP},
        "tos": {},
        "tos_ira": {"plugin": "tos", "schwab": "schwab_ira"},
        "demo": {},
    }}, env={})  # fmt: skip
    runner = Runner(config, token_store=MemoryTokenStore())
    assert schwab_token_keys(runner) == ["schwab", "schwab_ira"]


def test_an_unlinked_tos_instance_uses_the_key_schwab():
    config = load_config({"brokers": {"tos": {"schwab": dict(APP)}}}, env={})
    assert schwab_token_keys(Runner(config, token_store=MemoryTokenStore())) == ["schwab"]
