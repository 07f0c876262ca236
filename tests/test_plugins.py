"""Discovery through entry points, load-time checks, and scoped broker calls."""

import asyncio
import json
import os
import subprocess
import sys

import pytest

from distributions import BROKEN_IMPORT, DUPLICATE, GOOD, MISSPELLED, UNDECLARED, make_distribution
from livedata_core import BrokerInfo, hookimpl, plugins
from livedata_core.errors import ConfigError, NotSupported, PluginError

LIVEDATA = [sys.executable, "-m", "livedata_core.cli"]


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    make_distribution(root, "livedata-acme", "livedata_acme", GOOD, "acme")
    make_distribution(root, "livedata-acme-broken", "livedata_acme_broken", BROKEN_IMPORT, "acme_broken")
    make_distribution(root, "livedata-typo", "livedata_typo", MISSPELLED, "typo")
    make_distribution(root, "livedata-acme-again", "livedata_acme_again", DUPLICATE, "acme_again")
    make_distribution(root, "livedata-sneaky", "livedata_sneaky", UNDECLARED, "sneaky")
    return root


def _plugins_json(site, **env):
    full_env = {**os.environ, "PYTHONPATH": str(site), **env}
    full_env.pop("LIVEDATA_LOAD_PLUGINS", None) if "LIVEDATA_LOAD_PLUGINS" not in env else None
    out = subprocess.run(LIVEDATA + ["plugins", "--json"], env=full_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_installed_plugins_are_listed_and_broken_ones_reported(site):
    data = _plugins_json(site)
    by_dist = {p["distribution"]: p for p in data["plugins"]}
    acme = by_dist["livedata-acme"]
    assert acme["broker"] == "acme" and acme["version"] == "1.2.3"
    assert acme["capabilities"] == ["fetch_positions"]
    assert set(acme["hooks"]) == {"broker_info", "fetch_positions"}
    assert "demo" in {p["broker"] for p in data["plugins"]}
    errors = {e["distribution"]: e["error"] for e in data["errors"]}
    assert "not installed" in errors["livedata-acme-broken"] or "failed to import" in errors["livedata-acme-broken"]
    assert "RuntimeError" in errors["livedata-acme-broken"]
    assert "fetch_postions" in errors["livedata-typo"]
    assert "already registered by livedata-acme" in errors["livedata-acme-again"]
    assert "fetch_balances" in errors["livedata-sneaky"] and "without declaring" in errors["livedata-sneaky"]


def test_table_output_shows_errors_without_failing(site):
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(LIVEDATA + ["plugins"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "livedata-acme" in out.stdout and "1.2.3" in out.stdout
    assert "failed to load typo" in out.stdout


def test_environment_limits_which_plugins_load(site):
    data = _plugins_json(site, LIVEDATA_LOAD_PLUGINS="livedata-acme,livedata-nope")
    dists = {p["distribution"] for p in data["plugins"]}
    assert dists == {"livedata-core", "livedata-acme"}
    assert any("livedata-nope" in e["name"] and "not installed" in e["error"] for e in data["errors"])
    data = _plugins_json(site, LIVEDATA_LOAD_PLUGINS="")
    assert {p["distribution"] for p in data["plugins"]} == {"livedata-core"}
    data = _plugins_json(site, LIVEDATA_DISABLED_PLUGINS="acme")
    assert "livedata-acme" not in {p["distribution"] for p in data["plugins"]}


def test_a_plugin_name_in_load_plugins_points_to_its_distribution(site):
    data = _plugins_json(site, LIVEDATA_LOAD_PLUGINS="acme")  # the entry-point name, not the distribution
    assert {p["distribution"] for p in data["plugins"]} == {"livedata-core"}
    (error,) = [e for e in data["errors"] if e["name"] == "acme"]
    assert "not installed" not in error["error"]
    assert "takes distribution names" in error["error"]
    assert "`acme` is the plugin of distribution `livedata-acme`" in error["error"]
    assert error["distribution"] == "livedata-acme"


class TwoBrokers:
    """Two plugins implementing the same hook: each call must reach only its own broker."""

    class Alpha:
        __name__ = "alpha"

        @hookimpl
        def broker_info(self):
            return BrokerInfo(name="alpha", capabilities={"fetch_positions"})

        @hookimpl
        async def fetch_positions(self, ctx, account_id):
            return ["alpha:" + account_id]

    class Beta:
        __name__ = "beta"

        @hookimpl
        def broker_info(self):
            return BrokerInfo(name="beta", capabilities=set())


def test_calls_are_scoped_to_one_broker_and_capabilities_enforced():
    alpha, beta = TwoBrokers.Alpha(), TwoBrokers.Beta()
    a = plugins.register_plugin(alpha, "alpha-test")
    b = plugins.register_plugin(beta, "beta-test")
    try:
        ctx = a.make_context()
        assert asyncio.run(a.call("fetch_positions", ctx=ctx, account_id="1")) == ["alpha:1"]
        with pytest.raises(NotSupported, match="beta"):
            asyncio.run(b.call("fetch_positions", ctx=b.make_context(), account_id="1"))
    finally:
        plugins.unregister_plugin(alpha)
        plugins.unregister_plugin(beta)
    with pytest.raises(ConfigError, match="installed brokers: .*demo"):
        plugins.get_broker("alpha")


def test_register_refuses_bad_plugins():
    class Bad:
        @hookimpl
        def broker_info(self):
            return BrokerInfo(name="bad", capabilities={"stream"})

    with pytest.raises(PluginError, match="does not implement"):
        plugins.register_plugin(Bad(), "bad-test")
    with pytest.raises(PluginError, match="not allowed"):
        BrokerInfo(name="Bad Name", capabilities=set())
    with pytest.raises(PluginError, match="unknown capabilities"):
        BrokerInfo(name="x", capabilities={"teleport"})
