"""Fixtures for the Example plugin's tests: a live Example exchange and the conformance suite's settings."""

import pytest

from livedata_core.redis_io.server import free_port
from livedata_core.testing import ServerThread
from livedata_example.exchange import Exchange

API_KEY = "test-key-3f9c1a77"


@pytest.fixture
def api_key():
    return API_KEY


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
    return {"url": exchange.url, "api_key": API_KEY}


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
    return [API_KEY]


@pytest.fixture
def conformance_unreachable_settings():
    return {"url": f"http://127.0.0.1:{free_port()}", "api_key": API_KEY}


@pytest.fixture
def conformance_bad_credentials(exchange):
    return {"url": exchange.url, "api_key": "not-the-key"}
