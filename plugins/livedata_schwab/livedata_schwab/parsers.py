"""Schwab Trader API JSON to livedata models.

Every parser takes the decoded JSON and a :class:`Skips` to note records it cannot use: a bad record is
logged and counted, never fatal. An order or transaction is never dropped without a warning in the log.
Numbers Schwab did not send stay ``None``; margin-only fields are never assumed on cash accounts. A number that
is not finite (the JSON literals ``NaN`` and ``Infinity``, which httpx's ``Response.json()`` accepts, or such a
string) is left out (``None``), counted as ``non_finite_number`` and logged: the rest of the record is kept. A
position whose quantity is not finite cannot be published at all and is skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from datetime import datetime, timezone
from typing import Any

from livedata_core.models import Account, Balance, Order, Position, Transaction, now_ms

__all__ = [
    "Skips",
    "order_status",
    "parse_account_hashes",
    "parse_accounts",
    "parse_balances",
    "parse_orders",
    "parse_positions",
    "parse_time",
    "parse_transactions",
]

BROKER = "schwab"


class Skips:
    """Counts and logs records that could not be used, by reason."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.counts: Counter[str] = Counter()

    def note(self, reason: str, detail: str) -> None:
        self.counts[reason] += 1
        self.log.warning("skipped a Schwab record (%s): %s", reason, detail[:300])


def _float(value: Any) -> float | None:
    """``value`` as a float (not finite ones included), or ``None`` if it is no number."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _not_finite(value: Any) -> bool:
    number = _float(value)
    return number is not None and not math.isfinite(number)


def _num(value: Any, skips: Skips | None = None, where: str = "") -> float | None:
    """``value`` as a finite float, or ``None``. A value that is not finite is noted in ``skips`` (``where``
    names the record and the field), so it is counted and logged instead of silently lost."""
    number = _float(value)
    if number is None or math.isfinite(number):
        return number
    if skips is not None:
        skips.note("non_finite_number", f"{where} is {value!r}, not a finite number; published without it")
    return None


def _first(mapping_values: list[tuple[dict[str, Any], str]], skips: Skips, what: str) -> float | None:
    """The first usable number among ``(mapping, key)`` pairs; a non-finite one is noted and passed over."""
    for mapping, key in mapping_values:
        number = _num(mapping.get(key), skips, f"{what} {key}")
        if number is not None:
            return number
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def parse_time(value: Any) -> int | None:
    """Schwab's ``2024-03-29T14:30:00+0000`` / ``...000Z`` as epoch milliseconds; ``None`` if unreadable."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)


def _compact(extra: dict[str, Any]) -> dict[str, Any] | None:
    kept = {k: v for k, v in extra.items() if v is not None}
    return kept or None


# GET /accounts/accountNumbers
# [{"accountNumber":"12345678","hashValue":"E5B3F2A9C1D04B7E8F6A5C3D2B1E0F9A8C7B6D5E4F3A2B1C0D9E8F7A6B5C4D3E"}]
def parse_account_hashes(data: Any, log: logging.Logger) -> dict[str, str]:
    """Plain account number to hash value."""
    hashes: dict[str, str] = {}
    for item in _list(data):
        item = _dict(item)
        number, hash_value = item.get("accountNumber"), item.get("hashValue")
        if number is None or not isinstance(hash_value, str) or not hash_value:
            log.warning("Schwab /accounts/accountNumbers entry without accountNumber/hashValue ignored")
            continue
        hashes[str(number)] = hash_value
    return hashes


