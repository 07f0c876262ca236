"""A fake Schwab over real HTTPS (trustme certificate): OAuth authorize and token endpoints and the Trader API
answering with the shapes of Schwab's OpenAPI spec."""

from __future__ import annotations

import base64
import copy
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import trustme

from livedata_core.tokens import MemoryTokenStore
from livedata_schwab.settings import SchwabSettings

APP_KEY = "K" * 32
APP_SECRET = "S" * 16
CODE = "C0.b2F1dGgyLmJkYy5zY2h3YWIuY29t.fakeCode@"
HASH_MARGIN = "A" * 64
HASH_CASH = "B" * 64

ACCOUNT_NUMBERS = [
    {"accountNumber": "12345678", "hashValue": HASH_MARGIN},
    {"accountNumber": "87654321", "hashValue": HASH_CASH},
]

MARGIN_ACCOUNT = {
    "securitiesAccount": {
        "type": "MARGIN",
        "accountNumber": "12345678",
        "roundTrips": 0,
        "isDayTrader": False,
        "isClosingOnlyRestricted": False,
        "pfcbFlag": False,
        "positions": [
            {
                "shortQuantity": 0.0,
                "averagePrice": 150.12,
                "currentDayProfitLoss": 12.5,
                "longQuantity": 10.0,
                "instrument": {"assetType": "EQUITY", "cusip": "037833100", "symbol": "AAPL"},
                "marketValue": 1701.2,
                "longOpenProfitLoss": 200.0,
            },
            {
                "shortQuantity": 5.0,
                "averagePrice": 400.0,
                "longQuantity": 0.0,
                "instrument": {"assetType": "EQUITY", "symbol": "TSLA"},
                "marketValue": -1000.0,
                "shortOpenProfitLoss": 1000.0,
            },
        ],
        "initialBalances": {"cashBalance": 900.0, "liquidationValue": 24000.0, "accountValue": 24000.0},
        "currentBalances": {
            "availableFunds": 12000.0,
            "buyingPower": 24000.0,
            "dayTradingBuyingPower": 0.0,
            "equity": 25000.0,
            "maintenanceRequirement": 1000.0,
            "cashBalance": 1000.0,
            "liquidationValue": 25000.0,
        },
        "projectedBalances": {"buyingPower": 24000.0},
    },
    "aggregatedBalance": {"currentLiquidationValue": 25000.0, "liquidationValue": 25000.0},
}

CASH_ACCOUNT = {
    "securitiesAccount": {
        "type": "CASH",
        "accountNumber": "87654321",
        "roundTrips": 0,
        "isDayTrader": False,
        "positions": [],
        "initialBalances": {"cashBalance": 5000.0, "liquidationValue": 6700.0, "accountValue": 6700.0},
        "currentBalances": {
            "cashAvailableForTrading": 4800.0,
            "cashAvailableForWithdrawal": 4800.0,
            "totalCash": 5000.0,
            "unsettledCash": 200.0,
            "longNonMarginableMarketValue": 1700.0,
        },
        "projectedBalances": {"cashAvailableForTrading": 4800.0},
    },
    "aggregatedBalance": {"currentLiquidationValue": 6700.0, "liquidationValue": 6700.0},
}

