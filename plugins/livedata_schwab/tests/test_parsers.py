"""Parsers on spec-shaped and malformed data: what a subscriber would see."""

from __future__ import annotations

import logging

import pytest

from livedata_core.models import ORDER_STATUSES
from livedata_schwab.parsers import (
    Skips,
    order_status,
    parse_balances,
    parse_orders,
    parse_positions,
    parse_time,
    parse_transactions,
)


@pytest.fixture
def skips():
    return Skips(logging.getLogger("test.schwab"))


def test_positions_are_signed_and_carry_pnl(skips):
    account = {"securitiesAccount": {"positions": [
        {"longQuantity": 10.0, "shortQuantity": 0.0, "averagePrice": 150.12, "marketValue": 1701.2, "longOpenProfitLoss": 200.0,
         "instrument": {"assetType": "EQUITY", "symbol": "AAPL", "cusip": "037833100"}},
        {"longQuantity": 0.0, "shortQuantity": 5.0, "averageShortPrice": 400.0, "shortOpenProfitLoss": 1000.0,
         "instrument": {"assetType": "OPTION", "symbol": "AAPL  251219C00200000"}},
    ]}}
    aapl, option = parse_positions(account, "12345678", skips)
    assert (aapl.symbol, aapl.quantity, aapl.average_price, aapl.unrealized_pnl) == ("AAPL", 10.0, 150.12, 200.0)
    assert aapl.extra == {"cusip": "037833100"}
    assert (option.quantity, option.average_price, option.asset_type) == (-5.0, 400.0, "OPTION")


def test_bad_positions_are_counted_not_fatal(skips, caplog):
    account = {"securitiesAccount": {"positions": [{"longQuantity": 1.0}, "junk", {"instrument": {"symbol": "X"}},
                                                   {"longQuantity": "2", "instrument": {"symbol": "MSFT"}}]}}
    positions = parse_positions(account, "1", skips)
    assert [(p.symbol, p.quantity) for p in positions] == [("MSFT", 2.0)]
    assert skips.counts["position_without_symbol_or_quantity"] == 3
    assert "skipped a Schwab record" in caplog.text


def test_cash_account_without_buying_power(skips):
    account = {"securitiesAccount": {"type": "CASH", "accountNumber": "87654321",
                                     "initialBalances": {"cashBalance": 5000.0, "liquidationValue": 6700.0},
                                     "currentBalances": {"cashAvailableForTrading": 4800.0, "totalCash": 5000.0}}}
    (balance,) = parse_balances(account, "87654321", skips)
    assert balance.buying_power is None and balance.equity is None
    assert (balance.cash, balance.account_value, balance.currency) == (5000.0, 6700.0, "USD")
    assert balance.extra == {"account_type": "CASH", "cash_available_for_trading": 4800.0}


def test_account_without_balances_is_skipped(skips):
    assert parse_balances({"securitiesAccount": {"type": "MARGIN"}}, "1", skips) == []
    assert skips.counts["account_without_balances"] == 1


@pytest.mark.parametrize(
    "schwab,filled,expected",
    [("WORKING", 0, "open"), ("WORKING", 3, "partially_filled"), ("QUEUED", 0, "pending"), ("AWAITING_PARENT_ORDER", 0, "pending"),
     ("PENDING_CANCEL", 0, "pending_cancel"), ("CANCELED", 0, "canceled"), ("FILLED", 10, "filled"), ("REJECTED", 0, "rejected"),
     ("EXPIRED", 0, "expired"), ("REPLACED", 0, "replaced"), ("SOMETHING_NEW", 0, "unknown"), (None, None, "unknown")],
)
def test_order_status_mapping(schwab, filled, expected):
    assert order_status(schwab, filled) == expected
    assert expected in ORDER_STATUSES


def test_orders_with_children_fills_and_bad_entries(skips):
    data = [
        {"orderId": 1, "status": "FILLED", "orderType": "LIMIT", "duration": "DAY", "quantity": 10.0, "filledQuantity": 10.0,
         "remainingQuantity": 0.0, "price": 10.0, "enteredTime": "2024-03-29T14:30:00+0000",
         "orderLegCollection": [{"instruction": "SELL_SHORT", "quantity": 10.0, "instrument": {"symbol": "XYZ"}}],
         "orderActivityCollection": [{"activityType": "EXECUTION", "executionLegs": [
             {"quantity": 4.0, "price": 10.0, "time": "2024-03-29T14:31:00+0000"},
             {"quantity": 6.0, "price": 10.5, "time": "2024-03-29T14:32:00.000Z"}]}],
         "childOrderStrategies": [{"orderId": 2, "status": "WORKING", "orderType": "STOP", "stopPrice": 12.0,
                                   "orderLegCollection": [{"instruction": "BUY_TO_COVER", "instrument": {"symbol": "XYZ"}}]}]},
        {"status": "WORKING"},  # no id: logged and counted
    ]
    parent, child = parse_orders(data, "12345678", skips)
    assert (parent.order_id, parent.side, parent.status, parent.broker_status) == ("1", "sell", "filled", "FILLED")
    assert parent.average_fill_price == pytest.approx(10.3)
    assert parent.timestamp == parse_time("2024-03-29T14:32:00+0000") and parent.entered_at == parse_time("2024-03-29T14:30:00Z")
    assert (parent.order_type, parent.time_in_force) == ("limit", "day")
    assert (child.order_id, child.side, child.status, child.stop_price) == ("2", "buy", "open", 12.0)
    assert skips.counts["order_without_id"] == 1


