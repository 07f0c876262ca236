"""Schwab's API and OAuth URLs carry the app secret and the tokens: plain http:// is refused unless it points at
this machine (a test server), with the same check and wording as the IBKR gateway URLs."""

from __future__ import annotations

import pytest

from livedata_core.errors import ConfigError
from livedata_core.plugin_kit.plugins import get_brokers
from livedata_core.runner import Runner, load_config

URL = "redis://127.0.0.1:1/0"  # Runner() connects to nothing


@pytest.fixture(autouse=True)
def _app(monkeypatch):
    monkeypatch.setenv("LIVEDATA_SCHWAB_APP_KEY", "app-key")
    monkeypatch.setenv("LIVEDATA_SCHWAB_APP_SECRET", "app-secret")


def runner(brokers: dict) -> Runner:
    return Runner(load_config({"redis": {"url": URL}, "brokers": brokers}, env={}))


@pytest.mark.parametrize("key", ["api_base_url", "auth_base_url"])
@pytest.mark.parametrize("host", ["api.schwabapi.com", "10.0.0.5", "[2001:db8::1]"])
def test_plain_http_to_another_host_is_refused_naming_the_key(key, host):
    with pytest.raises(ConfigError) as info:
        runner({"schwab": {key: f"http://{host}/trader/v1"}})
    text = str(info.value)
    assert text.startswith(f"[brokers.schwab]: {key} 'http://{host}/trader/v1' is unencrypted http:// to ")
    assert "app secret and the tokens across the network in clear text; use https://" in text
    assert "or http:// only for a server on this machine (localhost, 127.0.0.1, ::1)" in text


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "127.0.0.9"])
def test_plain_http_to_this_machine_is_allowed(host):
    settings = runner({"schwab": {"api_base_url": f"http://{host}:8080/trader/v1",
                                  "auth_base_url": f"http://{host}:8080/v1/oauth"}}).runtimes["schwab"].ctx.settings  # fmt: skip
    assert settings.api_base_url == f"http://{host}:8080/trader/v1"


def test_https_anywhere_is_allowed_and_other_schemes_are_refused():
    runner({"schwab": {"api_base_url": "https://proxy.example.com/trader/v1"}})
    with pytest.raises(ConfigError, match=r"api_base_url must be an https:// URL with a host, was 'ftp://x/'"):
        runner({"schwab": {"api_base_url": "ftp://x/"}})


def test_a_password_in_the_url_is_masked():
    with pytest.raises(ConfigError) as info:
        runner({"schwab": {"auth_base_url": "http://user:S3CRET@10.0.0.5/v1/oauth"}})
    assert "unencrypted" in str(info.value) and "S3CRET" not in str(info.value)


def test_the_streamer_login_is_held_to_the_same_rule():
    if "tos" not in get_brokers():
        pytest.skip("livedata-tos not installed")
    with pytest.raises(ConfigError, match=r"\[brokers.tos\]: auth_base_url 'http://10.0.0.5/v1/oauth' is unencrypted"):
        runner({"tos": {"schwab": {"auth_base_url": "http://10.0.0.5/v1/oauth"}}})
    with pytest.raises(ConfigError, match=r"\[brokers.tos\]: streamer_url 'ws://streamer.example.com/ws' is unencrypted"):
        runner({"tos": {"streamer_url": "ws://streamer.example.com/ws"}})
    runner({"tos": {"streamer_url": "ws://127.0.0.1:9000/ws"}})


def test_the_ibkr_gateway_check_is_the_same_one():
    if "ibkr" not in get_brokers():
        pytest.skip("livedata-ibkr not installed")
    with pytest.raises(ConfigError) as info:
        runner({"ibkr": {"base_url": "http://10.0.0.5:5000/v1/api"}})
    assert "is unencrypted http:// to 10.0.0.5, which would send the gateway session across the network" in str(info.value)
    assert "or http:// only for a server on this machine (localhost, 127.0.0.1, ::1)" in str(info.value)
