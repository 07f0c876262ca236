"""Account data parsers: gateway JSON -> livedata models. Each raises ``BadValue``/``KeyError`` on a row it
cannot use; callers count and log such rows instead of failing the whole fetch."""

from __future__ import annotations

from typing import Any

from livedata_core.models import Account, Balance, Order, Position, now_ms

from .values import BadValue, parse_int, parse_number

__all__ = [
    "ORDER_STATUS",
    "order_status",
    "parse_account",
    "parse_balances",
    "parse_order",
    "parse_position",
]

BROKER = "ibkr"


# Sample /portfolio/accounts row:
# {"id":"U1234567","accountId":"U1234567","accountVan":"U1234567","displayName":"U1234567","currency":"USD",
#  "type":"DEMO","tradingType":"PMRGN","desc":"U1234567","brokerageAccess":true,"parent":{...}}
def parse_account(row: dict[str, Any]) -> Account:
    account_id = row.get("accountId") or row.get("id")
    if not isinstance(account_id, str) or not account_id:
        raise BadValue(f"account row without accountId: {sorted(row)}")
    extra = {k: row[k] for k in ("currency", "tradingType") if row.get(k) is not None}
    if row.get("type") == "DEMO":
        extra["paper"] = True
    return Account(
        broker=BROKER,
        account_id=account_id,
        account_type=row.get("type"),
        name=row.get("displayName") or row.get("desc"),
        extra=extra or None,
    )


_ASSET_TYPES = {"STK": "equity", "OPT": "option", "FUT": "future", "FOP": "future_option", "CASH": "forex",
                "BOND": "bond", "FUND": "fund", "CRYPTO": "crypto", "WAR": "warrant", "CFD": "cfd"}


# Sample /portfolio/{acct}/positions/{page} row:
# {"acctId":"DU123","conid":756733,"contractDesc":"SPY","assetClass":"STK","position":100.0,"mktPrice":454.44,
#  "mktValue":45444.0,"currency":"USD","avgCost":437.43,"avgPrice":437.43,"realizedPnl":0.0,
#  "unrealizedPnl":1701.0,"ticker":"SPY","listingExchange":"ARCA","isUS":true,"multiplier":0.0,...}
def parse_position(row: dict[str, Any], account_id: str) -> Position:
    symbol = row.get("contractDesc") or row.get("ticker")
    if not isinstance(symbol, str) or not symbol.strip():
        raise BadValue(f"position row without contractDesc/ticker: conid {row.get('conid')!r}")
    quantity = parse_number(row.get("position"))
    if quantity is None:
        raise BadValue(f"position row without a quantity: {symbol!r}")
    extra: dict[str, Any] = {}
    conid = parse_int(row.get("conid"))
    if conid is not None:
        extra["conid"] = conid
    if row.get("currency"):
        extra["currency"] = row["currency"]
    asset = row.get("assetClass")
    return Position(
        broker=BROKER,
        account_id=account_id,
        symbol=symbol.strip(),
        quantity=quantity,
        market_value=parse_number(row.get("mktValue")),
        average_price=parse_number(row.get("avgPrice", row.get("avgCost"))),
        unrealized_pnl=parse_number(row.get("unrealizedPnl")),
        asset_type=_ASSET_TYPES.get(asset, asset.lower() if isinstance(asset, str) else None),
        extra=extra or None,
    )


# Sample /portfolio/{acct}/ledger (one entry per currency plus "BASE"; timestamp in seconds):
# {"USD":{"cashbalance":214716688.0,"settledcash":214716688.0,"netliquidationvalue":215335840.0,
#   "stockmarketvalue":314123.88,"unrealizedpnl":39695.82,"currency":"USD","acctcode":"U1234567",
#   "key":"LedgerList","timestamp":1702582321},
#  "BASE":{"currency":"BASE","netliquidationvalue":215721776.0,"cashbalance":215100080.0}}
# Sample /portfolio/{acct}/summary (flat, lowercase keys):
# {"netliquidation":{"amount":215721776.0,"currency":"USD","isNull":false,"timestamp":1702582321000,...},
#  "buyingpower":{"amount":...}, "equitywithloanvalue":{...}, "maintmarginreq":{...}, ...}
def parse_balances(ledger: dict[str, Any], summary: dict[str, Any] | None, account_id: str) -> list[Balance]:
    """One balance per ledger currency. The ``BASE`` entry (every currency converted to the base currency)
    is published with currency ``"BASE"`` and also carries the account summary's buying power, equity and
    maintenance requirement; ``extra.base_currency`` names the base currency."""
    summary = summary if isinstance(summary, dict) else {}
    out: list[Balance] = []
    for key, entry in sorted(ledger.items()):
        if not isinstance(entry, dict):
            continue
        currency = key.upper()
        ts = parse_number(entry.get("timestamp"))
        timestamp = int(ts * 1000) if ts else None
        cash = parse_number(entry.get("cashbalance"))
        value = parse_number(entry.get("netliquidationvalue"))
        extra: dict[str, Any] = {}
        for name in ("settledcash", "stockmarketvalue", "unrealizedpnl", "realizedpnl", "exchangerate"):
            number = parse_number(entry.get(name))
            if number is not None:
                extra[name] = number
        buying_power = equity = maintenance = None
        if currency == "BASE":
            buying_power = _summary_amount(summary, "buyingpower")
            equity = _summary_amount(summary, "equitywithloanvalue")
            maintenance = _summary_amount(summary, "maintmarginreq")
            net = _summary_amount(summary, "netliquidation")
            value = net if net is not None else value
            base = (summary.get("netliquidation") or {}).get("currency") if isinstance(summary.get("netliquidation"), dict) else None
            if isinstance(base, str) and base:
                extra["base_currency"] = base
        out.append(
            Balance(
                broker=BROKER,
                account_id=account_id,
                cash=cash,
                buying_power=buying_power,
                account_value=value,
                currency=currency,
                equity=equity,
                maintenance_requirement=maintenance,
                timestamp=timestamp,
                extra=extra or None,
            )
        )
    return out


