"""Record and replay (issue 19) against the fake Client Portal gateway: the runner records with ``[record] dir``,
the gateway asks for the tickle session by frame (``{"session": ...}``), a plain symbol is looked up over REST;
the recording holds no session token, and replaying it gives the same quotes per symbol and order events."""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("zstandard", reason="recordings need zstandard: run `python3 dev.py shell true` to install it")

from livedata_core.models import to_dict  # noqa: E402
from livedata_core.recording.reader import Recording, read_file  # noqa: E402
from livedata_core.runner import Runner, load_config  # noqa: E402
from livedata_core.plugin_kit.tokens import MemoryTokenStore  # noqa: E402
from livedata_core.testing import PublishedCollector, replay_recording, running  # noqa: E402
from livedata_ibkr.testing import SESSION_TOKEN, FakeGateway  # noqa: E402


def payload(model) -> dict:
    return to_dict(model)  # received_at too: a replay stamps each frame's recorded receive time


def by_symbol(models) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for m in models:
        if m.TYPE == "quotes":
            out.setdefault(m.symbol, []).append(payload(m))
    return out


def test_an_ibkr_session_replays_to_the_same_quotes_and_orders_without_its_session_token(
        redis_server, fast_settings, tmp_path):  # fmt: skip
    record = tmp_path / "rec"

    async def main(collector):
        async with FakeGateway(hb_interval=0.2) as gw:
            gw.cookie_auth = False  # the session goes in a frame, which must not reach the recording
            table = {**gw.settings(**fast_settings), "symbols": ["AAPL", "IBM@8314"],
                     "poll": {"positions": 0, "balances": 0, "orders": 0, "transactions": 0}}  # fmt: skip
            config = load_config({"redis": {"url": redis_server.url}, "brokers": {"ibkr": table},
                                  "record": {"dir": str(record)}, "shutdown_timeout": 2.0}, env={})  # fmt: skip
            async with running(Runner(config, token_store=MemoryTokenStore())):
                await gw.wait_for(lambda: gw.subscribed(265598) and gw.subscribed(8314), timeout=5)
                await gw.wait_for(lambda: any(c.orders for c in gw.clients), timeout=10)
                for n in range(200):
                    await gw.push_quote(265598, {"31": f"{100 + n / 100:.2f}", "84": f"{99 + n / 100:.2f}"})
                    if n % 2:
                        await gw.push_quote(8314, {"31": f"{50 + n / 100:.2f}", "86": f"{51 + n / 100:.2f}"})
                    if n % 50 == 10:
                        await gw.push_order({"acct": "DU1234", "orderId": 55 + n, "ticker": "AAPL", "side": "BUY",
                                             "status": "Submitted", "remainingQuantity": 5.0, "filledQuantity": 0.0,
                                             "orderType": "Limit", "price": 10})  # fmt: skip
                    await asyncio.sleep(0.005)
                await collector.wait_for_async("orders", "DU1234", count=4)
                await collector.wait_for_async("quotes", "AAPL", where=lambda q: q.last == 101.99)
                await asyncio.sleep(0.2)
            assert gw.session_frames >= 1

    with PublishedCollector(redis_server.url) as collector:
        asyncio.run(main(collector))
        live = [m.data for m in collector.messages]
    assert len(by_symbol(live)["AAPL"]) == 200 and len(by_symbol(live)["IBM@8314"]) == 100

    text = "\n".join(json.dumps(r) for p in record.rglob("*.jsonl.zst") for r in read_file(p))
    assert SESSION_TOKEN not in text
    assert all(SESSION_TOKEN.encode() not in p.read_bytes() for p in record.rglob("*") if p.is_file())
    records = list(Recording(record).records("ibkr"))
    sent = [r["data"] for r in records if r["kind"] == "out"]
    assert '{"session":"[redacted]"}' in sent and "sor+{}" in sent
    assert any(r["kind"] == "rest" and "/iserver/secdef/search" in r["url"] for r in records)

    replayed = replay_recording(record)
    assert by_symbol(replayed.models) == by_symbol(live)
    assert [payload(m) for m in replayed.of("orders")] == [payload(m) for m in live if m.TYPE == "orders"]
    extra = replayed.status["ibkr"]["extra"]
    assert extra["replay"].startswith("100%") and "replay_rest_missing" not in extra
