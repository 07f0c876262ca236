"""Schwab Market Data JSON to livedata: ``/pricehistory`` candles to bars, ``/chains`` to option symbols.

Used by the tos plugin's ``fetch_bars`` (the bars a reconnect or an outage missed) and ``option_chain`` hooks.
A candle that cannot be read is logged and left out (the core records a minute it still lacks as an unfilled
gap: nothing is invented); an answer that is not what the API documents raises ``BrokerError``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from livedata_core.errors import BrokerError, SymbolsRefused
from livedata_core.models import Bar

__all__ = ["chain_symbols", "parse_candles"]

_MAX_INT = 2**63


def _number(v: Any) -> float | None:
    if (type(v) is float or type(v) is int) and math.isfinite(v) and -_MAX_INT < v < _MAX_INT:
        return float(v)
    return None


# {"symbol":"AAPL","empty":false,"previousClose":174.56,"previousCloseDate":1639029600000,
#  "candles":[{"open":175.01,"high":175.15,"low":175.01,"close":175.04,"volume":10719,"datetime":1639137600000}]}
def parse_candles(data: Any, *, broker: str, symbol: str, interval: int, start: int, end: int,
                  log: logging.Logger | None = None) -> list[Bar]:  # fmt: skip
    """The candles of a ``/pricehistory`` answer starting in ``[start, end)`` (ms) as bars, in start order, one per
    start. Candles that cannot be read are logged (the count, the first one) and left out.

    :raises BrokerError: the answer has no ``candles`` list, or is the history of another symbol than ``symbol``
        (its ``symbol``; such candles are never labelled ``symbol``: the core records the gap as unfilled).
    """
    log = log or logging.getLogger(f"livedata.broker.{broker}")
    answered = data.get("symbol") if isinstance(data, dict) else None
    if answered is not None and not _same_symbol(answered, symbol):
        raise BrokerError(f"Schwab /pricehistory for {symbol} answered with the candles of {answered!r}; left out")
    candles = data.get("candles") if isinstance(data, dict) else None
    if candles is None and isinstance(data, dict) and data.get("empty") is True:
        candles = []
    if not isinstance(candles, list):
        raise BrokerError(f"Schwab /pricehistory for {symbol} answered without a candles list")
    bars: dict[int, Bar] = {}
    bad: list[Any] = []
    step = interval * 1000
    for candle in candles:
        if not isinstance(candle, dict):
            bad.append(candle)
            continue
        t = candle.get("datetime")
        o, h, l, c = (_number(candle.get(k)) for k in ("open", "high", "low", "close"))
        volume = candle.get("volume")
        if (type(t) is not int or t <= 0 or o is None or h is None or l is None or c is None or h < l
                or (volume is not None and _number(volume) is None)):  # fmt: skip
            bad.append(candle)
            continue
        t -= t % step
        if not start <= t < end:
            continue
        bars[t] = Bar(broker=broker, symbol=symbol, interval=interval, start=t, open=o, high=h, low=l, close=c,
                      volume=_number(volume))  # backfilled: the runner marks the bars it publishes for a gap
    if bad:
        log.warning("Schwab /pricehistory for %s: %d candle(s) could not be read and were left out, the first: %r",
                    symbol, len(bad), bad[0])  # fmt: skip
    return [bars[t] for t in sorted(bars)]


def _same_symbol(answered: Any, asked: str) -> bool:
    """Whether a ``/pricehistory`` answer's ``symbol`` is the one asked: the same, but for case and blanks, or a
    contract of an asked future root (``/ESZ26`` for ``/ES``)."""
    if not isinstance(answered, str):
        return False
    a, b = answered.strip().upper(), asked.strip().upper()
    return a == b or (b.startswith("/") and a.startswith(b))


# {"symbol":"AAPL","status":"SUCCESS","underlying":{...},"strategy":"SINGLE",...,
#  "callExpDateMap":{"2026-12-18:379":{"200.0":[{"putCall":"CALL","symbol":"AAPL  261218C00200000",...}]}},
#  "putExpDateMap":{...}}
def chain_symbols(data: Any, underlying: str) -> list[str]:
    """The option symbols of a ``/chains`` answer: calls then puts, by expiration and strike.

    :raises SymbolsRefused: Schwab knows no options of ``underlying`` (``status`` FAILED, or no contracts).
    :raises BrokerError: the answer is not a chain.
    """
    if not isinstance(data, dict):
        raise BrokerError(f"Schwab /chains for {underlying} answered with something other than an object")
    if str(data.get("status", "")).upper() == "FAILED":
        raise SymbolsRefused(f"Schwab has no option chain for {underlying!r} (unknown or not optionable)", [underlying])
    symbols: list[str] = []
    for side in ("callExpDateMap", "putExpDateMap"):
        by_expiration = data.get(side)
        if by_expiration is None:
            continue
        if not isinstance(by_expiration, dict):
            raise BrokerError(f"Schwab /chains for {underlying}: {side} is not an object")
        for expiration in sorted(by_expiration):
            strikes = by_expiration[expiration]
            if not isinstance(strikes, dict):
                raise BrokerError(f"Schwab /chains for {underlying}: {side}[{expiration!r}] is not an object")
            for strike in sorted(strikes, key=_strike_key):
                for contract in strikes[strike] or []:
                    symbol = contract.get("symbol") if isinstance(contract, dict) else None
                    if isinstance(symbol, str) and symbol.strip():
                        symbols.append(symbol)
    if not symbols:
        raise SymbolsRefused(
            f"Schwab's option chain for {underlying!r} has no contracts for these expirations and strikes", [underlying]
        )
    return list(dict.fromkeys(symbols))


def _strike_key(strike: str) -> float:
    try:
        return float(strike)
    except ValueError:
        return math.inf
