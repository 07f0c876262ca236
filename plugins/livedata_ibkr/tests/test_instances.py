"""Two IBKR instances (two gateways, say a live and a paper username) in one runner (issue 12): each streams
its own symbols and polls its own accounts over its own gateway session, and one gateway going away leaves the
other instance streaming. Nothing of a login is kept at module level: each instance has its own IbkrSession."""

from __future__ import annotations

import asyncio

from livedata_core.runner import Runner, load_config
from livedata_core.testing.published import PublishedCollector
from livedata_core.testing.running import running
from livedata_core.plugin_kit.tokens import MemoryTokenStore
from livedata_ibkr.testing import FakeGateway

PAPER = "DU5678"


def _rename_account(gw: FakeGateway, new: str) -> None:
    """The gateway of another username: its one account is ``new``."""
    gw.accounts = [{**row, "id": new, "accountId": new, "accountVan": new, "displayName": new, "desc": new}
                   for row in gw.accounts]  # fmt: skip
    gw.positions = {new: [{**row, "acctId": new} for rows in gw.positions.values() for row in rows]}


def test_two_gateways_run_side_by_side(redis_server, fast_settings):
    poll = {"positions": 0.2, "balances": 0, "orders": 0, "transactions": 0}

    async def main(collector):
        async with FakeGateway(hb_interval=0.2) as live, FakeGateway(hb_interval=0.2) as paper:
            _rename_account(paper, PAPER)
            config = load_config({
                "redis": {"url": redis_server.url},
                "brokers": {"ibkr": {**live.settings(**fast_settings), "symbols": ["AAPL"], "poll": poll},
                            "ibkr_paper": {"plugin": "ibkr", **paper.settings(**fast_settings), "symbols": ["IBM@8314"],
                                           "poll": poll}},
                "backoff": {"initial": 0.05, "max": 0.2, "login_retry": 0.2}, "shutdown_timeout": 2.0}, env={})  # fmt: skip
            async with running(Runner(config, token_store=MemoryTokenStore())) as runner:
                await live.wait_for(lambda: live.subscribed(265598), timeout=5)
                await paper.wait_for(lambda: paper.subscribed(8314), timeout=5)
                assert not live.subscribed(8314) and not paper.subscribed(265598)
                await live.push_quote(265598, {"31": "10.50"})
                await paper.push_quote(8314, {"31": "20.50"})
                (aapl,) = await collector.wait_for_async("quotes", "AAPL", where=lambda q: q.last == 10.5)
                (ibm,) = await collector.wait_for_async("quotes", "IBM@8314", where=lambda q: q.last == 20.5)
                assert (aapl.instance, ibm.instance) == ("ibkr", "ibkr_paper")
                (spy,) = await collector.wait_for_async("positions", PAPER, where=lambda p: p.symbol == "SPY")
                assert (spy.broker, spy.instance) == ("ibkr", "ibkr_paper")
                await collector.wait_for_async("positions", "DU1234", where=lambda p: p.instance == "ibkr")
                sessions = [runner.runtimes[name].ctx.session for name in ("ibkr", "ibkr_paper")]
                assert sessions[0] is not sessions[1]

                # The live gateway goes away; the paper instance keeps streaming.
                await live.stop()
                mark = len(collector.messages)
                await paper.push_quote(8314, {"31": "21.50"})
                await collector.wait_for_async("quotes", "IBM@8314", where=lambda q: q.last == 21.5, after=mark)
                assert runner.status()["brokers"]["ibkr_paper"]["state"] == "streaming"

    with PublishedCollector(redis_server.url) as collector:
        asyncio.run(main(collector))
