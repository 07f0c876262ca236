"""The fake Schwab of :mod:`livedata_schwab.testing` over real HTTPS (trustme certificate): OAuth authorize and
token endpoints and the Trader API answering with the shapes of Schwab's OpenAPI spec."""

from __future__ import annotations

import ssl

import pytest
import trustme

from livedata_core.plugin_kit.tokens import MemoryTokenStore
from livedata_schwab.settings import SchwabSettings
from livedata_schwab.testing import APP_KEY, APP_SECRET, FakeSchwab, FakeSchwabServer


@pytest.fixture(scope="session")
def ca():
    return trustme.CA()


@pytest.fixture
def fake_schwab(ca, tmp_path):
    fake = FakeSchwab()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    fake.ca_file = str(tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(fake.ca_file)
    with FakeSchwabServer(fake, context):
        yield fake


@pytest.fixture
def settings_for(fake_schwab, monkeypatch, tmp_path):
    """``settings_for(**overrides)``: SchwabSettings pointing at the fake, credentials from the environment."""
    monkeypatch.setenv("LIVEDATA_TOKEN_DIR", str(tmp_path / "token-dir"))  # lock files never in the real home
    monkeypatch.setenv("LIVEDATA_SCHWAB_APP_KEY", APP_KEY)
    monkeypatch.setenv("LIVEDATA_SCHWAB_APP_SECRET", APP_SECRET)

    def make(**overrides) -> SchwabSettings:
        values = dict(
            api_base_url=fake_schwab.base + "/trader/v1",
            auth_base_url=fake_schwab.base + "/v1/oauth",
            ca_file=fake_schwab.ca_file,
            callback_url=f"https://127.0.0.1:{free_port()}",
            open_browser=False,
            login_timeout=10.0,
            retry_backoff=0.01,
            retry_backoff_max=0.05,
        )
        values.update(overrides)
        return SchwabSettings(**values)

    return make


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def saved_tokens(fake_schwab):
    """``saved_tokens(store=None, expires_in_s=1800, issued_days_ago=0)``: a store holding accepted tokens."""
    return lambda *a, **kw: _saved_tokens(fake_schwab, *a, **kw)


def _saved_tokens(fake: FakeSchwab, store=None, *, expires_in_s: float = 1800, issued_days_ago: float = 0.0):
    """A store holding tokens the fake accepts, as after a login."""
    store = store or MemoryTokenStore()
    store.save("schwab", fake.saved_tokens(expires_in_s=expires_in_s, issued_days_ago=issued_days_ago))
    return store


# -- the core conformance suite (tests/test_conformance.py) --------------------------------------------------
# Schwab does not stream (quotes come from the tos plugin), so no server/symbols fixtures: the suite skips the
# stream tests. Fetches go through the real client over HTTPS to the fake Schwab above.

CONFORMANCE_ACCOUNT = "12345678"


def _conformance_table(fake: FakeSchwab, **overrides) -> dict:
    """A ``[brokers.schwab]`` table pointing at ``fake`` (credentials in the table, not the environment)."""
    table = {
        "app_key": APP_KEY,
        "app_secret": APP_SECRET,
        "api_base_url": fake.base + "/trader/v1",
        "auth_base_url": fake.base + "/v1/oauth",
        "ca_file": fake.ca_file,
        "open_browser": False,
        "request_timeout": 2.0,
        "retry_backoff": 0.01,
        "retry_backoff_max": 0.05,
    }
    table.update(overrides)
    return table


@pytest.fixture
def _conformance_env(monkeypatch, tmp_path):
    # Token lock files in the test's directory, and no credentials leaking in from the environment: the
    # tables below carry their own.
    monkeypatch.setenv("LIVEDATA_TOKEN_DIR", str(tmp_path / "token-dir"))
    monkeypatch.delenv("LIVEDATA_SCHWAB_APP_KEY", raising=False)
    monkeypatch.delenv("LIVEDATA_SCHWAB_APP_SECRET", raising=False)


@pytest.fixture
def conformance_broker():
    return "schwab"


@pytest.fixture
def conformance_settings(fake_schwab, _conformance_env):
    return _conformance_table(fake_schwab)


@pytest.fixture
def conformance_token_store(fake_schwab):
    """Tokens the fake accepts, as after `livedata auth schwab`."""
    return _saved_tokens(fake_schwab)


@pytest.fixture
def conformance_account():
    return CONFORMANCE_ACCOUNT


@pytest.fixture
def conformance_secrets(fake_schwab, conformance_token_store):
    saved = conformance_token_store.load("schwab")
    return [saved["access_token"], saved["refresh_token"], APP_SECRET]


@pytest.fixture
def conformance_unreachable_settings(_conformance_env):
    port = free_port()  # nobody listens there
    return {
        "app_key": APP_KEY,
        "app_secret": APP_SECRET,
        "api_base_url": f"https://127.0.0.1:{port}/trader/v1",
        "auth_base_url": f"https://127.0.0.1:{port}/v1/oauth",
        "request_timeout": 1.0,
        "max_retries": 0,
    }


@pytest.fixture
def conformance_bad_credentials(fake_schwab, _conformance_env):
    """An app secret the fake's token endpoint refuses (and, as the suite runs it, no saved login)."""
    return _conformance_table(fake_schwab, app_secret="W" * 16)


@pytest.fixture
def conformance_timeout():
    return 5.0
