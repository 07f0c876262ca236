"""A broker's own settings are taken as TOML gives them: a wrong type is refused with the key, never converted."""

import os
import subprocess
import sys

import pytest

from livedata_core.errors import ConfigError
from livedata_core.plugin_kit.plugins import get_brokers
from livedata_core.runner import Runner, load_config

URL = "redis://127.0.0.1:1/0"  # Runner() connects to nothing


def runner(brokers: dict) -> Runner:
    return Runner(load_config({"redis": {"url": URL}, "brokers": brokers}, env={}))


def needs(name: str) -> None:
    if name not in get_brokers():
        pytest.skip(f"broker plugin {name!r} not installed")


@pytest.mark.parametrize(
    "broker, table, message",
    [
        ("demo", {"seed": 1.5}, "brokers.demo.seed must be a whole number, was 1.5"),
        ("demo", {"seed": "7"}, "brokers.demo.seed must be a whole number, was '7'"),
        ("demo", {"batch": True}, "brokers.demo.batch must be a whole number, was True"),
        ("demo", {"heartbeat_timeout": "10"}, "brokers.demo.heartbeat_timeout must be a number, was '10'"),
        ("demo", {"quotes_per_second": True}, "brokers.demo.quotes_per_second must be a number, was True"),
        ("demo", {"order_every": float("nan")}, "brokers.demo.order_every must be a number, was nan"),
        ("ibkr", {"compete": "false"}, "brokers.ibkr.compete must be true or false, was 'false'"),
        ("ibkr", {"allow_self_signed": "no"}, "brokers.ibkr.allow_self_signed must be true or false, was 'no'"),
        ("ibkr", {"compete": 0}, "brokers.ibkr.compete must be true or false, was 0"),
        ("ibkr", {"default_sec_type": 5}, "brokers.ibkr.default_sec_type must be a string, was 5"),
        ("ibkr", {"pacing_overrides": {"GET /x": "1"}}, 'brokers.ibkr.pacing_overrides."GET /x" must be a number'),
        ("ibkr", {"pacing_overrides": 1}, "brokers.ibkr.pacing_overrides must be a table, was 1"),
        ("tos", {"account_activity": "false"}, "brokers.tos.account_activity must be true or false, was 'false'"),
        ("tos", {"schwab": {"open_browser": "yes"}}, "brokers.tos.schwab.open_browser must be true or false"),
        ("tos", {"schwab": "x"}, "brokers.tos.schwab must be a table, was 'x'"),
        ("schwab", {"app_key": "k", "app_secret": "s", "transaction_types": "TRADE"},
         "brokers.schwab.transaction_types must be a list of strings, was 'TRADE'"),
        ("schwab", {"app_key": "k", "app_secret": "s", "transaction_types": ["TRADE", 1]},
         r"brokers.schwab.transaction_types[1] must be a string, was 1"),
    ],
)
def test_wrong_types_are_refused_naming_the_key(broker, table, message):
    needs(broker)
    with pytest.raises(ConfigError) as info:
        runner({broker: table})
    assert message in str(info.value)


def test_unknown_keys_list_the_allowed_ones_including_the_runners():
    with pytest.raises(ConfigError) as info:
        runner({"demo": {"quotes_per_minute": 5}})
    text = str(info.value)
    assert text.startswith("[brokers.demo]: unknown key(s): quotes_per_minute; allowed: ")
    allowed = text.split("allowed: ")[1].split(", ")
    assert {"quotes_per_second", "seed", "batch", "symbols", "accounts", "poll", "enabled"} <= set(allowed)


def test_unknown_keys_of_an_embedded_table_name_that_table():
    needs("tos")
    with pytest.raises(ConfigError, match=r"\[brokers.tos.schwab\]: unknown key\(s\): app_kee; allowed: .*app_key"):
        runner({"tos": {"schwab": {"app_kee": "x"}}})


def test_right_types_still_load():
    rt = runner({"demo": {"quotes_per_second": 20, "seed": 7, "order_every": 0.5, "batch": 10}}).runtimes["demo"]
    assert rt.ctx.settings.quotes_per_second == 20.0 and isinstance(rt.ctx.settings.quotes_per_second, float)
    assert rt.ctx.settings.seed == 7
    if "ibkr" in get_brokers():
        ibkr = runner({"ibkr": {"compete": False, "pacing_overrides": {"GET /x": 2}, "login_wait": 1}})
        assert ibkr.runtimes["ibkr"].ctx.settings.pacing_overrides == {"GET /x": 2.0}
    if "tos" in get_brokers():
        tos = runner({"tos": {"account_activity": False, "schwab": {"app_key": "k", "app_secret": "s", "transaction_types": ["TRADE"]}}})
        assert tos.runtimes["tos"].ctx.settings.schwab.transaction_types == ["TRADE"]


def test_livedata_run_refuses_a_wrong_type_naming_the_file(tmp_path):
    needs("ibkr")
    (tmp_path / "ibkr.toml").write_text('[brokers.ibkr]\ncompete = "false"\n')
    out = subprocess.run(
        [sys.executable, "-m", "livedata_core.cli", "run", "--config", "ibkr.toml", "--no-embedded", "--redis-url", URL],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env={**os.environ},
    )
    assert out.returncode == 2, out.stderr
    assert "ibkr.toml: brokers.ibkr.compete must be true or false, was 'false'" in out.stderr
    assert "Traceback" not in out.stderr
