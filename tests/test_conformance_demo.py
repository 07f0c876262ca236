"""The built-in demo broker passes the conformance suite.

The demo has no network: its "server" is the process itself, so dropping the connection means ending the
live demo streams (their ``events()`` return, which the runner treats as the server closing the stream).
"""

from __future__ import annotations

import weakref

import pytest

from livedata_core.default_plugins import demo
from livedata_core.testing.conformance import ConformanceSuite


class DemoServer:
    """Tracks the demo streams that connect, so a test can cut them all."""

    def __init__(self) -> None:
        self.streams: weakref.WeakSet[demo.DemoStream] = weakref.WeakSet()
        self.connections_total = 0

    def drop(self) -> None:
        for stream in list(self.streams):
            stream.connected = False


@pytest.fixture
def conformance_broker():
    return "demo"


@pytest.fixture
def conformance_settings():
    return {"quotes_per_second": 200, "seed": 7, "order_every": 0.001, "heartbeat_timeout": 2.0}


@pytest.fixture
def conformance_symbols():
    return ["AAPL", "msft", "BRK.B"]


@pytest.fixture
def conformance_account():
    return demo.ACCOUNT


@pytest.fixture
def conformance_server(monkeypatch):
    server = DemoServer()
    connect = demo.DemoStream.connect

    async def tracked_connect(self):
        server.streams.add(self)
        server.connections_total += 1
        await connect(self)

    monkeypatch.setattr(demo.DemoStream, "connect", tracked_connect)
    return server


class TestDemoConformance(ConformanceSuite):
    pass