ORDERS = [
    {
        "session": "NORMAL",
        "duration": "DAY",
        "orderType": "LIMIT",
        "complexOrderStrategyType": "NONE",
        "quantity": 10.0,
        "filledQuantity": 4.0,
        "remainingQuantity": 6.0,
        "price": 150.0,
        "orderLegCollection": [
            {
                "orderLegType": "EQUITY",
                "legId": 1,
                "instrument": {"assetType": "EQUITY", "cusip": "037833100", "symbol": "AAPL", "instrumentId": 1973757747},
                "instruction": "BUY",
                "positionEffect": "OPENING",
                "quantity": 10.0,
            }
        ],
        "orderStrategyType": "SINGLE",
        "orderId": 1000001,
        "cancelable": True,
        "editable": True,
        "status": "WORKING",
        "enteredTime": "2024-03-29T14:30:00+0000",
        "accountNumber": 12345678,
        "orderActivityCollection": [
            {
                "activityType": "EXECUTION",
                "executionType": "FILL",
                "quantity": 4.0,
                "orderRemainingQuantity": 6.0,
                "executionLegs": [{"legId": 1, "quantity": 4.0, "price": 149.95, "time": "2024-03-29T14:31:02+0000"}],
            }
        ],
    },
    {
        "session": "NORMAL",
        "duration": "GOOD_TILL_CANCEL",
        "orderType": "STOP",
        "quantity": 5.0,
        "filledQuantity": 0.0,
        "remainingQuantity": 0.0,
        "stopPrice": 380.0,
        "orderLegCollection": [
            {"orderLegType": "EQUITY", "legId": 1, "instrument": {"assetType": "EQUITY", "symbol": "TSLA"}, "instruction": "BUY_TO_COVER", "quantity": 5.0}
        ],
        "orderStrategyType": "SINGLE",
        "orderId": 1000002,
        "status": "CANCELED",
        "enteredTime": "2024-03-28T14:30:00+0000",
        "closeTime": "2024-03-28T15:00:00+0000",
        "accountNumber": 12345678,
    },
]

TRANSACTIONS = [
    {
        "activityId": 95512265692,
        "time": "2024-03-29T14:31:02+0000",
        "accountNumber": "12345678",
        "type": "TRADE",
        "status": "VALID",
        "subAccount": "CASH",
        "tradeDate": "2024-03-29T14:31:02+0000",
        "positionId": 2650573610,
        "orderId": 1000001,
        "netAmount": -600.8,
        "activityType": "EXECUTION",
        "transferItems": [
            {"instrument": {"assetType": "CURRENCY", "symbol": "CURRENCY_USD"}, "amount": 0.0, "cost": -1.0, "feeType": "COMMISSION"},
            {"instrument": {"assetType": "EQUITY", "symbol": "AAPL"}, "amount": 4.0, "cost": -599.8, "price": 149.95, "positionEffect": "OPENING"},
        ],
    },
    {
        "activityId": 95512265700,
        "time": "2024-03-30T10:00:00+0000",
        "accountNumber": "12345678",
        "type": "DIVIDEND_OR_INTEREST",
        "status": "VALID",
        "description": "ORDINARY DIVIDEND",
        "netAmount": 2.4,
        "activityType": "TRANSFER",
        "transferItems": [{"instrument": {"assetType": "EQUITY", "symbol": "AAPL"}, "amount": 2.4}],
    },
]

USER_PREFERENCE = {
    "accounts": [{"accountNumber": "12345678", "primaryAccount": True, "type": "BROKERAGE", "nickName": "Individual"}],
    "streamerInfo": [
        {
            "streamerSocketUrl": "wss://streamer-api.schwab.com/ws",
            "schwabClientCustomerId": "c" * 64,
            "schwabClientCorrelId": "11111111-2222-3333-4444-555555555555",
            "schwabClientChannel": "N9",
            "schwabClientFunctionId": "APIAPP",
        }
    ],
    "offers": [{"level2Permissions": True, "mktDataPermission": "NP"}],
}