# GET /accounts (balances only; positions with fields=positions)
# [{"securitiesAccount":{"type":"MARGIN","accountNumber":"12345678","roundTrips":0,"isDayTrader":false,
#    "initialBalances":{...},"currentBalances":{...},"projectedBalances":{...}},
#   "aggregatedBalance":{"currentLiquidationValue":1000.0,"liquidationValue":1000.0}}]
def parse_accounts(data: Any, skips: Skips) -> list[Account]:
    """Every account in a ``GET /accounts`` answer."""
    accounts = []
    for item in _list(data):
        securities = _dict(_dict(item).get("securitiesAccount"))
        number = securities.get("accountNumber")
        if number is None:
            skips.note("account_without_number", json.dumps(item)[:200])
            continue
        account_type = securities.get("type")
        accounts.append(
            Account(
                broker=BROKER,
                account_id=str(number),
                account_type=str(account_type) if account_type else None,
                extra=_compact({"is_day_trader": securities.get("isDayTrader"), "round_trips": securities.get("roundTrips")}),
            )
        )
    return accounts


# One position of GET /accounts/{hash}?fields=positions (securitiesAccount.positions[]):
# {"shortQuantity":0.0,"averagePrice":150.12,"currentDayProfitLoss":12.5,"currentDayProfitLossPercentage":0.74,
#  "longQuantity":10.0,"settledLongQuantity":10.0,"settledShortQuantity":0.0,
#  "instrument":{"assetType":"EQUITY","cusip":"037833100","symbol":"AAPL","netChange":1.25},
#  "marketValue":1701.2,"maintenanceRequirement":510.36,"averageLongPrice":150.12,"longOpenProfitLoss":200.0,
#  "previousSessionLongQuantity":10.0,"currentDayCost":0.0}
def parse_positions(account: Any, account_id: str, skips: Skips, received_at: int | None = None) -> list[Position]:
    """The positions in one ``GET /accounts/{hash}?fields=positions`` answer; short positions are negative."""
    received_at = received_at or now_ms()
    securities = _dict(_dict(account).get("securitiesAccount"))
    positions = []
    for raw in _list(securities.get("positions")):
        raw = _dict(raw)
        instrument = _dict(raw.get("instrument"))
        symbol = instrument.get("symbol")
        long_qty, short_qty = _num(raw.get("longQuantity")), _num(raw.get("shortQuantity"))
        unusable = _not_finite(raw.get("longQuantity")) or _not_finite(raw.get("shortQuantity"))
        if not isinstance(symbol, str) or not symbol or (long_qty is None and short_qty is None) or unusable:
            skips.note("position_without_symbol_or_quantity", json.dumps(raw)[:200])
            continue
        what = f"position {symbol} of account {account_id}:"
        quantity = (long_qty or 0.0) - (short_qty or 0.0)
        long_pnl = _num(raw.get("longOpenProfitLoss"), skips, f"{what} longOpenProfitLoss")
        short_pnl = _num(raw.get("shortOpenProfitLoss"), skips, f"{what} shortOpenProfitLoss")
        pnl_unusable = _not_finite(raw.get("longOpenProfitLoss")) or _not_finite(raw.get("shortOpenProfitLoss"))
        pnl = None if pnl_unusable or (long_pnl is None and short_pnl is None) else (long_pnl or 0.0) + (short_pnl or 0.0)
        side_average = "averageShortPrice" if quantity < 0 else "averageLongPrice"
        average = _first([(raw, "averagePrice"), (raw, side_average)], skips, what)
        positions.append(
            Position(
                broker=BROKER,
                account_id=account_id,
                symbol=symbol,
                quantity=quantity,
                market_value=_num(raw.get("marketValue"), skips, f"{what} marketValue"),
                average_price=average,
                unrealized_pnl=pnl,
                asset_type=instrument.get("assetType"),
                timestamp=None,  # Schwab does not say when a position was valued
                received_at=received_at,
                extra=_compact({"cusip": instrument.get("cusip"),
                                "day_pnl": _num(raw.get("currentDayProfitLoss"), skips, f"{what} currentDayProfitLoss")}),
            )
        )
    return positions


