"""Fixtures for the Example plugin's tests: a live Example exchange and the conformance suite's settings."""

import pytest

from livedata_core.plugin_kit.tokens import MemoryTokenStore, save_credentials
from livedata_core.redis_io.server import free_port
from livedata_core.testing import ServerThread
from livedata_example.exchange import Exchange

API_KEY = "test-key-3f9c1a77"
BAD_KEY = "not-the-key-5d2e"  # one the exchange rejects, as secret as the good one


def stored_key(api_key):
    """A token store holding ``api_key`` as `livedata auth example` stores it."""
    store = MemoryTokenStore()
    save_credentials(store, "example", {"api_key": api_key})
    return store


@pytest.fixture
def tokens():
    """The test API key, stored as `livedata auth example` stores it."""
    return stored_key(API_KEY)


@pytest.fixture
def exchange():
    with ServerThread(Exchange(api_key=API_KEY)) as server:
        yield server


@pytest.fixture
def conformance_broker():
    return "example"


@pytest.fixture
def conformance_server(exchange):
    return exchange


@pytest.fixture
def conformance_settings(exchange):
    return {"url": exchange.url}


@pytest.fixture
def conformance_token_store(tokens):
    return tokens


@pytest.fixture
def conformance_symbols():
    return ["AAPL", "msft"]


@pytest.fixture
def conformance_refused_symbols():
    return ["ZZZZ"]


@pytest.fixture
def conformance_account():
    return "ACC-1"


@pytest.fixture
def conformance_secrets():
    return [API_KEY, BAD_KEY]


@pytest.fixture
def conformance_unreachable_settings():
    return {"url": f"http://127.0.0.1:{free_port()}"}


@pytest.fixture
def conformance_bad_credentials(exchange):
    return {"url": exchange.url}


@pytest.fixture
def conformance_bad_token_store():
    return stored_key(BAD_KEY)
