"""Credentials of API-key brokers and settings from the environment (issue 14, item 3).

A broker declares what it needs (``BrokerInfo.credentials``); ``livedata auth <instance>`` asks for it (or takes
it ``--from-env``) and stores it in the instance's token record; ``ctx.credentials()`` gives it to the hooks, from
``LIVEDATA_<INSTANCE>_<NAME>`` if set, else from the store. No value is ever printed. ``LIVEDATA_<INSTANCE>_<SETTING>``
sets a broker's own setting, from ``load_config(env=...)`` when given, never from somewhere else.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from distributions import make_distribution
from livedata_core.errors import ConfigError, LoginRequired, PluginError
from livedata_core.runner import Runner, load_config
from livedata_core.testing import registered_plugin, running
from livedata_core.plugin_kit.tokens import Credential, FileTokenStore, MemoryTokenStore

KEY_ID = "AKID-4471-public"
SECRET = "s3cr3t-9f2e7d1c-never-shown"

KEYED = f'''
from livedata_core import AuthError, BrokerInfo, Position, hookimpl
from livedata_core.plugin_kit.tokens import Credential


@hookimpl
def broker_info():
    return BrokerInfo(name="keyed", capabilities={{"authenticate", "fetch_positions"}},
                      credentials=(Credential("api_key", "API key id", secret=False),
                                   Credential("api_secret", "API secret")))


@hookimpl
def authenticate(ctx):
    creds = ctx.credentials()
    if (creds["api_key"], creds["api_secret"]) != ({KEY_ID!r}, {SECRET!r}):
        raise AuthError("keyed: the API key id or secret was rejected")
    ctx.session = "ok"


@hookimpl
def fetch_positions(ctx, account_id):
    return [Position(broker="keyed", account_id=account_id, symbol="AAPL", quantity=1.0)]
'''


@pytest.fixture
def site(tmp_path):
    return make_distribution(tmp_path / "site", "livedata-keyed", "livedata_keyed", KEYED, "keyed")


@pytest.fixture
def keyed(site):
    """The same plugin, registered in this process."""
    spec = importlib.util.spec_from_file_location("livedata_keyed_inproc", site / "livedata_keyed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with registered_plugin(module):
        yield module


def auth(site, tokens, *args, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    """``livedata auth keyed ...`` as a user types it (no terminal: getpass reads standard input)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEDATA_", "PYTEST_"))}
    base.update(PYTHONPATH=str(site), LIVEDATA_LOAD_PLUGINS="livedata-keyed", LIVEDATA_TOKEN_STORE="file",
                LIVEDATA_TOKEN_DIR=str(tokens), **(env or {}))
    return subprocess.run([sys.executable, "-m", "livedata_core.cli", "auth", "keyed", *args], input=stdin,
                          env=base, cwd=tokens.parent, capture_output=True, text=True, timeout=60,
                          start_new_session=True)  # fmt: skip


