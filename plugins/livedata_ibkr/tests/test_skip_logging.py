"""Skipped frames: counted in status every time, logged only the first few times over the life of the process."""

import asyncio
import logging

import orjson
import pytest

from livedata_core import streaming
from livedata_core.models import Quote
from livedata_core.runner import Runner, load_config
from livedata_core.plugin_kit.streaming import HEARTBEAT
from livedata_core.testing.running import running
from livedata_core.plugin_kit.tokens import MemoryTokenStore
from livedata_ibkr.testing import FakeGateway

REASON = "ibkr: unknown topic"


@pytest.fixture
def fresh_skip_log_limits(monkeypatch):
    """Forget what earlier tests of this process skipped, so this test sees its own first warnings."""
    monkeypatch.setattr(streaming, "_LIFETIME_SKIPS", {})


def _warnings(caplog, reason):
    return [r for r in caplog.records
            if r.levelno == logging.WARNING and r.getMessage().startswith(f"skipped ({reason},")]


def test_a_recurring_skip_is_logged_five_times_across_status_snapshots_and_reconnects(
        redis_server, fast_settings, caplog, fresh_skip_log_limits):
    # Every status snapshot moves the stream's skip counts into the status; that must not restart the warnings,
    # nor must a reconnect (a new stream). The status still counts every skip.
    async def main():
        async with FakeGateway(hb_interval=0.2) as gw:
            config = load_config({"redis": {"url": redis_server.url},
                                  "brokers": {"ibkr": {**gw.settings(**fast_settings), "symbols": ["AAPL"],
                                                       "poll": {"positions": 0, "balances": 0, "orders": 0,
                                                                "transactions": 0}}},
                                  "backoff": {"initial": 0.05, "max": 0.2}, "shutdown_timeout": 2.0}, env={})
            async with running(Runner(config, token_store=MemoryTokenStore())) as runner:
                def skipped():
                    return runner.status()["brokers"]["ibkr"]["skipped"].get(REASON, 0)

                await gw.wait_for(lambda: gw.subscribed(265598))
                for i in range(1, 31):
                    if i == 16:
                        await gw.drop_websockets()
                        await gw.wait_for(lambda: gw.ws_connections == 2 and gw.subscribed(265598), timeout=5)
                    await gw.send_raw(orjson.dumps({"topic": "zzz", "n": i}).decode())
                    await gw.wait_for(lambda: skipped() == i)  # one status snapshot after another
                assert gw.ws_connections == 2

    with caplog.at_level(logging.WARNING, logger="livedata.broker.ibkr"):
        asyncio.run(main())
    logged = [r.getMessage() for r in _warnings(caplog, REASON)]
    expected = [f"skipped ({REASON}, {n} so far): " for n in (1, 2, 3, 4)] + [
        f"skipped ({REASON}, 5 so far); from now on every 1000th is logged: "]
    assert len(logged) == len(expected), logged
    for message, start in zip(logged, expected):
        assert message.startswith(start), message


def test_every_thousandth_skip_is_logged_again(caplog, fresh_skip_log_limits):
    log = logging.getLogger("livedata.broker.test-skips")
    with caplog.at_level(logging.WARNING, logger=log.name):
        for _ in range(5):
            stats = streaming.StreamStats(log)  # a new stream per reconnect
            for _ in range(400):
                stats.skip("bad frame", "x")
                stats.skipped.clear()  # what each status snapshot does
    counts = [int(r.getMessage().split(", ")[1].split(" ")[0]) for r in _warnings(caplog, "bad frame")]
    assert counts == [1, 2, 3, 4, 5, 1000, 2000]


def test_a_bare_empty_frame_is_a_heartbeat_not_a_skip(authenticated, streaming, caplog):
    # The gateway sends empty {} frames as keep-alives (ibind ignores them); they must not be counted or logged.
    async def main():
        async with FakeGateway() as gw, authenticated(gw) as ctx, streaming(ctx, ["AAPL"]) as (stream, reader):
            await gw.wait_for(lambda: gw.subscribed(265598))
            for _ in range(3):
                await gw.send_raw("{}")
            await gw.push_quote(265598, {"31": "10.00"})
            await gw.wait_for(lambda: reader.of(Quote))
            assert reader.items.count(HEARTBEAT) >= 3
            assert dict(stream.stats.skipped) == {}

    with caplog.at_level(logging.WARNING, logger="livedata.broker.ibkr"):
        asyncio.run(main())
    assert not [r for r in caplog.records if r.getMessage().startswith("skipped (")]