# Margin: "currentBalances":{"cashBalance":0.0,"liquidationValue":25000.0,"availableFunds":12000.0,
#   "buyingPower":24000.0,"dayTradingBuyingPower":0.0,"equity":25000.0,"maintenanceRequirement":1000.0,...}
# Cash (no buyingPower): "initialBalances":{"cashBalance":5000.0,"liquidationValue":6700.0,"accountValue":6700.0,...},
#   "currentBalances":{"cashAvailableForTrading":5000.0,"cashAvailableForWithdrawal":5000.0,"totalCash":5000.0,
#   "unsettledCash":0.0,"longNonMarginableMarketValue":1700.0}
def parse_balances(account: Any, account_id: str, skips: Skips, received_at: int | None = None) -> list[Balance]:
    """The USD balance of one ``GET /accounts/{hash}`` answer (margin or cash shape)."""
    item = _dict(account)
    securities = _dict(item.get("securitiesAccount"))
    current = _dict(securities.get("currentBalances"))
    initial = _dict(securities.get("initialBalances"))
    aggregated = _dict(item.get("aggregatedBalance"))
    if not current and not initial:
        skips.note("account_without_balances", f"account {account_id}")
        return []
    account_type = securities.get("type")
    what = f"balance of account {account_id}:"

    def current_num(key: str) -> float | None:
        return _num(current.get(key), skips, f"{what} {key}")

    return [
        Balance(
            broker=BROKER,
            account_id=account_id,
            cash=_first([(current, "cashBalance"), (current, "totalCash"), (initial, "cashBalance"),
                         (initial, "totalCash")], skips, what),  # fmt: skip
            # A cash account has no buying power figure; cash available for trading goes in extra instead.
            buying_power=current_num("buyingPower"),
            account_value=_first([(current, "liquidationValue"), (aggregated, "currentLiquidationValue"),
                                  (initial, "liquidationValue"), (initial, "accountValue")], skips, what),  # fmt: skip
            currency="USD",
            equity=current_num("equity"),
            maintenance_requirement=current_num("maintenanceRequirement"),
            timestamp=None,
            received_at=received_at or now_ms(),
            extra=_compact(
                {
                    "account_type": account_type,
                    "available_funds": current_num("availableFunds"),
                    "cash_available_for_trading": current_num("cashAvailableForTrading"),
                    "day_trading_buying_power": current_num("dayTradingBuyingPower"),
                    "unsettled_cash": current_num("unsettledCash"),
                }
            ),
        )
    ]


_PENDING = {
    "AWAITING_PARENT_ORDER",
    "AWAITING_CONDITION",
    "AWAITING_STOP_CONDITION",
    "AWAITING_MANUAL_REVIEW",
    "ACCEPTED",
    "PENDING_ACTIVATION",
    "QUEUED",
    "NEW",
    "AWAITING_RELEASE_TIME",
    "PENDING_ACKNOWLEDGEMENT",
    "PENDING_RECALL",
}
_STATUS = {
    "WORKING": "open",
    "PENDING_REPLACE": "open",  # still working until the replacement is accepted
    "AWAITING_UR_OUT": "pending_cancel",  # waiting for the exchange to confirm the cancel
    "PENDING_CANCEL": "pending_cancel",
    "CANCELED": "canceled",
    "REJECTED": "rejected",
    "REPLACED": "replaced",
    "FILLED": "filled",
    "EXPIRED": "expired",
    "UNKNOWN": "unknown",
}


def order_status(schwab_status: Any, filled_quantity: float | None) -> str:
    """Schwab's order status as one of :data:`livedata_core.models.ORDER_STATUSES`."""
    word = str(schwab_status or "").upper()
    if word in _PENDING:
        return "pending"
    status = _STATUS.get(word, "unknown")
    if status == "open" and filled_quantity:
        return "partially_filled"
    return status


