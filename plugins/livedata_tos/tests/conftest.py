"""Fixtures for the core conformance suite (tests/test_conformance.py).

The tos broker is driven as in production: the real :class:`livedata_schwab.client.SchwabClient` reads the saved
Schwab login from the token store, asks a fake Schwab REST server (plain HTTP on 127.0.0.1) for
``/userPreference``, and the stream logs in to :class:`QuotingStreamer`, a :class:`livedata_tos.testing.FakeStreamer`
that keeps quoting every subscribed symbol, run in its own thread by :class:`livedata_core.testing.ServerThread`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from livedata_core.redis_io.server import free_port
from livedata_core.testing import ServerThread
from livedata_core.plugin_kit.tokens import MemoryTokenStore
from livedata_schwab.tokens import TokenRecord
from livedata_schwab.testing import FakeSchwab, _chains, _price_history
from livedata_tos.symbols import EQUITIES, FUTURES, NASDAQ_BOOK
from livedata_tos.testing import FakeStreamer, book_item, data_frame

APP_KEY = "tos-conformance-app-key"
APP_SECRET = "tos-conformance-APP-SECRET"
ACCESS_TOKEN = "tos-conformance-ACCESS-secret-0001"
REFRESH_TOKEN = "tos-conformance-REFRESH-secret"

# Short timeouts so reconnects and failures are quick; the fake quotes every 50 ms, far inside heartbeat_timeout.
FAST = {"login_timeout": 2.0, "command_timeout": 2.0, "open_timeout": 2.0, "heartbeat_timeout": 5.0,
        "connection_limit_retry": 0.2}  # fmt: skip


class QuotingStreamer(FakeStreamer):
    """A fake streamer that sends a level-one quote for every subscribed symbol (and a book for every NASDAQ_BOOK
    one) every ``interval`` seconds, as the real streamer does while the market moves (the plain fake only sends
    what a test pushes)."""

    def __init__(self, valid_tokens: Any = None, interval: float = 0.05) -> None:
        super().__init__(valid_tokens)
        self.interval = interval
        self._pump: asyncio.Task[None] | None = None
        self._ticks = itertools.count()

    async def start(self) -> "QuotingStreamer":
        await super().start()
        self._pump = asyncio.get_running_loop().create_task(self._quote_forever())
        return self

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None
        await super().stop()

    async def _quote_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            tick = next(self._ticks) % 100 / 100
            for service in (EQUITIES, FUTURES):
                keys = sorted(self.subscriptions.get(service, ()))
                if keys:
                    base = 100.0 + tick
                    content = [{"key": k, "1": base, "2": base + 0.02, "3": base + 0.01} for k in keys]
                    await self.send(data_frame(service, content))
            books = sorted(self.subscriptions.get(NASDAQ_BOOK, ()))
            if books:
                base = 100.0 + tick
                await self.send(data_frame(NASDAQ_BOOK, [book_item(k, [(base, 300, 2), (base - 0.01, 100, 1)],
                                                                    [(base + 0.02, 200, 1)]) for k in books]))  # fmt: skip


class FakeSchwabRest:
    """The Schwab REST endpoints the tos plugin uses: ``GET /trader/v1/userPreference`` (bearer token),
    ``POST /v1/oauth/token`` (refresh grant, HTTP Basic app credentials), and the market data of
    :class:`livedata_schwab.testing.FakeSchwab` (``/marketdata/v1/pricehistory`` on the wall clock,
    ``/marketdata/v1/chains``). A refresh issues a token that both this server and the streamer accept."""

    def __init__(self, streamer: FakeStreamer, valid_tokens: set[str]) -> None:
        self.streamer = streamer
        self.valid_tokens = valid_tokens  # shared with the streamer's LOGIN check
        self.requests: list[tuple[str, str]] = []
        self.issued = 1
        self.market = FakeSchwab()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """The ``[brokers.tos.schwab]`` table pointing here."""
        table = {"app_key": APP_KEY, "app_secret": APP_SECRET, "api_base_url": self.base + "/trader/v1",
                 "auth_base_url": self.base + "/v1/oauth", "request_timeout": 2.0, "retry_backoff": 0.01,
                 "retry_backoff_max": 0.05}  # fmt: skip
        table.update(overrides)
        return table

    def start(self) -> "FakeSchwabRest":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _rest_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _rest_handler(fake: FakeSchwabRest) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            fake.requests.append(("GET", path))
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            if token not in fake.valid_tokens:
                self._send(401, {"message": "Unauthorized", "errors": ["token invalid"]})
            elif path == "/trader/v1/userPreference":
                self._send(200, fake.streamer.user_preference())
            elif path in ("/marketdata/v1/pricehistory", "/marketdata/v1/chains"):
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                answer = _price_history if path.endswith("pricehistory") else _chains
                self._send(*answer(fake.market, query))
            else:
                self._send(404, {"message": "not found", "errors": []})

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            fake.requests.append(("POST", path))
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            expected = "Basic " + base64.b64encode(f"{APP_KEY}:{APP_SECRET}".encode()).decode()
            if path != "/v1/oauth/token":
                self._send(404, {"message": "not found"})
            elif self.headers.get("Authorization") != expected:
                self._send(401, {"error": "invalid_client", "error_description": "Unauthorized"})
            elif form.get("grant_type") != "refresh_token" or form.get("refresh_token") != REFRESH_TOKEN:
                self._send(400, {"error": "invalid_grant", "error_description": "refresh_token_authentication_error"})
            else:
                fake.issued += 1
                token = f"tos-conformance-ACCESS-secret-{fake.issued:04d}"
                fake.valid_tokens.add(token)
                self._send(200, {"access_token": token, "refresh_token": REFRESH_TOKEN, "expires_in": 1800,
                                 "token_type": "Bearer", "scope": "api"})  # fmt: skip

    return Handler


def saved_login(store: MemoryTokenStore | None = None, *, access_token: str = ACCESS_TOKEN,
                expires_in_s: float = 1800) -> MemoryTokenStore:  # fmt: skip
    """A token store holding a Schwab login (as after `livedata auth schwab`) under the key ``schwab``."""
    store = store or MemoryTokenStore()
    now = time.time()
    record = TokenRecord(access_token=access_token, refresh_token=REFRESH_TOKEN,
                         access_expires_at=int((now + expires_in_s) * 1000), refresh_issued_at=int(now * 1000),
                         scope="api")  # fmt: skip
    store.save("schwab", record.to_dict())
    return store


@pytest.fixture(autouse=True)
def schwab_app_credentials(monkeypatch):
    """The Schwab app key and secret in the environment, as a user has them (tests that need them absent
    delete them)."""
    monkeypatch.setenv("LIVEDATA_SCHWAB_APP_KEY", "env-app-key")
    monkeypatch.setenv("LIVEDATA_SCHWAB_APP_SECRET", "env-app-SECRET")


@pytest.fixture
def tos_fakes(monkeypatch, tmp_path) -> Iterator[tuple[ServerThread, FakeSchwabRest]]:
    """``(streamer, rest)``: a quoting fake streamer in its own thread and the fake Schwab REST server."""
    monkeypatch.setenv("LIVEDATA_TOKEN_DIR", str(tmp_path / "token-dir"))  # refresh lock files stay here
    monkeypatch.delenv("LIVEDATA_SCHWAB_APP_KEY", raising=False)
    monkeypatch.delenv("LIVEDATA_SCHWAB_APP_SECRET", raising=False)
    valid = {ACCESS_TOKEN}
    with ServerThread(QuotingStreamer(valid_tokens=valid)) as streamer:
        streamer.server.valid_tokens = valid  # FakeStreamer copies the set; share it with the REST fake
        rest = FakeSchwabRest(streamer.server, valid).start()
        try:
            yield streamer, rest
        finally:
            rest.stop()


# -- the conformance fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def conformance_broker():
    return "tos"


@pytest.fixture
def conformance_server(tos_fakes):
    return tos_fakes[0]


@pytest.fixture
def conformance_settings(tos_fakes):
    # No streamer_url: the stream connects where /userPreference's streamerInfo says, as in production.
    return {"schwab": tos_fakes[1].settings(), **FAST}


@pytest.fixture
def conformance_token_store():
    return saved_login()


@pytest.fixture
def conformance_symbols():
    return ["AAPL", "msft", "/es", "$SPX"]


@pytest.fixture
def conformance_secrets():
    return [ACCESS_TOKEN, REFRESH_TOKEN, APP_SECRET]


@pytest.fixture
def conformance_invalid_symbols():
    # The suite's defaults plus what is no Schwab symbol of any asset class: a futures option without its strike,
    # an option symbol cut short.
    return ["", "AAPL*", "A?B", "./ESZ24C", "AAPL  2406C001"]


@pytest.fixture
def conformance_refused_symbols(tos_fakes):
    """An option contract that does not exist: the fake streamer refuses its ADD (code 24)."""
    tos_fakes[0].server.unknown_symbols = {"AAPL  240621C09990000"}
    return ["AAPL  240621C09990000"]


@pytest.fixture
def conformance_unreachable_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("LIVEDATA_TOKEN_DIR", str(tmp_path / "token-dir"))
    port = free_port()  # nobody listens there
    schwab = {"app_key": APP_KEY, "app_secret": APP_SECRET, "api_base_url": f"http://127.0.0.1:{port}/trader/v1",
              "auth_base_url": f"http://127.0.0.1:{port}/v1/oauth", "request_timeout": 1.0, "max_retries": 0}  # fmt: skip
    return {"schwab": schwab, "streamer_url": f"ws://127.0.0.1:{port}/ws", **FAST}


@pytest.fixture
def conformance_bad_credentials(tos_fakes):
    """An app secret the fake token endpoint refuses (the suite runs this with no saved login as well)."""
    return {"schwab": tos_fakes[1].settings(app_secret="not-the-APP-SECRET"), **FAST}


@pytest.fixture
def conformance_bar_symbols():
    # The fake streamer answers a chart ADD with the last completed bar; /pricehistory holds the last minutes.
    return ["AAPL", "/ES"]


@pytest.fixture
def conformance_depth_symbols():
    return ["AAPL", "MSFT"]


@pytest.fixture
def conformance_chain_underlying():
    return "AAPL"


@pytest.fixture
def conformance_unknown_underlying():
    return "NOPE"


@pytest.fixture
def conformance_timeout():
    return 5.0


@pytest.fixture
def make_saved_login():
    """``make_saved_login(access_token=..., expires_in_s=...)``: a store holding a Schwab login."""
    return saved_login
