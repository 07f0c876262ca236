"""A fake Schwab for tests: the OAuth authorize and token endpoints and the Trader API, answering with the shapes
of Schwab's OpenAPI spec, over real HTTP(S) on 127.0.0.1.

For this plugin's tests, the tos plugin's and anyone checking a livedata runner against Schwab::

    fake = FakeSchwab()                      # one Schwab login; FakeSchwab("ira") issues other tokens
    server = FakeSchwabServer(fake).start()  # plain http://127.0.0.1:PORT (loopback: livedata allows it)
    settings = fake.table()                  # a [brokers.<instance>] table pointing at it
    ...
    server.stop()

Tests script answers with :meth:`FakeSchwab.script` and inspect :attr:`FakeSchwab.requests`. A login through
the authorize URL issues the code :attr:`FakeSchwab.valid_code` once; each token grant issues a new access token
and invalidates the older ones, as Schwab does.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

__all__ = ["APP_KEY", "APP_SECRET", "FakeSchwab", "FakeSchwabServer", "account_json", "fake_candle", "option_chain_json"]

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


def fake_candle(symbol: str, start: int) -> dict:
    """The 1-minute candle of ``symbol`` starting at ``start`` (ms) in the fakes' made-up market: the same for
    every call, so a bar the fake streamer sends and the one ``/pricehistory`` answers for that minute agree."""
    minute = start // 60_000
    base = 100.0 + (int(hashlib.sha256(symbol.encode()).hexdigest()[:4], 16) % 400) + (minute % 97) / 4
    return {"open": base, "high": base + 0.75, "low": base - 0.5, "close": base + 0.25,
            "volume": 1000 + minute % 500, "datetime": start}  # fmt: skip


def option_chain_json(underlying: str, expirations: list[str], strikes: list[float], price: float = 200.0) -> dict:
    """A ``/chains`` answer: a call and a put for every expiration (``YYYY-MM-DD``) and strike."""
    def side(right: str) -> dict:
        out: dict[str, dict] = {}
        for expiration in expirations:
            key = f"{expiration}:30"
            out[key] = {}
            for strike in strikes:
                symbol = f"{underlying:<6}{expiration[2:4]}{expiration[5:7]}{expiration[8:10]}{right}{round(strike * 1000):08d}"
                out[key][f"{strike:.1f}"] = [{"putCall": "CALL" if right == "C" else "PUT", "symbol": symbol,
                                              "strikePrice": strike, "expirationDate": f"{expiration}T20:00:00.000+00:00",
                                              "multiplier": 100.0, "bidPrice": 1.0, "askPrice": 1.1}]  # fmt: skip
        return out

    return {"symbol": underlying, "status": "SUCCESS", "strategy": "SINGLE", "isDelayed": False,
            "underlyingPrice": price, "callExpDateMap": side("C"), "putExpDateMap": side("P")}  # fmt: skip


def account_json(number: str, account_type: str = "CASH", cash: float = 1000.0,
                 positions: list[dict] | None = None) -> dict:  # fmt: skip
    """A ``GET /accounts/{hash}?fields=positions`` answer for one account."""
    return {
        "securitiesAccount": {
            "type": account_type,
            "accountNumber": number,
            "positions": positions or [],
            "initialBalances": {"cashBalance": cash, "liquidationValue": cash, "accountValue": cash},
            "currentBalances": {"cashAvailableForTrading": cash, "totalCash": cash, "liquidationValue": cash},
        },
        "aggregatedBalance": {"currentLiquidationValue": cash, "liquidationValue": cash},
    }


class FakeSchwab:
    """State of one fake Schwab login. Tests script responses with :meth:`script` and inspect :attr:`requests`.

    :param label: goes into every token it issues (``AT-secret-access-<label>0001``), so two fakes never accept
        each other's tokens.
    """

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.lock = threading.Lock()
        self.valid_code = CODE
        self.refresh_token = f"RT-secret-refresh-{label}0001"
        self.access_tokens: set[str] = set()
        self.issued = 0
        self.refreshes = 0
        self.refresh_delay = 0.0
        self.expires_in = 1800
        self.requests: list[dict] = []
        self.scripts: dict[str, list[tuple[int, dict, object]]] = {}
        self.base = ""
        self.market_now_ms: Any = lambda: int(time.time() * 1000)
        """``/pricehistory`` answers only minutes that ended before this clock (set it to the fake streamer's)."""
        self.missing_minutes: set[tuple[str, int]] = set()
        """``(symbol, start ms)`` of minutes ``/pricehistory`` has no candle for (an unfillable gap)."""
        self.chains: dict[str, dict] = {
            "AAPL": option_chain_json("AAPL", ["2026-12-18", "2027-01-15"], [190.0, 195.0, 200.0, 205.0, 210.0]),
        }
        """Underlying -> ``/chains`` answer; an underlying not here is answered ``status: FAILED``."""
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
            token = f"AT-secret-access-{self.label}{self.issued:04d}"
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

    def use_accounts(self, *accounts: dict) -> None:
        """Answer with these accounts (:func:`account_json`) instead of the sample margin and cash ones; they
        have no orders or transactions."""
        for path in [p for p in self.routes if p.startswith("/trader/v1/accounts")]:
            del self.routes[path]
        numbers = []
        for account in accounts:
            number = account["securitiesAccount"]["accountNumber"]
            hash_value = hashlib.sha256(number.encode()).hexdigest().upper()
            numbers.append({"accountNumber": number, "hashValue": hash_value})
            self.routes[f"/trader/v1/accounts/{hash_value}"] = account
            self.routes[f"/trader/v1/accounts/{hash_value}/orders"] = []
            self.routes[f"/trader/v1/accounts/{hash_value}/transactions"] = []
        self.routes["/trader/v1/accounts/accountNumbers"] = numbers
        self.routes["/trader/v1/accounts"] = [copy.deepcopy(a) for a in accounts]

    def saved_tokens(self, *, expires_in_s: float = 1800, issued_days_ago: float = 0.0) -> dict:
        """A token record this fake accepts, as ``livedata auth`` saves it."""
        token = self.issue()["access_token"]
        now = time.time()
        return {
            "access_token": token,
            "refresh_token": self.refresh_token,
            "access_expires_at": int((now + expires_in_s) * 1000),
            "refresh_issued_at": int((now - issued_days_ago * 86400) * 1000),
            "token_type": "Bearer",
            "scope": "api",
        }

    def table(self, **overrides: Any) -> dict:
        """A ``[brokers.<instance>]`` table pointing at this fake (app credentials in the table); :attr:`base`
        must be set (:class:`FakeSchwabServer` does)."""
        table = {"app_key": APP_KEY, "app_secret": APP_SECRET, "api_base_url": self.base + "/trader/v1",
                 "auth_base_url": self.base + "/v1/oauth", "open_browser": False, "request_timeout": 2.0,
                 "retry_backoff": 0.01, "retry_backoff_max": 0.05}  # fmt: skip
        table.update(overrides)
        return table


def _handler(fake: FakeSchwab) -> type[BaseHTTPRequestHandler]:
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
            if parts.path == "/marketdata/v1/pricehistory":
                self._send(*_price_history(fake, query))
                return
            if parts.path == "/marketdata/v1/chains":
                self._send(*_chains(fake, query))
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


def _price_history(fake: FakeSchwab, query: dict[str, str]) -> tuple[int, object]:
    # GET /marketdata/v1/pricehistory?symbol=AAPL&periodType=day&frequencyType=minute&frequency=1
    #     &startDate=<ms>&endDate=<ms>: the candles of the minutes in [startDate, endDate] that have ended.
    symbol = query.get("symbol", "")
    try:
        start, end = int(query["startDate"]), int(query["endDate"])
    except (KeyError, ValueError):
        return 400, {"message": "startDate and endDate must be epoch milliseconds", "errors": []}
    if query.get("frequencyType") != "minute" or query.get("frequency") != "1" or not symbol:
        return 400, {"message": "this fake serves 1-minute candles only", "errors": []}
    now = fake.market_now_ms()
    first = start - start % 60_000 + (60_000 if start % 60_000 else 0)
    candles = [fake_candle(symbol, t) for t in range(first, min(end, now - 60_000) + 1, 60_000)
               if (symbol, t) not in fake.missing_minutes]  # fmt: skip
    return 200, {"symbol": symbol, "empty": not candles, "candles": candles}


def _chains(fake: FakeSchwab, query: dict[str, str]) -> tuple[int, object]:
    # GET /marketdata/v1/chains?symbol=AAPL&contractType=ALL&strikeCount=10&fromDate=...&toDate=...
    symbol = query.get("symbol", "")
    chain = fake.chains.get(symbol)
    if chain is None:
        return 200, {"symbol": symbol, "status": "FAILED", "callExpDateMap": {}, "putExpDateMap": {}}
    chain = copy.deepcopy(chain)
    low, high = query.get("fromDate", ""), query.get("toDate", "9999")
    count = int(query["strikeCount"]) if query.get("strikeCount") else None
    price = chain.get("underlyingPrice") or 0.0
    for side in ("callExpDateMap", "putExpDateMap"):
        kept = {}
        for expiration, strikes in chain[side].items():
            if not low <= expiration[:10] <= high:
                continue
            if count is not None:  # the strikeCount strikes nearest the underlying's price
                nearest = sorted(strikes, key=lambda s: (abs(float(s) - price), float(s)))[:count]
                strikes = {k: v for k, v in strikes.items() if k in nearest}
            kept[expiration] = strikes
        chain[side] = kept
    return 200, chain


class FakeSchwabServer:
    """Serves a :class:`FakeSchwab` on 127.0.0.1 and a free port in a thread: plain HTTP, or HTTPS with
    ``ssl_context`` (a server context holding the certificate of 127.0.0.1). Sets the fake's ``base``."""

    def __init__(self, fake: FakeSchwab, ssl_context: ssl.SSLContext | None = None) -> None:
        self.fake = fake
        self.ssl_context = ssl_context
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeSchwabServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.fake))
        server.daemon_threads = True
        if self.ssl_context is not None:
            server.socket = self.ssl_context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        scheme = "https" if self.ssl_context is not None else "http"
        self.fake.base = f"{scheme}://127.0.0.1:{server.server_address[1]}"
        return self

    def stop(self) -> None:
        """Stop answering and close the port (a later request is refused: Schwab is unreachable)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeSchwabServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
