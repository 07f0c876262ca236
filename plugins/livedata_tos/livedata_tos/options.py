"""Level-one quotes of options, futures options and forex: LEVELONE_OPTIONS, LEVELONE_FUTURES_OPTIONS and
LEVELONE_FOREX, merged from deltas like the equity and futures quotes of :mod:`livedata_tos.quotes`.

Options and futures options become :class:`~livedata_core.models.OptionQuote` (every quote field plus open
interest, implied volatility, the Greeks, theoretical value, underlying price and the contract's terms); forex
pairs plain :class:`~livedata_core.models.Quote`. The streamer sends only the fields that changed (CHANGE
delivery), so :class:`LevelOneBook` keeps the last value of every field per symbol in a dict that lives with the
broker instance (the session's), and each item yields the complete quote.

Field numbers (Schwab Streamer Guide; schwab-py's and Schwabdev's field enums agree):

- LEVELONE_OPTIONS: 2 bid, 3 ask, 4 last, 5 high, 6 low, 7 close, 8 volume, 9 open interest, 10 volatility
  (implied, in percent: published as a fraction, 28.4 -> 0.284), 13 multiplier, 15 open, 16 bid size, 17 ask size, 18 last size, 20 strike, 21 contract
  type (C/P), 22 underlying, 28 delta, 29 gamma, 30 theta, 31 vega, 32 rho, 34 theoretical value, 35 underlying
  price, 37 mark, 38 quote time ms, 39 trade time ms.
- LEVELONE_FUTURES_OPTIONS: 1 bid, 2 ask, 3 last, 4 bid size, 5 ask size, 8 volume, 9 last size, 10 quote time
  ms, 11 trade time ms, 12 high, 13 low, 14 close, 17 open, 18 open interest, 19 mark, 22 multiplier, 24
  underlying symbol, 25 strike, 26 expiration ms, 28 contract type (C/P). No Greeks: Schwab streams none for
  futures options.
- LEVELONE_FOREX: 1 bid, 2 ask, 3 last, 4 bid size, 5 ask size, 6 volume, 7 last size, 8 quote time ms,
  9 trade time ms, 10 high, 11 low, 12 close, 15 open, 29 mark.
"""

from __future__ import annotations

import datetime
import math
from typing import Any
from zoneinfo import ZoneInfo

from livedata_core.models import Quote, make_option_quote, make_quote
from livedata_core.plugin_kit.streaming import StreamStats

from .symbols import FOREX, FUTURES_OPTIONS, OPTIONS, option_terms
from .wanted import WantedSymbols

__all__ = ["LEVELONE_FIELDS", "LevelOneBook", "request_fields"]

_F, _T, _S = "f", "t", "s"  # a finite number; a time in ms (int > 0); a string

LEVELONE_FIELDS: dict[str, dict[str, tuple[str, str]]] = {
    OPTIONS: {
        "2": ("bid", _F), "3": ("ask", _F), "4": ("last", _F), "5": ("high", _F), "6": ("low", _F),
        "7": ("close", _F), "8": ("volume", _F), "9": ("open_interest", _F), "10": ("implied_volatility", _F),
        "13": ("multiplier", _F), "15": ("open", _F), "16": ("bid_size", _F), "17": ("ask_size", _F),
        "18": ("last_size", _F), "20": ("strike", _F), "21": ("contract_type", _S), "22": ("underlying", _S),
        "28": ("delta", _F), "29": ("gamma", _F), "30": ("theta", _F), "31": ("vega", _F), "32": ("rho", _F),
        "34": ("theoretical_value", _F), "35": ("underlying_price", _F), "37": ("mark", _F),
        "38": ("quote_time", _T), "39": ("trade_time", _T),
    },
    FUTURES_OPTIONS: {
        "1": ("bid", _F), "2": ("ask", _F), "3": ("last", _F), "4": ("bid_size", _F), "5": ("ask_size", _F),
        "8": ("volume", _F), "9": ("last_size", _F), "10": ("quote_time", _T), "11": ("trade_time", _T),
        "12": ("high", _F), "13": ("low", _F), "14": ("close", _F), "17": ("open", _F),
        "18": ("open_interest", _F), "19": ("mark", _F), "22": ("multiplier", _F), "24": ("underlying", _S),
        "25": ("strike", _F), "26": ("expiration_time", _T), "28": ("contract_type", _S),
    },
    FOREX: {
        "1": ("bid", _F), "2": ("ask", _F), "3": ("last", _F), "4": ("bid_size", _F), "5": ("ask_size", _F),
        "6": ("volume", _F), "7": ("last_size", _F), "8": ("quote_time", _T), "9": ("trade_time", _T),
        "10": ("high", _F), "11": ("low", _F), "12": ("close", _F), "15": ("open", _F), "29": ("mark", _F),
    },
}  # fmt: skip

