"""Schwab Trader API JSON to livedata models.

Every parser takes the decoded JSON and a :class:`Skips` to note records it cannot use: a bad record is
logged and counted, never fatal. An order or transaction is never dropped without a warning in the log.
Numbers Schwab did not send stay ``None``; margin-only fields are never assumed on cash accounts.
"""

from __future__ import annotations

import hashlib
import json
import logging
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


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _first(*values: Any) -> float | None:
    for value in values:
        number = _num(value)
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
        if not isinstance(symbol, str) or not symbol or (long_qty is None and short_qty is None):
            skips.note("position_without_symbol_or_quantity", json.dumps(raw)[:200])
            continue
        quantity = (long_qty or 0.0) - (short_qty or 0.0)
        long_pnl, short_pnl = _num(raw.get("longOpenProfitLoss")), _num(raw.get("shortOpenProfitLoss"))
        pnl = None if long_pnl is None and short_pnl is None else (long_pnl or 0.0) + (short_pnl or 0.0)
        average = _first(raw.get("averagePrice"), raw.get("averageShortPrice") if quantity < 0 else raw.get("averageLongPrice"))
        positions.append(
            Position(
                broker=BROKER,
                account_id=account_id,
                symbol=symbol,
                quantity=quantity,
                market_value=_num(raw.get("marketValue")),
                average_price=average,
                unrealized_pnl=pnl,
                asset_type=instrument.get("assetType"),
                timestamp=None,  # Schwab does not say when a position was valued
                received_at=received_at,
                extra=_compact({"cusip": instrument.get("cusip"), "day_pnl": _num(raw.get("currentDayProfitLoss"))}),
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
    return [
        Balance(
            broker=BROKER,
            account_id=account_id,
            cash=_first(current.get("cashBalance"), current.get("totalCash"), initial.get("cashBalance"), initial.get("totalCash")),
            # A cash account has no buying power figure; cash available for trading goes in extra instead.
            buying_power=_num(current.get("buyingPower")),
            account_value=_first(
                current.get("liquidationValue"),
                aggregated.get("currentLiquidationValue"),
                initial.get("liquidationValue"),
                initial.get("accountValue"),
            ),
            currency="USD",
            equity=_num(current.get("equity")),
            maintenance_requirement=_num(current.get("maintenanceRequirement")),
            timestamp=None,
            received_at=received_at or now_ms(),
            extra=_compact(
                {
                    "account_type": account_type,
                    "available_funds": _num(current.get("availableFunds")),
                    "cash_available_for_trading": _num(current.get("cashAvailableForTrading")),
                    "day_trading_buying_power": _num(current.get("dayTradingBuyingPower")),
                    "unsettled_cash": _num(current.get("unsettledCash")),
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


def _fills(order: dict[str, Any]) -> tuple[float | None, int | None]:
    """Average fill price and time of the last fill, from orderActivityCollection."""
    quantity = cost = 0.0
    last: int | None = None
    for activity in _list(order.get("orderActivityCollection")):
        activity = _dict(activity)
        if activity.get("activityType") not in (None, "EXECUTION"):
            continue
        for leg in _list(activity.get("executionLegs")):
            leg = _dict(leg)
            qty, price = _num(leg.get("quantity")), _num(leg.get("price"))
            if qty and price is not None:
                quantity += qty
                cost += qty * price
            when = parse_time(leg.get("time"))
            if when is not None and (last is None or when > last):
                last = when
    return (cost / quantity if quantity else None), last


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
            orders.append(_order(raw, str(order_id), account_id, received_at))
        except Exception as exc:  # a malformed order must not stop the others
            skips.note("order_unreadable", f"order {order_id}: {type(exc).__name__}: {exc}")
    return orders


def _order(raw: dict[str, Any], order_id: str, account_id: str, received_at: int) -> Order:
    legs = [_dict(leg) for leg in _list(raw.get("orderLegCollection"))]
    first = legs[0] if legs else {}
    instruction = str(first.get("instruction") or "")
    side = "buy" if instruction.startswith("BUY") else "sell" if instruction.startswith("SELL") else None
    filled = _num(raw.get("filledQuantity"))
    average, last_fill = _fills(raw)
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
                "quantity": _num(leg.get("quantity")),
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
        quantity=_num(raw.get("quantity")),
        filled_quantity=filled,
        remaining_quantity=_num(raw.get("remainingQuantity")),
        price=_num(raw.get("price")),
        stop_price=_num(raw.get("stopPrice")),
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
        transactions.append(
            Transaction(
                broker=BROKER,
                account_id=account_id,
                transaction_id=str(activity_id),
                type=str(kind).lower() if kind else "unknown",
                symbol=_dict(security.get("instrument")).get("symbol"),
                quantity=_num(security.get("amount")),
                price=_num(security.get("price")),
                amount=_num(raw.get("netAmount")),
                description=raw.get("description"),
                order_id=str(order_id) if order_id is not None else None,
                timestamp=parse_time(raw.get("time")) or parse_time(raw.get("tradeDate")),
                received_at=received_at,
                extra=_compact({"status": raw.get("status"), "sub_account": raw.get("subAccount")}),
            )
        )
    return transactions