def test_auth_asks_for_the_key_and_secret_and_stores_them_unprinted(site, tmp_path):
    tokens = tmp_path / "tokens"
    out = auth(site, tokens, stdin=f"{KEY_ID}\n{SECRET}\n")
    assert out.returncode == 0, out.stderr
    assert "keyed: API key id and API secret saved" in out.stdout and "accepted by the broker" in out.stdout
    assert "keyed API key id: " in out.stdout + out.stderr and "keyed API secret: " in out.stdout + out.stderr
    assert SECRET not in out.stdout + out.stderr
    path = tokens / "keyed.json"
    assert json.loads(path.read_text()) == {"credentials": {"api_key": KEY_ID, "api_secret": SECRET}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_auth_from_env_stores_the_variables(site, tmp_path):
    tokens = tmp_path / "tokens"
    out = auth(site, tokens, "--from-env", env={"LIVEDATA_KEYED_API_KEY": KEY_ID, "LIVEDATA_KEYED_API_SECRET": SECRET})
    assert out.returncode == 0, out.stderr
    assert SECRET not in out.stdout + out.stderr
    assert FileTokenStore(tokens).load("keyed") == {"credentials": {"api_key": KEY_ID, "api_secret": SECRET}}

    missing = auth(site, tmp_path / "other", "--from-env", env={"LIVEDATA_KEYED_API_KEY": KEY_ID})
    assert missing.returncode == 2
    assert "--from-env: LIVEDATA_KEYED_API_SECRET is not set (the API secret of keyed)" in missing.stderr
    assert not (tmp_path / "other" / "keyed.json").exists()


def test_auth_keeps_nothing_the_broker_rejects(site, tmp_path):
    tokens = tmp_path / "tokens"
    wrong = "wrong-secret-5521aa"
    out = auth(site, tokens, stdin=f"{KEY_ID}\n{wrong}\n")
    assert out.returncode == 1
    assert "keyed: the broker rejected the API key id and API secret" in out.stderr and "nothing was saved" in out.stderr
    assert wrong not in out.stdout + out.stderr
    assert not (tokens / "keyed.json").exists()
    empty = auth(site, tokens, stdin=f"{KEY_ID}\n\n")
    assert empty.returncode == 2 and "no API secret given; nothing was saved" in empty.stderr


def test_the_runner_reads_stored_credentials_and_env_ones_override(keyed, redis_server, published, tmp_path):
    poll = {"positions": 0.05, "balances": 0, "orders": 0, "transactions": 0}
    store = FileTokenStore(tmp_path / "tokens")

    async def first_position(config, tokens) -> None:
        account = config.brokers["keyed"].accounts[0]
        async with running(Runner(config, token_store=tokens)):
            await published.wait_for_async("positions", account)

    # Stored as `livedata auth keyed` stores them:
    from livedata_core.plugin_kit.tokens import save_credentials

    save_credentials(store, "keyed", {"api_key": KEY_ID, "api_secret": SECRET})
    table = {"accounts": ["K1"], "poll": poll}
    config = load_config({"redis": {"url": redis_server.url}, "brokers": {"keyed": table}}, env={})
    asyncio.run(first_position(config, store))
    # From load_config's env (not os.environ), over an empty store:
    env = {"LIVEDATA_KEYED_API_KEY": KEY_ID, "LIVEDATA_KEYED_API_SECRET": SECRET}
    table = {"accounts": ["K2"], "poll": poll}
    config = load_config({"redis": {"url": redis_server.url}, "brokers": {"keyed": table}}, env=env)
    asyncio.run(first_position(config, MemoryTokenStore()))


def test_missing_credentials_say_how_to_provide_them(keyed, monkeypatch):
    monkeypatch.setenv("LIVEDATA_KEYED_API_KEY", KEY_ID)  # the process's environment is not load_config's env
    config = load_config({"redis": {"url": "redis://127.0.0.1:1/0"}, "brokers": {"keyed": {"accounts": ["K1"]}}},
                         env={"LIVEDATA_KEYED_API_KEY": KEY_ID})  # fmt: skip
    ctx = Runner(config, token_store=MemoryTokenStore()).runtimes["keyed"].ctx
    with pytest.raises(LoginRequired) as info:
        ctx.credentials()
    assert str(info.value) == ("keyed: no API secret: run `livedata auth keyed` to store it, or set "
                               "LIVEDATA_KEYED_API_SECRET")  # fmt: skip
    ctx.tokens.save("keyed", {"credentials": {"api_secret": SECRET}})
    creds = ctx.credentials()
    assert dict(creds) == {"api_key": KEY_ID, "api_secret": SECRET}
    for text in (repr(creds), repr(ctx), str(config.brokers["keyed"])):
        assert SECRET not in text and KEY_ID not in text


def test_credential_declarations_are_checked():
    from livedata_core import BrokerInfo

    info = BrokerInfo(name="k", capabilities=set(), credentials=("api_secret",))
    assert info.credentials == (Credential("api_secret"),) and info.credentials[0].label == "api secret"
    with pytest.raises(PluginError, match="credential name 'API-KEY' is not allowed"):
        BrokerInfo(name="k", capabilities=set(), credentials=("API-KEY",))
    with pytest.raises(PluginError, match="name one credential twice"):
        BrokerInfo(name="k", capabilities=set(), credentials=("a", "a"))


# -- settings from the environment -----------------------------------------------------------------------------


def demo_settings(env: dict, brokers: dict | None = None, name: str = "demo"):
    config = load_config({"redis": {"url": "redis://127.0.0.1:1/0"}, "brokers": brokers or {"demo": {}}}, env=env)
    return Runner(config, token_store=MemoryTokenStore()).runtimes[name].ctx.settings


def test_env_sets_a_plugins_settings_over_the_file(monkeypatch):
    settings = demo_settings({"LIVEDATA_DEMO_QUOTES_PER_SECOND": "50", "LIVEDATA_DEMO_SEED": "7"},
                             {"demo": {"quotes_per_second": 5, "seed": 1}})  # fmt: skip
    assert (settings.quotes_per_second, settings.seed) == (50.0, 7)
    monkeypatch.setenv("LIVEDATA_DEMO_SEED", "9")  # load_config(env=...) is the environment, not os.environ
    assert demo_settings({}).seed == type(demo_settings({})).__attrs_attrs__.seed.default


def test_env_settings_go_to_the_instance_with_the_longest_name():
    brokers = {"demo": {}, "demo_b": {"plugin": "demo"}}
    env = {"LIVEDATA_DEMO_B_SEED": "5", "LIVEDATA_DEMO_SEED": "3", "LIVEDATA_REDIS_URL": "redis://x:1/0"}
    assert demo_settings(env, brokers, "demo_b").seed == 5
    assert demo_settings(env, brokers, "demo").seed == 3


def test_env_settings_are_checked_naming_the_variable():
    with pytest.raises(ConfigError, match="LIVEDATA_DEMO_SEED must be a whole number, was 'seven'"):
        demo_settings({"LIVEDATA_DEMO_SEED": "seven"})
    with pytest.raises(ConfigError, match="LIVEDATA_DEMO_QUOTES_PER_SECOND"):
        demo_settings({"LIVEDATA_DEMO_QUOTES_PER_SECOND": "-1"})


def test_livedata_run_takes_settings_from_the_environment(tmp_path):
    """As a user runs it: a bad value in the environment stops `livedata run` naming the variable."""
    (tmp_path / "livedata.toml").write_text(textwrap.dedent("""
        [brokers.demo]
        symbols = ["AAPL"]
    """))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEDATA_", "PYTEST_"))}
    out = subprocess.run([sys.executable, "-m", "livedata_core.cli", "run", "--no-embedded", "--redis-url",
                          "redis://127.0.0.1:1/0"], cwd=tmp_path, env={**env, "LIVEDATA_DEMO_SEED": "x1"},
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "LIVEDATA_DEMO_SEED must be a whole number, was 'x1'" in out.stderr