META_KEYS = frozenset({"key", "0", "assetMainType", "assetSubType", "cusip", "delayed"})
_MAX_INT = 2**63
_NO_VALUE = -999.0  # Schwab's "not computed" for the Greeks, volatility and theoretical value
_ANALYTICS = frozenset({"implied_volatility", "delta", "gamma", "theta", "vega", "rho", "theoretical_value"})
_EXCHANGE_TZ = ZoneInfo("America/New_York")


def request_fields(service: str) -> str:
    """The ``fields`` parameter for a service: 0 (the symbol) and every field we map, ascending."""
    return ",".join(["0", *sorted(LEVELONE_FIELDS[service], key=int)])


def _contract(symbol: str) -> dict[str, Any]:
    """The terms an OCC option symbol carries, as the state's first values (fields that arrive win)."""
    terms = option_terms(symbol)
    if terms is None:
        return {}
    underlying, expiration, put_call, strike = terms
    return {"underlying": underlying, "expiration": expiration, "put_call": put_call, "strike": strike}


class LevelOneBook(WantedSymbols):
    """Per-symbol state of LEVELONE_OPTIONS, LEVELONE_FUTURES_OPTIONS and LEVELONE_FOREX, merged from deltas.

    Same rules as :class:`~livedata_tos.quotes.QuoteBook`: only :meth:`want` symbols yield quotes, a
    :meth:`mute` symbol is merged but yields nothing, nothing is yielded until a symbol has a price, a bid or
    ask of 0 with size 0 is "none" (null), an open, high, low, close or mark of 0 is "not known yet" (null).
    A Greek, volatility or theoretical value of -999 is Schwab's "not computed" and published as null. The implied
    volatility Schwab sends in percent is published as a fraction (28.4 -> 0.284), as every broker's is.

    :param states: symbol -> merged fields; pass one that lives with the broker instance so the first quote
        after a reconnect is as complete as the last before it.
    """

    def __init__(self, broker: str, stats: StreamStats, states: dict[str, dict[str, Any]] | None = None) -> None:
        self.broker = broker
        self.stats = stats
        super().__init__()
        self._state: dict[str, dict[str, Any]] = states if states is not None else {}

    def state(self, symbol: str) -> dict[str, Any] | None:
        """The merged fields of a symbol (diagnostics and tests)."""
        s = self._state.get(symbol)
        return dict(s) if s is not None else None

    # {"data":[{"service":"LEVELONE_OPTIONS","timestamp":1715908546054,"command":"SUBS","content":[
    #   {"key":"AAPL  261218C00200000","delayed":false,"assetMainType":"OPTION","cusip":"0AAPL.LI60200000",
    #    "2":12.5,"3":12.75,"4":12.6,"9":1520,"10":28.4,"28":0.55,"29":0.012,"30":-0.03,"31":0.41,"32":0.2,
    #    "35":205.1}]}]}  and later deltas such as {"key":"AAPL  261218C00200000","2":12.55,"28":0.56}
    def apply(self, service: str, content: Any, envelope_ts: Any, received_at: int) -> list[Quote]:
        """Merge one ``data`` entry's ``content``; one complete quote per item of a wanted symbol."""
        fields = LEVELONE_FIELDS[service]
        if type(content) is not list:
            self.stats.skip("level-one content is not a list", content)
            return []
        fallback_ts = envelope_ts if type(envelope_ts) is int and envelope_ts > 0 else None
        out: list[Quote] = []
        for item in content:
            if type(item) is not dict:
                self.stats.skip("level-one item is not an object", item)
                continue
            symbol = item.get("key")
            if type(symbol) is not str:
                self.stats.skip("level-one item without a string key", symbol)
                continue
            if symbol not in self._wanted:
                self.stats.skip("level-one data for a symbol not subscribed", symbol)
                continue
            try:
                quote = self._merge(service, fields, symbol, item, fallback_ts, received_at)
            except Exception as exc:  # one bad item must not cost the others in the frame
                self.stats.skip("level-one item could not be parsed", f"{symbol}: {type(exc).__name__}: {exc}")
                continue
            if quote is not None and symbol not in self._muted:
                out.append(quote)
        return out

    def _merge(self, service: str, fields: dict[str, tuple[str, str]], symbol: str, item: dict[str, Any],
               fallback_ts: int | None, received_at: int) -> Quote | None:  # fmt: skip
        state = self._state.get(symbol)
        if state is None:
            state = self._state[symbol] = _contract(symbol) if service == OPTIONS else {}
        for k, v in item.items():
            spec = fields.get(k)
            if spec is None:
                if k == "delayed" and type(v) is bool:
                    state["delayed"] = v
                elif k not in META_KEYS:
                    self.stats.skip(f"{service} unknown field", k)
                continue
            name, kind = spec
            tv = type(v)
            if kind == _F and (tv is float or tv is int) and math.isfinite(v) and -_MAX_INT < v < _MAX_INT:
                state[name] = None if v == _NO_VALUE and name in _ANALYTICS else float(v)
            elif kind == _T and tv is int and 0 < v < _MAX_INT:
                state[name] = v
            elif kind == _S and tv is str and v:
                state[name] = v
            else:
                self.stats.skip(f"{service} bad value", (symbol, k, v))
        get = state.get
        bid, ask, last, mark, close = get("bid"), get("ask"), get("last"), get("mark"), get("close")
        if bid is None and ask is None and last is None and not mark and not close:
            return None
        qt, tt = get("quote_time"), get("trade_time")
        if qt is None:
            ts = tt if tt is not None else fallback_ts
        else:
            ts = qt if tt is None or qt >= tt else tt
        bid_size, ask_size = get("bid_size"), get("ask_size")
        if bid == 0 and bid_size == 0:
            bid = None
        if ask == 0 and ask_size == 0:
            ask = None
        extra = {"delayed": True} if get("delayed") else None
        if service == FOREX:
            # make_quote takes every Quote field positionally, in this order.
            return make_quote(self.broker, symbol, bid, ask, last, get("volume"), bid_size, ask_size,
                              get("last_size"), get("open") or None, get("high") or None, get("low") or None,
                              close or None, mark or None, ts, received_at, extra)  # fmt: skip
        put_call = get("put_call")
        contract_type = get("contract_type")
        if contract_type == "C" or contract_type == "P":
            put_call = "call" if contract_type == "C" else "put"
        expiration = get("expiration")
        if expiration is None and get("expiration_time") is not None:
            expiration = _iso_date(get("expiration_time"))
        iv = get("implied_volatility")
        if iv is not None:
            iv /= 100  # Schwab's percent; a fraction on the channel
        # make_option_quote takes every OptionQuote field positionally, in this order.
        return make_option_quote(
            self.broker, symbol, bid, ask, last, get("volume"), bid_size, ask_size, get("last_size"),
            get("open") or None, get("high") or None, get("low") or None, close or None, mark or None,
            get("open_interest"), iv, get("delta"), get("gamma"), get("theta"), get("vega"),
            get("rho"), get("theoretical_value"), get("underlying_price") or None, get("strike"), expiration,
            put_call, get("multiplier") or None, get("underlying"), ts, received_at, extra,
        )  # fmt: skip


def _iso_date(ms: int) -> str:
    """The exchange-local (US Eastern) date of a time in ms, as ``YYYY-MM-DD``."""
    return datetime.datetime.fromtimestamp(ms / 1000, _EXCHANGE_TZ).date().isoformat()
