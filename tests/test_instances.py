"""Broker instances (issue 12): several [brokers.NAME] tables of one plugin, as a user configures and watches them."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import attrs
import pytest
import redis

from livedata_core import BrokerInfo, Quote, hookimpl
from livedata_core.cli import main
from livedata_core.errors import ConfigError
from livedata_core.models import make_quote
from livedata_core.runner import Runner, load_config
from livedata_core.testing import registered_plugin, running
from livedata_core.plugin_kit.tokens import MemoryTokenStore

LIVEDATA = [sys.executable, "-m", "livedata_core.cli"]
FAST_POLL = {"positions": 0.1, "balances": 0.1, "orders": 0.1, "transactions": 0.1}


def cli(*args, env=None, timeout=60, cwd=None):
    return subprocess.run(LIVEDATA + list(args), env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def write(tmp_path, text, name="livedata.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def refused(capsys, path):
    """``livedata run -c path`` as a user types it: exit status 2 and the error line."""
    status = main(["run", "-c", path, "--no-embedded"])
    err = capsys.readouterr().err
    assert status == 2, err
    return err


# -- configuration --------------------------------------------------------------------------------------------


def test_an_instance_names_its_plugin_and_without_one_the_table_name_is_the_plugin():
    config = load_config({"brokers": {"demo": {}, "demo_b": {"plugin": "demo", "symbols": ["MSFT"]}}})
    assert [(b.name, b.plugin) for b in config.brokers.values()] == [("demo", "demo"), ("demo_b", "demo")]
    assert "plugin" not in config.brokers["demo_b"].settings  # a runner key, never the plugin's setting
    runner = Runner(config, token_store=MemoryTokenStore())
    a, b = runner.runtimes["demo"].ctx, runner.runtimes["demo_b"].ctx
    assert (a.broker, a.instance, a.token_key) == ("demo", "demo", "demo")
    assert (b.broker, b.instance, b.token_key, b.log.name) == ("demo", "demo_b", "demo_b", "livedata.broker.demo_b")
    assert a is not b and a.settings is not b.settings


@pytest.mark.parametrize(
    "toml, key",
    [
        ('[brokers.Demo-A]\nplugin = "demo"\n', "[brokers.Demo-A]: the instance name 'Demo-A' is not allowed"),
        ('[brokers.demo_a]\nplugin = 5\n', "brokers.demo_a.plugin must be a string"),
        ('[brokers.demo_a]\nplugin = "nope"\n', "brokers.demo_a.plugin: unknown broker 'nope'"),
        ('[brokers.nope]\n', "[brokers.nope]: unknown broker 'nope'"),
        ('[brokers.demo_a]\nplugin = "demo"\n[brokers.demo_a]\nplugin = "demo"\n', "('brokers', 'demo_a')"),
        ('[brokers.demo_a]\nplugin = "demo"\naccounts = ["DEMO-1"]\n[brokers.demo_b]\nplugin = "demo"\n'
         'accounts = ["DEMO-1"]\n', "brokers.demo_b.accounts: account 'DEMO-1' is also in brokers.demo_a.accounts"),
    ],
)
def test_bad_instances_are_refused_before_anything_starts_naming_the_key(tmp_path, capsys, toml, key):
    err = refused(capsys, write(tmp_path, toml))
    assert key in err and "livedata.toml" in err


@attrs.frozen
class LinkSettings:
    greeting: str = "hi"


class Solo:
    """A plugin that allows one login per machine."""

    @hookimpl
    def broker_info(self):
        return BrokerInfo(name="solo", capabilities={"fetch_accounts"}, max_instances=1)

    @hookimpl
    def fetch_accounts(self, ctx):
        return []


class Keys:
    """A plugin with a login: it saves a token under its instance's key."""

    @hookimpl
    def broker_info(self):
        return BrokerInfo(name="keys", capabilities={"login"})

    @hookimpl
    def login(self, ctx, manual):
        ctx.tokens.save(ctx.token_key, {"who": ctx.instance})


class Rider:
    """A plugin that logs in with an instance of ``keys`` (as tos does with schwab)."""

    @hookimpl
    def broker_info(self):
        return BrokerInfo(name="rider", capabilities={"fetch_accounts"}, settings_cls=LinkSettings, login_plugin="keys")

    @hookimpl
    def fetch_accounts(self, ctx):
        return []