def _fills(order: dict[str, Any], skips: Skips, what: str) -> tuple[float | None, int | None]:
    """Average fill price and time of the last fill, from orderActivityCollection. A fill whose quantity or
    price is not finite leaves the average unknown (``None``) rather than wrong."""
    quantity = cost = 0.0
    usable = True
    last: int | None = None
    for activity in _list(order.get("orderActivityCollection")):
        activity = _dict(activity)
        if activity.get("activityType") not in (None, "EXECUTION"):
            continue
        for leg in _list(activity.get("executionLegs")):
            leg = _dict(leg)
            qty = _num(leg.get("quantity"), skips, f"{what} executionLegs quantity")
            price = _num(leg.get("price"), skips, f"{what} executionLegs price")
            if _not_finite(leg.get("quantity")) or _not_finite(leg.get("price")):
                usable = False
            elif qty and price is not None:
                quantity += qty
                cost += qty * price
            when = parse_time(leg.get("time"))
            if when is not None and (last is None or when > last):
                last = when
    return (cost / quantity if quantity and usable else None), last


# GET /accounts/{hash}/orders?fromEnteredTime=2024-03-01T00:00:00.000Z&toEnteredTime=2024-03-30T00:00:00.000Z
# [{"session":"NORMAL","duration":"DAY","orderType":"LIMIT","complexOrderStrategyType":"NONE","quantity":10.0,
#   "filledQuantity":4.0,"remainingQuantity":6.0,"price":150.0,
#   "orderLegCollection":[{"orderLegType":"EQUITY","legId":1,"instrument":{"assetType":"EQUITY","symbol":"AAPL"},
#                          "instruction":"BUY","positionEffect":"OPENING","quantity":10.0}],
#   "orderStrategyType":"SINGLE","orderId":1000001,"cancelable":true,"status":"WORKING",
#   "enteredTime":"2024-03-29T14:30:00+0000","accountNumber":12345678,
#   "orderActivityCollection":[{"activityType":"EXECUTION","executionType":"FILL","quantity":4.0,
#      "orderRemainingQuantity":6.0,"executionLegs":[{"legId":1,"quantity":4.0,"price":149.95,"time":"2024-03-29T14:31:02+0000"}]}],
#   "childOrderStrategies":[ ...orders of the same shape (OCO / TRIGGER)... ]}]
def parse_orders(data: Any, account_id: str, skips: Skips, received_at: int | None = None) -> list[Order]:
    """Every order in a ``GET /accounts/{hash}/orders`` answer, child orders (OCO, trigger) included."""
    received_at = received_at or now_ms()
    orders: list[Order] = []
    stack = list(_list(data))
    while stack:
        raw = _dict(stack.pop(0))
        stack[0:0] = _list(raw.get("childOrderStrategies"))
        order_id = raw.get("orderId")
        if order_id is None or isinstance(order_id, bool):
            skips.note("order_without_id", json.dumps(raw)[:300])
            continue
        try:
            orders.append(_order(raw, str(order_id), account_id, received_at, skips))
        except Exception as exc:  # a malformed order must not stop the others
            skips.note("order_unreadable", f"order {order_id}: {type(exc).__name__}: {exc}")
    return orders