def test_transactions_pick_the_security_leg_and_never_drop_one_without_id(skips, caplog):
    data = [
        {"activityId": 7, "type": "TRADE", "time": "2024-03-29T14:31:02+0000", "orderId": 1, "netAmount": -600.8,
         "transferItems": [{"instrument": {"assetType": "CURRENCY", "symbol": "CURRENCY_USD"}, "cost": -1.0, "feeType": "COMMISSION"},
                           {"instrument": {"assetType": "EQUITY", "symbol": "AAPL"}, "amount": 4.0, "price": 149.95}]},
        {"type": "JOURNAL", "netAmount": 100.0, "description": "transfer"},
        "not a transaction",
    ]
    trade, journal = parse_transactions(data, "12345678", skips)
    assert (trade.transaction_id, trade.type, trade.symbol, trade.quantity, trade.price, trade.amount, trade.order_id) == (
        "7", "trade", "AAPL", 4.0, 149.95, -600.8, "1")
    assert journal.transaction_id.startswith("content-") and journal.type == "journal"
    again = parse_transactions(data[1:2], "12345678", skips)[0]
    assert again.transaction_id == journal.transaction_id  # stable: published once by the runner
    assert "without activityId" in caplog.text
    assert skips.counts["transaction_not_an_object"] == 1


def test_time_formats():
    assert parse_time("2024-03-29T14:30:00+0000") == 1711722600000
    assert parse_time("2024-03-29T14:30:00.000Z") == 1711722600000
    assert parse_time("yesterday") is None and parse_time(None) is None


# httpx's Response.json() accepts the literals NaN, Infinity and -Infinity (Python's json module does), so a
# Schwab answer can carry them. Such a field is left out (null) and counted; the rest of the record is kept.
NON_FINITE_ACCOUNT = """{"securitiesAccount": {"type": "MARGIN", "accountNumber": "12345678",
  "positions": [
    {"longQuantity": 10.0, "shortQuantity": 0.0, "averagePrice": 150.12, "marketValue": NaN,
     "longOpenProfitLoss": 200.0, "currentDayProfitLoss": Infinity, "instrument": {"assetType": "EQUITY", "symbol": "AAPL"}},
    {"longQuantity": NaN, "shortQuantity": 0.0, "instrument": {"assetType": "EQUITY", "symbol": "MSFT"}},
    {"longQuantity": 3.0, "shortQuantity": 0.0, "averagePrice": "NaN", "instrument": {"assetType": "EQUITY", "symbol": "IBM"}}],
  "currentBalances": {"cashBalance": 1000.0, "buyingPower": -Infinity, "equity": 25000.0, "liquidationValue": NaN,
                      "availableFunds": NaN},
  "initialBalances": {"liquidationValue": 24000.0}}}"""


def test_a_non_finite_number_is_a_counted_field_skip_and_the_rest_is_kept(skips, caplog):
    from livedata_core.models import check_model

    account = httpx_json(NON_FINITE_ACCOUNT)
    aapl, ibm = parse_positions(account, "12345678", skips)
    assert (aapl.symbol, aapl.quantity, aapl.average_price, aapl.unrealized_pnl) == ("AAPL", 10.0, 150.12, 200.0)
    assert aapl.market_value is None and aapl.extra is None  # NaN and Infinity left out, not published as such
    assert (ibm.quantity, ibm.average_price) == (3.0, None)
    (balance,) = parse_balances(account, "12345678", skips)
    # An unusable liquidationValue falls through to the next source, as a missing one does.
    assert (balance.cash, balance.buying_power, balance.equity, balance.account_value) == (1000.0, None, 25000.0, 24000.0)
    assert "available_funds" not in (balance.extra or {})
    for model in (aapl, ibm, balance):
        check_model(model)  # the runner publishes them
    # MSFT's quantity is unusable: that position cannot be published at all; the others are field-level skips.
    assert skips.counts == {"non_finite_number": 6, "position_without_symbol_or_quantity": 1}
    text = caplog.text
    assert "marketValue" in text and "position AAPL of account 12345678" in text and "buyingPower" in text


def test_non_finite_numbers_in_orders_and_transactions_are_left_out(skips):
    orders = httpx_json("""[{"orderId": 7, "status": "FILLED", "quantity": 5.0, "filledQuantity": 5.0, "price": NaN,
      "orderLegCollection": [{"instruction": "BUY", "instrument": {"symbol": "AAPL"}, "quantity": 5.0}],
      "orderActivityCollection": [{"activityType": "EXECUTION", "executionLegs": [{"quantity": 5.0, "price": Infinity}]}]}]""")
    (order,) = parse_orders(orders, "12345678", skips)
    assert (order.order_id, order.status, order.quantity, order.price, order.average_fill_price) == ("7", "filled", 5.0, None, None)
    transactions = httpx_json("""[{"activityId": 1, "type": "TRADE", "netAmount": -Infinity,
      "transferItems": [{"instrument": {"assetType": "EQUITY", "symbol": "AAPL"}, "amount": 5.0, "price": NaN}]}]""")
    (tx,) = parse_transactions(transactions, "12345678", skips)
    assert (tx.transaction_id, tx.quantity, tx.price, tx.amount) == ("1", 5.0, None, None)
    from livedata_core.models import check_model

    check_model(order)
    check_model(tx)
    assert skips.counts == {"non_finite_number": 4}


def httpx_json(text: str):
    import httpx

    return httpx.Response(200, content=text.encode(), headers={"Content-Type": "application/json"}).json()