def _summary_amount(summary: dict[str, Any], key: str) -> float | None:
    item = summary.get(key)
    if not isinstance(item, dict) or item.get("isNull"):
        return None
    return parse_number(item.get("amount"))


# The gateway's order status -> livedata status. Submitted with fills is "partially_filled".
ORDER_STATUS = {
    "pendingsubmit": "pending",
    "apipending": "pending",
    "presubmitted": "open",  # accepted, waiting for a trigger or the session to open
    "submitted": "open",
    "filled": "filled",
    "pendingcancel": "pending_cancel",
    "cancelled": "canceled",
    "apicancelled": "canceled",
    "inactive": "rejected",
    "warnstate": "open",
}


def order_status(broker_status: Any, filled: float | None, remaining: float | None) -> str:
    status = ORDER_STATUS.get(str(broker_status or "").replace("_", "").replace(" ", "").lower(), "unknown")
    if status == "open" and filled and remaining:
        return "partially_filled"
    return status


_ORDER_TYPES = {"limit": "limit", "lmt": "limit", "market": "market", "mkt": "market", "stop": "stop",
                "stp": "stop", "stop_limit": "stop_limit", "stoplimit": "stop_limit", "stp lmt": "stop_limit",
                "trailing stop": "trailing_stop", "trail": "trailing_stop"}


# Sample order, from GET /iserver/account/orders ("orders":[...]) and the websocket "sor" topic (later sor
# frames carry only the changed keys plus orderId, so callers merge them onto the known state first):
# {"acct":"DU1234","conid":265598,"orderId":922048212,"cashCcy":"USD","sizeAndFills":"0/1",
#  "orderDesc":"Buy 100 Limit 372.00 GTC","ticker":"AAPL","secType":"STK","listingExchange":"NASDAQ.NMS",
#  "remainingQuantity":100.0,"filledQuantity":0.0,"status":"Submitted","orderType":"Limit","side":"BUY",
#  "timeInForce":"GTC","price":372}
def parse_order(row: dict[str, Any], account_id: str | None = None, received_at: int | None = None) -> Order:
    order_id = row.get("orderId")
    if order_id is None or isinstance(order_id, bool) or str(order_id).strip() == "":
        raise BadValue(f"order without orderId: {sorted(row)}")
    account = row.get("acct") or row.get("account") or account_id
    if not isinstance(account, str) or not account:
        raise BadValue(f"order {order_id!r} without an account")
    filled = parse_number(row.get("filledQuantity"))
    remaining = parse_number(row.get("remainingQuantity"))
    quantity = parse_number(row.get("totalSize"))
    if quantity is None and filled is not None and remaining is not None:
        quantity = filled + remaining
    broker_status = row.get("status")
    order_type = row.get("orderType") or row.get("origOrderType")
    side = row.get("side")
    price = parse_number(row.get("price"))
    stop = parse_number(row.get("auxPrice")) if row.get("auxPrice") not in (None, "") else None
    updated = parse_int(row.get("lastExecutionTime_r"))
    extra: dict[str, Any] = {}
    for key in ("conid", "orderDesc", "secType"):
        if row.get(key) not in (None, ""):
            extra[key] = row[key]
    return Order(
        broker=BROKER,
        account_id=account,
        order_id=str(order_id),
        symbol=row.get("ticker") or None,
        side=side.lower() if isinstance(side, str) else None,
        order_type=_ORDER_TYPES.get(str(order_type).lower(), str(order_type).lower()) if order_type else None,
        status=order_status(broker_status, filled, remaining),
        broker_status=str(broker_status) if broker_status is not None else None,
        quantity=quantity,
        filled_quantity=filled,
        remaining_quantity=remaining,
        price=price,
        stop_price=stop,
        average_fill_price=parse_number(row.get("avgPrice")),
        time_in_force=str(row["timeInForce"]).lower() if row.get("timeInForce") else None,
        timestamp=updated,
        received_at=now_ms() if received_at is None else received_at,
        extra=extra or None,
    )