def _order(raw: dict[str, Any], order_id: str, account_id: str, received_at: int, skips: Skips) -> Order:
    what = f"order {order_id} of account {account_id}:"

    def num(mapping: dict[str, Any], key: str) -> float | None:
        return _num(mapping.get(key), skips, f"{what} {key}")

    legs = [_dict(leg) for leg in _list(raw.get("orderLegCollection"))]
    first = legs[0] if legs else {}
    instruction = str(first.get("instruction") or "")
    side = "buy" if instruction.startswith("BUY") else "sell" if instruction.startswith("SELL") else None
    filled = num(raw, "filledQuantity")
    average, last_fill = _fills(raw, skips, what)
    entered = parse_time(raw.get("enteredTime"))
    closed = parse_time(raw.get("closeTime"))
    extra: dict[str, Any] = {
        "instruction": instruction or None,
        "strategy": raw.get("orderStrategyType"),
        "session": raw.get("session"),
        "status_description": raw.get("statusDescription"),
    }
    if len(legs) > 1:
        extra["legs"] = [
            {
                "symbol": _dict(leg.get("instrument")).get("symbol"),
                "instruction": leg.get("instruction"),
                "quantity": num(leg, "quantity"),
            }
            for leg in legs
        ]
    order_type = raw.get("orderType")
    duration = raw.get("duration")
    return Order(
        broker=BROKER,
        account_id=account_id,
        order_id=order_id,
        symbol=_dict(first.get("instrument")).get("symbol"),
        side=side,
        order_type=str(order_type).lower() if order_type else None,
        status=order_status(raw.get("status"), filled),
        broker_status=raw.get("status"),
        quantity=num(raw, "quantity"),
        filled_quantity=filled,
        remaining_quantity=num(raw, "remainingQuantity"),
        price=num(raw, "price"),
        stop_price=num(raw, "stopPrice"),
        average_fill_price=average,
        time_in_force=str(duration).lower() if duration else None,
        entered_at=entered,
        timestamp=closed or last_fill or entered,
        received_at=received_at,
        extra=_compact(extra),
    )


# GET /accounts/{hash}/transactions?startDate=...&endDate=...&types=TRADE,DIVIDEND_OR_INTEREST,...
# [{"activityId":95512265692,"time":"2024-03-29T14:31:02+0000","accountNumber":"12345678","type":"TRADE",
#   "status":"VALID","subAccount":"CASH","tradeDate":"2024-03-29T14:31:02+0000","positionId":2650573610,
#   "orderId":1000001,"netAmount":-600.8,"activityType":"EXECUTION",
#   "transferItems":[{"instrument":{"assetType":"CURRENCY","symbol":"CURRENCY_USD"},"amount":0.0,"cost":-1.0,"feeType":"COMMISSION"},
#                    {"instrument":{"assetType":"EQUITY","symbol":"AAPL"},"amount":4.0,"cost":-599.8,"price":149.95,"positionEffect":"OPENING"}]}]
def parse_transactions(data: Any, account_id: str, skips: Skips, received_at: int | None = None) -> list[Transaction]:
    """Every transaction in a ``GET /accounts/{hash}/transactions`` answer.

    A transaction without ``activityId`` gets a stable id made from its content (and a warning), so it is
    still published, once.
    """
    received_at = received_at or now_ms()
    transactions = []
    for raw in _list(data):
        if not isinstance(raw, dict):
            skips.note("transaction_not_an_object", repr(raw)[:200])
            continue
        activity_id = raw.get("activityId")
        if activity_id is None or isinstance(activity_id, bool):
            digest = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:20]
            activity_id = f"content-{digest}"
            skips.log.warning("Schwab transaction without activityId; published with id %s", activity_id)
        security = next(
            (
                _dict(item)
                for item in _list(raw.get("transferItems"))
                if _dict(_dict(item).get("instrument")).get("assetType") not in (None, "CURRENCY")
            ),
            {},
        )
        kind = raw.get("type")
        order_id = raw.get("orderId")
        what = f"transaction {activity_id} of account {account_id}:"
        transactions.append(
            Transaction(
                broker=BROKER,
                account_id=account_id,
                transaction_id=str(activity_id),
                type=str(kind).lower() if kind else "unknown",
                symbol=_dict(security.get("instrument")).get("symbol"),
                quantity=_num(security.get("amount"), skips, f"{what} amount"),
                price=_num(security.get("price"), skips, f"{what} price"),
                amount=_num(raw.get("netAmount"), skips, f"{what} netAmount"),
                description=raw.get("description"),
                order_id=str(order_id) if order_id is not None else None,
                timestamp=parse_time(raw.get("time")) or parse_time(raw.get("tradeDate")),
                received_at=received_at,
                extra=_compact({"status": raw.get("status"), "sub_account": raw.get("subAccount")}),
            )
        )
    return transactions