def test_a_plugin_allowing_one_instance_refuses_a_second(tmp_path, capsys):
    with registered_plugin(Solo()):
        err = refused(capsys, write(tmp_path, '[brokers.solo]\n[brokers.solo_2]\nplugin = "solo"\n'))
    assert "[brokers.solo_2]: plugin 'solo' allows 1 instance per configuration" in err and "solo, solo_2" in err


def test_a_login_link_must_name_a_configured_instance_of_the_login_plugin(tmp_path, capsys):
    with registered_plugin(Keys()), registered_plugin(Rider()):
        err = refused(capsys, write(tmp_path, '[brokers.rider_ira]\nplugin = "rider"\nkeys = "keys_ira"\n'))
        assert "brokers.rider_ira.keys must be a table, was 'keys_ira', which names no configured" in err
        err = refused(capsys, write(tmp_path, '[brokers.demo_x]\nplugin = "demo"\n[brokers.rider_ira]\n'
                                              'plugin = "rider"\nkeys = "demo_x"\n'))
        assert "brokers.rider_ira.keys names the instance 'demo_x', which is of plugin 'demo', not 'keys'" in err

        config = {"brokers": {"keys": {}, "keys_ira": {"plugin": "keys"},
                              "rider_ira": {"plugin": "rider", "keys": "keys_ira", "greeting": "yo"},
                              "rider": {}, "rider_alone": {"plugin": "rider"}}}
        runner = Runner(load_config(config), token_store=MemoryTokenStore())
        ctx = {name: rt.ctx for name, rt in runner.runtimes.items()}
        assert ctx["rider_ira"].login is ctx["keys_ira"] and ctx["rider_ira"].settings.greeting == "yo"
        assert ctx["rider"].login is ctx["keys"]  # by default: the instance named like the login plugin
        assert ctx["rider_alone"].login is ctx["keys"]
        runner = Runner(load_config({"brokers": {"rider": {}}}), token_store=MemoryTokenStore())
        assert runner.runtimes["rider"].ctx.login is None  # nothing to link: the plugin works as before


def test_auth_of_an_instance_writes_only_its_own_tokens_and_a_linked_instance_logs_in_its_login(tmp_path, capsys,
                                                                                                monkeypatch):
    tokens = tmp_path / "tokens"
    monkeypatch.setenv("LIVEDATA_TOKEN_STORE", "file")
    monkeypatch.setenv("LIVEDATA_TOKEN_DIR", str(tokens))
    path = write(tmp_path, '[brokers.keys]\n[brokers.keys_ira]\nplugin = "keys"\n'
                           '[brokers.rider_ira]\nplugin = "rider"\nkeys = "keys_ira"\n')
    with registered_plugin(Keys()), registered_plugin(Rider()):
        assert main(["auth", "keys", "-c", path]) == 0
        assert sorted(p.name for p in tokens.glob("*.json")) == ["keys.json"]
        assert main(["auth", "rider_ira", "-c", path]) == 0
        out = capsys.readouterr()
        assert "keys_ira: login complete." in out.out and "rider_ira uses the login of keys_ira" in out.err
        assert sorted(p.name for p in tokens.glob("*.json")) == ["keys.json", "keys_ira.json"]
        assert json.loads((tokens / "keys_ira.json").read_text()) == {"who": "keys_ira"}
        assert json.loads((tokens / "keys.json").read_text()) == {"who": "keys"}


def test_the_token_store_hook_is_told_the_instance_and_the_plugin():
    asked, stores = [], {}

    class Application:
        @hookimpl
        def token_store(self, instance, plugin):
            asked.append((instance, plugin))
            return stores.setdefault(instance, MemoryTokenStore()) if plugin == "demo" else None

    class OldApplication:  # written before instances: takes only `broker`, which is the instance's name
        seen = []

        @hookimpl
        def token_store(self, broker):
            self.seen.append(broker)

    with registered_plugin(OldApplication()), registered_plugin(Application()):
        runner = Runner(load_config({"brokers": {"demo": {}, "demo_b": {"plugin": "demo"}}}))
    assert sorted(asked) == [("demo", "demo"), ("demo_b", "demo")]
    assert runner.runtimes["demo_b"].ctx.tokens is stores["demo_b"] is not stores["demo"]
    assert runner.runtimes["demo"].ctx.tokens is stores["demo"]