class FakeSchwab:
    """State of the fake Schwab. Tests script responses with :meth:`script` and inspect :attr:`requests`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.valid_code = CODE
        self.refresh_token = "RT-secret-refresh-0001"
        self.access_tokens: set[str] = set()
        self.issued = 0
        self.refreshes = 0
        self.refresh_delay = 0.0
        self.expires_in = 1800
        self.requests: list[dict] = []
        self.scripts: dict[str, list[tuple[int, dict, object]]] = {}
        self.base = ""
        self.routes = {
            "/trader/v1/accounts/accountNumbers": ACCOUNT_NUMBERS,
            "/trader/v1/accounts": [copy.deepcopy(MARGIN_ACCOUNT), copy.deepcopy(CASH_ACCOUNT)],
            f"/trader/v1/accounts/{HASH_MARGIN}": MARGIN_ACCOUNT,
            f"/trader/v1/accounts/{HASH_CASH}": CASH_ACCOUNT,
            f"/trader/v1/accounts/{HASH_MARGIN}/orders": ORDERS,
            f"/trader/v1/accounts/{HASH_CASH}/orders": [],
            f"/trader/v1/accounts/{HASH_MARGIN}/transactions": TRANSACTIONS,
            f"/trader/v1/accounts/{HASH_CASH}/transactions": [],
            "/trader/v1/userPreference": USER_PREFERENCE,
        }

    def script(self, path: str, *responses: tuple[int, dict, object]) -> None:
        """Answer the next requests to ``path`` with these (status, headers, body) before the defaults."""
        self.scripts.setdefault(path, []).extend(responses)

    def issue(self) -> dict:
        with self.lock:
            self.issued += 1
            token = f"AT-secret-access-{self.issued:04d}"
            self.access_tokens = {token}  # a new token invalidates the old ones, as at Schwab
        return {
            "expires_in": self.expires_in,
            "token_type": "Bearer",
            "scope": "api",
            "refresh_token": self.refresh_token,
            "access_token": token,
            "id_token": "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.e30.sig",
        }

    def api_requests(self, path_part: str) -> list[dict]:
        return [r for r in self.requests if path_part in r["path"]]


def _handler(fake: FakeSchwab):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def _send(self, status: int, body: object, headers: dict | None = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            fake.requests.append({"method": "GET", "path": parts.path, "query": query, "auth": self.headers.get("Authorization")})
            if parts.path == "/v1/oauth/authorize":
                target = query["redirect_uri"] + "/?" + urlencode({"code": fake.valid_code, "session": "abc-123", "state": query.get("state", "")})
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            with fake.lock:
                scripted = fake.scripts.get(parts.path)
                response = scripted.pop(0) if scripted else None
            if response is not None:
                status, headers, body = response
                self._send(status, body, headers)
                return
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            if token not in fake.access_tokens:
                self._send(401, {"message": "Unauthorized", "errors": ["token invalid"]})
                return
            if parts.path not in fake.routes:
                self._send(400, {"message": "Invalid account number", "errors": []})
                return
            self._send(200, fake.routes[parts.path])

        def do_POST(self):
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            fake.requests.append({"method": "POST", "path": parts.path, "form": form, "auth": self.headers.get("Authorization")})
            expected = "Basic " + base64.b64encode(f"{APP_KEY}:{APP_SECRET}".encode()).decode()
            if parts.path != "/v1/oauth/token":
                self._send(404, {"message": "not found"})
                return
            if self.headers.get("Authorization") != expected:
                self._send(401, {"error": "invalid_client", "error_description": "Unauthorized"})
                return
            grant = form.get("grant_type")
            if grant == "authorization_code":
                if form.get("code") != fake.valid_code:
                    self._send(400, {"error": "invalid_grant", "error_description": "Bad authorization code"})
                    return
                fake.valid_code = "used"
                self._send(200, fake.issue())
            elif grant == "refresh_token":
                time.sleep(fake.refresh_delay)
                fake.refreshes += 1
                if form.get("refresh_token") != fake.refresh_token:
                    self._send(
                        400,
                        {"error": "unsupported_token_type", "error_description": '400 Bad Request: "{"error":"refresh_token_authentication_error"}"'},
                    )
                    return
                self._send(200, fake.issue())
            else:
                self._send(400, {"error": "unsupported_grant_type"})

    return Handler


@pytest.fixture(scope="session")
def ca():
    return trustme.CA()


@pytest.fixture
def fake_schwab(ca, tmp_path):
    fake = FakeSchwab()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    fake.base = f"https://127.0.0.1:{server.server_address[1]}"
    fake.ca_file = str(tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(fake.ca_file)
    yield fake
    server.shutdown()
    server.server_close()


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
    token = fake.issue()["access_token"]
    now = time.time()
    store.save(
        "schwab",
        {
            "access_token": token,
            "refresh_token": fake.refresh_token,
            "access_expires_at": int((now + expires_in_s) * 1000),
            "refresh_issued_at": int((now - issued_days_ago * 86400) * 1000),
            "token_type": "Bearer",
            "scope": "api",
        },
    )
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
