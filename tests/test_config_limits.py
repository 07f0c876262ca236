"""Every numeric setting is bounded by what consumes it, and a value out of bounds stops the runner at start
with the key named (issue 11, items 4 and 5): core's own keys, every shipped broker's settings, and the cap on
the number of symbols a broker streams."""

from __future__ import annotations

import os
import subprocess
import sys
import types
import typing

import attrs
import pytest

from livedata_core.errors import ConfigError
from livedata_core.plugin_kit.plugins import get_brokers
from livedata_core.runner import Runner, load_config

URL = "redis://127.0.0.1:1/0"  # Runner() connects to nothing
SHIPPED = ("demo", "schwab", "tos", "ibkr")
CREDENTIALS = {"LIVEDATA_SCHWAB_APP_KEY": "k", "LIVEDATA_SCHWAB_APP_SECRET": "s"}


def build(data: dict) -> Runner:
    return Runner(load_config({"redis": {"url": URL}, **data}, env={}))


def refused(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        build(data)
    return str(info.value)


@pytest.fixture(autouse=True)
def _schwab_app(monkeypatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


# -- core keys -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, message",
    [
        ({"redis": {"url": URL, "stream_maxlen": 10**20}}, "redis.stream_maxlen must be at most 1000000, was 100000000000000000000"),
        ({"redis": {"url": URL, "stream_maxlen": 2**63}}, "redis.stream_maxlen must be at most 1000000"),
        ({"backoff": {"max": 1e9}}, "backoff.max must be at most 3600"),
        ({"backoff": {"initial": 1e9, "max": 1e9}}, "backoff.initial must be at most 3600"),
        ({"backoff": {"login_retry": 86400 * 365}}, "backoff.login_retry must be at most 3600"),
        ({"status_interval": 1e12}, "status_interval must be at most 3600"),
        ({"shutdown_timeout": 1e300}, "shutdown_timeout must be at most 3600"),
        ({"brokers": {"demo": {"poll": {"orders": 1e12}}}}, "brokers.demo.poll.orders must be at most 86400"),
        ({"brokers": {"demo": {"max_symbols": 10**9}}}, "brokers.demo.max_symbols must be at most 100000"),
        ({"brokers": {"demo": {"max_symbols": 0}}}, "brokers.demo.max_symbols must be at least 1"),
        ({"brokers": {"demo": {"max_symbols": 2.5}}}, "brokers.demo.max_symbols must be a whole number, was 2.5"),
    ],
)
def test_core_numbers_out_of_bounds_are_refused_naming_the_key(data, message):
    assert message in refused(data)


@pytest.mark.parametrize(
    "data",
    [
        {"redis": {"url": URL, "stream_maxlen": 1_000_000}},
        {"backoff": {"initial": 3600, "max": 3600, "login_retry": 3600}},
        {"status_interval": 3600, "shutdown_timeout": 3600},
        {"brokers": {"demo": {"poll": {"orders": 86400}, "max_symbols": 100_000}}},
    ],
)
def test_core_numbers_at_their_bounds_load(data):
    build(data)


def test_livedata_run_refuses_the_reported_stream_maxlen_naming_the_key(tmp_path):
    # The value from the issue: Redis refuses it on every XADD, so orders never reach their stream.
    (tmp_path / "livedata.toml").write_text("[redis]\nstream_maxlen = 100000000000000000000\n")
    out = subprocess.run(
        [sys.executable, "-m", "livedata_core.cli", "run", "--no-embedded", "--redis-url", URL],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env={**os.environ},
    )
    assert out.returncode == 2, out.stderr
    assert "livedata.toml: redis.stream_maxlen must be at most 1000000, was 100000000000000000000" in out.stderr
    assert "Traceback" not in out.stderr


# -- every shipped broker's numeric settings ---------------------------------------------------------------

# A random seed is any whole number Python's random module takes; it is only held to 64 bits.
ANY_WHOLE_NUMBER = {("demo", "seed")}


def _numeric_fields(cls: type, path: str = ""):
    """(dotted key, type) of every int, float or dict-of-float field of an attrs settings class, nested ones too."""
    for field in attrs.fields(attrs.resolve_types(cls)):
        tp = field.type
        if typing.get_origin(tp) in (typing.Union, types.UnionType):  # int | None
            arms = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = arms[0] if len(arms) == 1 else tp
        key = f"{path}{field.name}"
        if tp in (int, float):
            yield key, tp
        elif typing.get_origin(tp) is dict and typing.get_args(tp)[1] in (int, float):
            yield key, dict
        elif attrs.has(tp):
            yield from _numeric_fields(tp, key + ".")


def _table(key: str, value) -> dict:
    table: dict = {}
    node = table
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return table


NUMERIC = [
    (broker, key, tp)
    for broker in SHIPPED
    if broker in get_brokers() and get_brokers()[broker].info.settings_cls is not None
    for key, tp in _numeric_fields(get_brokers()[broker].info.settings_cls)
]


def test_the_shipped_brokers_have_numeric_settings_to_check():
    assert {b for b, _, _ in NUMERIC} >= {"demo"} and len(NUMERIC) >= 5


@pytest.mark.parametrize("broker, key, tp", NUMERIC, ids=[f"{b}.{k}" for b, k, _ in NUMERIC])
def test_every_numeric_broker_setting_has_an_upper_bound(broker, key, tp):
    if tp is dict:
        value, shown = {"GET /x": 1e18}, f'brokers.{broker}.{key}."GET /x"'
    else:
        value, shown = (10**18 if tp is int else 1e18), f"brokers.{broker}.{key}"
    table = _table(key, value)
    if (broker, key) in ANY_WHOLE_NUMBER:
        build({"brokers": {broker: table}})
        table = _table(key, 2**64)
        assert f"{shown} must be a whole number from" in refused({"brokers": {broker: table}})
        return
    message = refused({"brokers": {broker: table}})
    assert f"{shown} must be " in message and ("at most" in message or "below" in message), message


@pytest.mark.parametrize("broker, key, tp", [n for n in NUMERIC if n[2] is float], ids=[f"{b}.{k}" for b, k, t in NUMERIC if t is float])
def test_infinite_or_overflowing_broker_numbers_are_refused_naming_the_key(broker, key, tp):
    assert f"brokers.{broker}.{key} must be a number, was inf" in refused({"brokers": {broker: _table(key, float("inf"))}})
    message = refused({"brokers": {broker: _table(key, 10**400)}})
    assert f"brokers.{broker}.{key} must be " in message and "unknown error" not in message, message


def test_a_bound_says_its_unit_and_where_it_comes_from():
    message = refused({"brokers": {"demo": {"heartbeat_timeout": 1e9}}})
    assert message == "brokers.demo.heartbeat_timeout must be at most 3600 seconds, was 1000000000.0"
    if "tos" in get_brokers():
        message = refused({"brokers": {"tos": {"max_keys_per_command": 1000}}})
        assert message == ("brokers.tos.max_keys_per_command must be at most 500 (the streamer holds about 500 keys "
                           "per service), was 1000")
    if "ibkr" in get_brokers():
        message = refused({"brokers": {"ibkr": {"tickle_interval": 600}}})
        assert message == ("brokers.ibkr.tickle_interval must be at most 300 seconds (the gateway ends a session "
                           "after about 6 minutes without a request), was 600")


def test_settings_built_directly_are_bounded_too():
    from livedata_core.default_plugins.demo import DemoSettings

    with pytest.raises(ValueError, match="heartbeat_timeout must be at most 3600 seconds, was 1000000000.0"):
        DemoSettings(heartbeat_timeout=1e9)


# -- the cap on symbols ------------------------------------------------------------------------------------


def test_configured_symbols_over_the_cap_are_refused_with_the_counts_and_the_setting():
    message = refused({"brokers": {"demo": {"symbols": ["A", "B", "C", "D"], "max_symbols": 3}}})
    assert message == (
        "brokers.demo.symbols: 4 symbols configured, more than the cap of 3 (brokers.demo.max_symbols); "
        "remove some or raise max_symbols in [brokers.demo]"
    )
    assert build({"brokers": {"demo": {"symbols": ["A", "B", "C", "c"], "max_symbols": 3}}})  # 3 after normalising


@pytest.mark.parametrize("broker, limit", [("tos", 500), ("ibkr", 100)])
def test_the_default_cap_is_the_brokers_own_limit(broker, limit):
    if broker not in get_brokers():
        pytest.skip(f"broker plugin {broker!r} not installed")
    assert get_brokers()[broker].info.max_symbols == limit
    symbols = [f"S{i}" for i in range(limit + 1)]
    message = refused({"brokers": {broker: {"symbols": symbols}}})
    assert f"{limit + 1} symbols configured, more than the cap of {limit} (brokers.{broker}.max_symbols, " in message
    build({"brokers": {broker: {"symbols": symbols, "max_symbols": limit + 1}}})  # more lines bought: raise it


def test_the_redis_topology_is_built_once_and_a_bad_url_in_the_file_is_refused_while_the_environment_overrides_it():
    from livedata_core.errors import ConfigError
    from livedata_core.runner import load_config

    redis = load_config({}, env={}).redis
    assert redis.topology is redis.topology  # not rebuilt (URL and TLS files checked again) on every read
    with pytest.raises(ConfigError, match="redis.url must be a string, was int"):
        load_config({"redis": {"url": 5}}, env={"LIVEDATA_REDIS_URL": "redis://localhost:6379/0"})