# -- payloads --------------------------------------------------------------------------------------------------


def test_make_quote_takes_the_instance_last_or_leaves_it_to_the_runner():
    fields = [None] * 12
    plain = make_quote("demo", "AAPL", *fields, 1, 2, None)
    named = make_quote("demo", "AAPL", *fields, 1, 2, None, "demo_b")
    assert plain == Quote(broker="demo", symbol="AAPL", timestamp=1, received_at=2)
    assert named == Quote(broker="demo", symbol="AAPL", timestamp=1, received_at=2, instance="demo_b")
    assert [f.name for f in attrs.fields(Quote)][-1] == "instance"


# -- a runner with two demo instances, as a user runs and watches it -------------------------------------------


@pytest.fixture
def two_demos(private_redis, tmp_path):
    path = write(tmp_path, """\
        status_interval = 0.2
        [brokers.demo_a]
        plugin = "demo"
        symbols = ["AAPL", "SPY"]
        accounts = ["DEMO-1"]
        quotes_per_second = 100
        order_every = 0.2
        poll = { positions = 0.2, balances = 0.2, orders = 0.2, transactions = 0.2 }
        [brokers.demo_b]
        plugin = "demo"
        symbols = ["MSFT", "SPY"]
        quotes_per_second = 100
        order_every = 0.2
        poll = { positions = 0.2, balances = 0.2, orders = 0.2, transactions = 0.2 }
    """)
    env = {**os.environ, "LIVEDATA_REDIS_URL": private_redis.url}
    proc = subprocess.Popen(LIVEDATA + ["run", "-c", path, "-q"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    r = redis.Redis(port=private_redis.port)
    deadline = time.monotonic() + 20
    while not r.get("live_data:status") and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    yield proc, {"LIVEDATA_REDIS_URL": private_redis.url}, r, path
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)


def _tail(env, pattern, n):
    out = cli("tail", pattern, "-n", str(n), "--json", env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def _status(env):
    out = cli("status", "--json", env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_two_instances_of_one_plugin_run_side_by_side(two_demos):
    proc, env, r, path = two_demos
    status = _status(env)
    rows = status["brokers"]
    assert sorted(rows) == ["demo_a", "demo_b"]
    assert {name: (row["plugin"], row["instance"], row["symbols"]) for name, row in rows.items()} == {
        "demo_a": ("demo", "demo_a", ["AAPL", "SPY"]), "demo_b": ("demo", "demo_b", ["MSFT", "SPY"])}
    text = cli("status", env=env).stdout
    assert "[demo_a]" in text and "[demo_b]" in text and text.count("plugin           demo") == 2

    # Each instance's own symbols come from it alone; payloads name the plugin and the instance.
    assert {(q["data"]["broker"], q["data"]["instance"]) for q in _tail(env, "quotes:MSFT", 3)} == {("demo", "demo_b")}
    assert {(q["data"]["broker"], q["data"]["instance"]) for q in _tail(env, "quotes:AAPL", 3)} == {("demo", "demo_a")}

    # A symbol both stream: both publish on quotes:SPY, each payload naming its instance; the latest key holds the
    # last one published, whichever instance that was.
    seen = set()
    deadline = time.monotonic() + 20
    while seen != {"demo_a", "demo_b"} and time.monotonic() < deadline:
        seen |= {q["data"]["instance"] for q in _tail(env, "quotes:SPY", 10)}
    assert seen == {"demo_a", "demo_b"}
    assert json.loads(r.get("live_data:latest:quotes:SPY"))["instance"] in {"demo_a", "demo_b"}

    # subscribe addresses one instance.
    out = cli("subscribe", "demo_b", "nvda", env=env)
    assert out.returncode == 0 and "demo_b: subscribed NVDA" in out.stdout, out.stderr
    assert {q["data"]["instance"] for q in _tail(env, "quotes:NVDA", 3)} == {"demo_b"}
    rows = _status(env)["brokers"]
    assert "NVDA" in rows["demo_b"]["symbols"] and "NVDA" not in rows["demo_a"]["symbols"]
    out = cli("unsubscribe", "demo_b", "NVDA", env=env)
    assert out.returncode == 0 and "demo_b: unsubscribed NVDA" in out.stdout
    out = cli("subscribe", "demo_c", "NVDA", env=env)
    assert out.returncode == 1 and "instance 'demo_c' is not running here; running: demo_a, demo_b" in out.stderr

    # The fetch commands address an instance through the configuration file.
    out = cli("positions", "demo_b", "-c", path, "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert {p["instance"] for p in json.loads(out.stdout)} == {"demo_b"}
    out = cli("positions", "demo_z", "-c", path, env=env)
    assert out.returncode == 2 and "'demo_z' is not an instance (configured in" in out.stderr

    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err


def test_an_account_two_instances_report_is_published_by_the_first_only(two_demos):
    proc, env, r, _ = two_demos
    # demo_a has DEMO-1 in its accounts; demo_b finds the same demo account by itself.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = _status(env)["brokers"]["demo_b"]
        if row["skipped"].get("account owned by another instance"):
            break
        time.sleep(0.2)
    assert row["skipped"]["account owned by another instance"] > 0
    assert "account DEMO-1 is reported by demo_a and demo_b; demo_a reported it first" in row["last_error"]
    assert _status(env)["brokers"]["demo_a"]["polls"]
    payloads = _tail(env, "orders:DEMO-1", 2) + _tail(env, "positions:DEMO-1", 1)
    assert {p["data"]["instance"] for p in payloads} == {"demo_a"}
    book = r.hgetall("live_data:book:positions:DEMO-1")
    assert book and {json.loads(v)["instance"] for v in book.values()} == {"demo_a"}


def test_instances_of_one_login_share_their_accounts(redis_server):
    # tos reports the order activity of the accounts its Schwab login polls: one login, no conflict.
    class Poll:
        @hookimpl
        def broker_info(self):
            return BrokerInfo(name="keys", capabilities={"fetch_accounts"})

        @hookimpl
        def fetch_accounts(self, ctx):
            return []

    async def go():
        with registered_plugin(Poll()), registered_plugin(Rider()):
            config = load_config({"redis": {"url": redis_server.url}, "brokers": {
                "keys_ira": {"plugin": "keys", "accounts": ["IRA-1"]},
                "rider_ira": {"plugin": "rider", "keys": "keys_ira", "accounts": ["IRA-1"]}}})
            async with running(Runner(config, token_store=MemoryTokenStore())) as runner:
                return [runner.runtimes[n].may_publish("IRA-1") for n in ("keys_ira", "rider_ira")]

    assert asyncio.run(go()) == [True, True]
    with registered_plugin(Keys()), registered_plugin(Rider()), pytest.raises(ConfigError, match="is also in"):
        Runner(load_config({"brokers": {"keys_ira": {"plugin": "keys", "accounts": ["IRA-1"]},
                                        "rider": {"accounts": ["IRA-1"]}}}))


@attrs.frozen
class CheckedSettings:
    key: str = ""

    def check_config(self, login=None):
        if login is None and not self.key:
            raise ConfigError("[brokers.checked]: set key, or link an instance of keys")


class Checked:
    """A plugin whose settings need credentials unless it is linked to a login that has them (tos and schwab)."""

    @hookimpl
    def broker_info(self):
        return BrokerInfo(name="checked", capabilities={"fetch_accounts"}, settings_cls=CheckedSettings,
                          login_plugin="keys")

    @hookimpl
    def fetch_accounts(self, ctx):
        return []


def test_settings_are_checked_knowing_the_linked_login(tmp_path, capsys):
    with registered_plugin(Keys()), registered_plugin(Checked()):
        err = refused(capsys, write(tmp_path, '[brokers.checked_ira]\nplugin = "checked"\n'))
        assert "set key, or link an instance of keys" in err
        runner = Runner(load_config({"brokers": {"keys_ira": {"plugin": "keys"},
                                                 "checked_ira": {"plugin": "checked", "keys": "keys_ira"}}}),
                        token_store=MemoryTokenStore())
        assert runner.runtimes["checked_ira"].ctx.login is runner.runtimes["keys_ira"].ctx
