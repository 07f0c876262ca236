"""The time windows asked for orders and transactions, and answers that hit Schwab's 3000-row cap."""

from __future__ import annotations

import asyncio
import calendar
import logging
import time

import pytest

from livedata_core.plugin_kit.plugins import get_broker
from livedata_core.models import now_ms
from livedata_schwab.plugin import MAX_WINDOW_REQUESTS

HASH_MARGIN = "A" * 64  # the fake Schwab's hash of account 12345678 (conftest.py)
ORDERS_PATH = f"/trader/v1/accounts/{HASH_MARGIN}/orders"
TRANSACTIONS_PATH = f"/trader/v1/accounts/{HASH_MARGIN}/transactions"
DAY_MS = 86_400_000
PARAMS = {"orders": ("fromEnteredTime", "toEnteredTime"), "transactions": ("startDate", "endDate")}
PATHS = {"orders": ORDERS_PATH, "transactions": TRANSACTIONS_PATH}


def ms(iso: str) -> int:
    """Schwab's ``2024-03-29T14:30:00.000Z`` as milliseconds since the epoch."""
    seconds = calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))
    return seconds * 1000 + int(iso[20:23])


def fetch(settings, store, kind: str, since: int, ctx_out: dict | None = None) -> list:
    broker = get_broker("schwab")
    ctx = broker.make_context({}, store)
    ctx.settings = settings

    async def go():
        await broker.call("authenticate", ctx=ctx)
        try:
            return await broker.call(f"fetch_{kind}", ctx=ctx, account_id="12345678", since=since)
        finally:
            await broker.call("shutdown", ctx=ctx)

    items = asyncio.run(go())
    if ctx_out is not None:
        ctx_out.update(ctx.status)
    return items


def windows(fake, kind: str) -> list[tuple[int, int]]:
    start, end = PARAMS[kind]
    return [(ms(r["query"][start]), ms(r["query"][end])) for r in fake.requests if r["path"] == PATHS[kind]]


def rows(kind: str, ids: range) -> list[dict]:
    if kind == "orders":
        return [{"orderId": i, "status": "FILLED", "orderType": "MARKET", "quantity": 1.0, "enteredTime": "2024-03-29T14:30:00+0000"} for i in ids]
    return [{"activityId": i, "type": "TRADE", "time": "2024-03-29T14:31:02+0000", "netAmount": 1.0} for i in ids]


def test_transactions_window_is_since_as_given(fake_schwab, settings_for, saved_tokens):
    # The runner's sliding `since` (previous poll start minus 24 h) is used as it is: no extra day added.
    since = now_ms() - 2 * 3600_000
    before = now_ms()
    fetch(settings_for(), saved_tokens(), "transactions", since)
    [(start, end)] = windows(fake_schwab, "transactions")
    assert start == since
    assert before + 55_000 <= end <= now_ms() + 60_000  # to now, plus a minute for clock skew


def test_windows_are_capped_at_a_year(fake_schwab, settings_for, saved_tokens):
    fetch(settings_for(), saved_tokens(), "transactions", now_ms() - 500 * DAY_MS)
    fetch(settings_for(), saved_tokens(), "orders", now_ms() - 500 * DAY_MS)
    for kind in ("transactions", "orders"):
        [(start, end)] = windows(fake_schwab, kind)
        assert end - start == 364 * DAY_MS


def test_orders_window_reaches_back_orders_lookback_days(fake_schwab, settings_for, saved_tokens):
    now = now_ms()
    fetch(settings_for(), saved_tokens(), "orders", now - 2 * 3600_000)  # a recent since: the lookback wins
    fetch(settings_for(orders_lookback_days=0), saved_tokens(), "orders", now - 2 * 3600_000)
    fetch(settings_for(orders_lookback_days=1), saved_tokens(), "orders", now - 3 * DAY_MS)  # an older since wins
    (lookback, _), (plain, _), (older, _) = windows(fake_schwab, "orders")
    assert abs(lookback - (now - 60 * DAY_MS)) < 5_000
    assert plain == now - 2 * 3600_000 and older == now - 3 * DAY_MS


@pytest.mark.parametrize("kind", ["transactions", "orders"])
def test_an_answer_at_the_cap_is_asked_again_in_halves(kind, fake_schwab, settings_for, saved_tokens, caplog):
    # Schwab answers at most 3000 rows: a full answer may have left rows out, so both halves are asked for.
    fake_schwab.script(PATHS[kind], (200, {}, rows(kind, range(3000))), (200, {}, rows(kind, range(1700))), (200, {}, rows(kind, range(1650, 3200))))
    since = now_ms() - 10 * DAY_MS
    status: dict = {}
    with caplog.at_level(logging.WARNING):
        items = fetch(settings_for(orders_lookback_days=0), saved_tokens(), kind, since, status)
    assert len(items) == 3200  # nothing lost, no duplicates from the overlapping answers
    (start, end), older, newer = windows(fake_schwab, kind)
    assert start == since and older[0] == start and newer[1] == end
    assert newer[0] <= older[1] and older[1] - newer[0] <= 1000  # the halves cover the window
    assert "maximum of 3000" in caplog.text and "none missing" in caplog.text and "3 requests" in caplog.text
    assert "result_cap" not in status


@pytest.mark.parametrize("kind", ["transactions", "orders"])
def test_a_window_that_cannot_be_narrowed_warns_with_the_count(kind, fake_schwab, settings_for, saved_tokens, caplog):
    fake_schwab.script(PATHS[kind], (200, {}, rows(kind, range(3000))))
    status: dict = {}
    with caplog.at_level(logging.WARNING):
        items = fetch(settings_for(orders_lookback_days=0), saved_tokens(), kind, now_ms() - 30_000, status)
    assert len(items) == 3000 and len(windows(fake_schwab, kind)) == 1  # 90 s: too short to split
    assert "some " + kind + " may be missing" in caplog.text and "got 3000 in 1 requests" in caplog.text
    assert "may be missing" in status["result_cap"]


def test_splitting_stops_at_the_request_budget(fake_schwab, settings_for, saved_tokens, caplog):
    fake_schwab.script(TRANSACTIONS_PATH, *[(200, {}, rows("transactions", range(i * 3000, (i + 1) * 3000))) for i in range(16)])
    status: dict = {}
    with caplog.at_level(logging.WARNING):
        items = fetch(settings_for(requests_per_minute=6000), saved_tokens(), "transactions", now_ms() - 300 * DAY_MS, status)
    asked = windows(fake_schwab, "transactions")
    assert MAX_WINDOW_REQUESTS - 1 <= len(asked) <= MAX_WINDOW_REQUESTS  # each split costs two requests
    assert len(items) == len(asked) * 3000
    # Every part of the window was asked for at least once although the budget ran out.
    assert min(lo for lo, _ in asked) == asked[0][0] and max(hi for _, hi in asked) == asked[0][1]
    assert "may be missing" in caplog.text and "may be missing" in status["result_cap"]
