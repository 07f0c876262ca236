"""The runner's market-data kinds (issue 15) end to end with the demo broker and a real redis-server: bars with no
gaps and no repeats across a dropped connection, order books trimmed to depth_levels, option chains, live control
and status per kind, and what a configuration may ask of a broker."""

import asyncio
import json

import pytest
import redis

from livedata_core.errors import ConfigError, NotSupported, SymbolsRefused
from livedata_core.models import Bar, Depth, OptionQuote
from livedata_core.redis_io.subscriber import latest
from livedata_core.runner import Runner, load_config
from livedata_core.testing import running

FAST = {"initial": 0.3, "max": 0.3, "login_retry": 0.5}
OFF = {"positions": 0, "balances": 0, "orders": 0, "transactions": 0}
MINUTE = 60_000


def config(url, **table):
    demo = {"symbols": ["AAPL"], "poll": OFF, "quotes_per_second": 50, "bar_seconds": 0.1, "depth_per_second": 20,
            "heartbeat_timeout": 5, **table}
    return load_config({"redis": {"url": url}, "backoff": FAST, "status_interval": 0.1, "brokers": {"demo": demo}}, env={})


def _bars(r, symbol):
    return [json.loads(fields[b"data"]) for _, fields in r.xrange(f"live_data:stream:bars:{symbol}")]


async def _until(check, timeout=10.0):
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


def test_bars_stay_one_per_minute_across_a_dropped_connection(redis_server):
    r = redis.Redis(port=redis_server.port)

    async def go():
        async with running(Runner(config(redis_server.url, bars=["/ES", "AAPL"]))) as runner:
            rt = runner.runtimes["demo"]
            await _until(lambda: len(_bars(r, "/ES")) >= 5 and len(_bars(r, "AAPL")) >= 5)
            # Subscribed again on the open connection, the demo (as brokers do) sends the last bar again: a repeat.
            assert await rt.resubscribe(["/ES", "AAPL"], "bars")
            await _until(lambda: rt.bars.duplicates >= 1)
            # The connection drops; the runner backs off 0.3 s, about three demo minutes.
            await rt._stream_obj.close()
            await _until(lambda: rt.status.reconnects >= 1)
            # Backoff with jitter: 0.15 to 0.3 s, so one to three demo minutes of each symbol are missed.
            await _until(lambda: rt.bars.gaps_filled >= 2 and len(_bars(r, "/ES")) >= 15)
            from livedata_core.runner.ops.metrics import RunnerCollector

            metrics = {(s.name, s.labels.get("kind")): s.value for m in RunnerCollector(runner).collect()
                       for s in m.samples if s.labels.get("instance") == "demo"}  # fmt: skip
            assert metrics[("livedata_bars_backfilled_total", None)] == rt.bars.backfilled
            assert metrics[("livedata_bar_gaps_unfilled_total", None)] == 0
            assert metrics[("livedata_messages_published_total", "bars")] == rt.status.market_events["bars"] > 0
            assert metrics[("livedata_messages_published_total", "quotes")] > 0
            return runner.status()["brokers"]["demo"]

    status = asyncio.run(go())
    for symbol in ("/ES", "AAPL"):
        bars = _bars(r, symbol)
        starts = [b["start"] for b in bars]
        # One bar per minute, none missing, none twice, in order.
        assert starts == list(range(starts[0], starts[0] + MINUTE * len(starts), MINUTE))
        assert all(b["interval"] == 60 and b["instance"] == "demo" for b in bars)
    assert any(b["backfilled"] for b in _bars(r, "/ES"))
    assert status["bars"]["backfilled"] >= 2 and status["bars"]["gaps_filled"] >= 2 and status["bars"]["unfilled"] == 0
    assert status["bars"]["duplicates"] >= 1
    assert status["subscriptions"]["bars"] == ["/ES", "AAPL"]
    assert status["market_events"]["bars"] == status["bars"]["published"]


def test_a_restarted_runner_continues_the_bar_stream_where_it_stopped(redis_server):
    r = redis.Redis(port=redis_server.port)

    async def run_for(check):
        async with running(Runner(config(redis_server.url, bars=["/ES"]))):
            await _until(check)

    asyncio.run(run_for(lambda: len(_bars(r, "/ES")) >= 3))
    before = len(_bars(r, "/ES"))
    asyncio.run(run_for(lambda: len(_bars(r, "/ES")) >= before + 5))
    starts = [b["start"] for b in _bars(r, "/ES")]
    assert starts == list(range(starts[0], starts[0] + MINUTE * len(starts), MINUTE))


def test_books_are_trimmed_to_depth_levels_and_option_chains_stream_with_greeks(redis_server):
    async def go():
        async with running(Runner(config(redis_server.url, depth=["AAPL", "MSFT"], depth_levels=5))) as runner:
            rt = runner.runtimes["demo"]
            result = await runner._handle_command({"command": "chain", "broker": "demo", "underlying": "aapl",
                                                   "expiration": "2026-12-18", "strikes": 4})
            contracts = result["contracts"]
            assert len(contracts) == 8 and result["added"] == contracts and result["underlying"] == "AAPL"
            await _until(lambda: latest("quotes", contracts[0], url=redis_server.url) is not None
                         and latest("depth", "MSFT", url=redis_server.url) is not None)
            with pytest.raises(SymbolsRefused, match="no options on '/ES'"):
                await rt.chain("/ES")
            with pytest.raises(ConfigError, match="expiration '12/18/2026' is not a date"):
                await rt.chain("AAPL", "12/18/2026")
            status = runner.status()["brokers"]["demo"]
            removed = await rt.unchain("AAPL")
            return contracts, status, removed

    contracts, status, removed = asyncio.run(go())
    book = latest("depth", "AAPL", url=redis_server.url)
    assert type(book) is Depth and len(book.bids) == len(book.asks) == 5
    assert book.bids[0].price > book.bids[1].price and book.asks[0].price < book.asks[1].price  # best first
    option = latest("quotes", contracts[0], url=redis_server.url)
    assert type(option) is OptionQuote and option.put_call == "call" and option.expiration == "2026-12-18"
    assert option.delta is not None and option.strike > 0 and option.underlying == "AAPL" and option.instance == "demo"
    assert status["chains"] == {"AAPL": {"expiration": "2026-12-18", "strikes": 4, "contracts": 8}}
    assert set(contracts) <= set(status["subscriptions"]["quotes"])
    assert status["subscriptions"]["depth"] == ["AAPL", "MSFT"] and status["depth_levels"] == 5
    assert status["market_events"]["depth"] > 0
    assert sorted(removed["removed"]) == sorted(contracts)


def _quotes_only(broker):
    import attrs

    return attrs.evolve(broker.info, kinds=("quotes",))


def test_kinds_are_subscribed_live_and_a_broker_is_asked_only_for_kinds_it_streams(redis_server, monkeypatch):
    async def go():
        async with running(Runner(config(redis_server.url))) as runner:
            rt = runner.runtimes["demo"]
            assert (await runner.subscribe("demo", ["/NQ"], "bars"))["added"] == ["/NQ"]
            assert (await runner.subscribe("demo", ["qqq"], "depth"))["added"] == ["QQQ"]
            await _until(lambda: latest("bars", "/NQ", url=redis_server.url) is not None
                         and latest("depth", "QQQ", url=redis_server.url) is not None)
            assert (await runner.unsubscribe("demo", ["/NQ"], "bars"))["removed"] == ["/NQ"]
            assert (await runner.unsubscribe("demo", ["QQQ"], "bars"))["not_subscribed"] == ["QQQ"]
            with pytest.raises(ConfigError, match="unknown kind 'trades'"):
                await rt.subscribe(["AAPL"], "trades")
            monkeypatch.setattr(rt.broker, "info", _quotes_only(rt.broker))
            with pytest.raises(NotSupported, match="does not stream bars; it streams quotes"):
                await rt.subscribe(["AAPL"], "bars")
            return rt.wanted

    wanted = asyncio.run(go())
    assert wanted == {"quotes": {"AAPL"}, "bars": set(), "depth": {"QQQ"}}


def test_configuration_of_kinds_is_checked(redis_server, monkeypatch):
    with pytest.raises(ConfigError, match=r"brokers.demo.depth_levels must be at most 1000"):
        config(redis_server.url, depth=["AAPL"], depth_levels=5000)
    with pytest.raises(ConfigError, match="brokers.demo.bars must be a list of strings"):
        config(redis_server.url, bars=[1])
    with pytest.raises(ConfigError, match=r"brokers.demo.bars: .*not a symbol"):
        Runner(config(redis_server.url, bars=["a*b"]))
    # Existing configurations keep working: symbols are quotes.
    assert config(redis_server.url).brokers["demo"].symbols == ("AAPL",)
    from livedata_core.plugin_kit.plugins import get_broker

    broker = get_broker("demo")
    monkeypatch.setattr(broker, "info", _quotes_only(broker))
    with pytest.raises(ConfigError, match=r"brokers.demo.depth: broker 'demo' does not stream order books \(depth\) "
                                          r"\(it streams quotes\)"):
        Runner(config(redis_server.url, depth=["AAPL"]))


def test_one_instance_streams_a_symbols_bars(redis_server):
    # stream:bars:<symbol> names no instance: two instances writing it would publish every minute twice.
    demo = {"symbols": ["AAPL"], "poll": OFF, "quotes_per_second": 50, "bar_seconds": 0.1, "heartbeat_timeout": 5}

    def two(a_bars, b_bars):
        return load_config({"redis": {"url": redis_server.url}, "backoff": FAST, "brokers": {
            "demo": {**demo, "bars": a_bars}, "demo_b": {**demo, "plugin": "demo", "bars": b_bars}}}, env={})

    with pytest.raises(ConfigError, match=r"brokers.demo_b.bars: /ES is also in brokers.demo.bars; one instance"):
        Runner(two(["/ES", "AAPL"], ["/es"]))

    async def go():
        async with running(Runner(two(["/ES"], ["/NQ"]))) as runner:
            with pytest.raises(ConfigError, match="cannot subscribe bars of /ES to demo_b: /ES is streamed by demo"):
                await runner.subscribe("demo_b", ["/ES", "/YM"], "bars")
            assert runner.runtimes["demo_b"].wanted["bars"] == {"/NQ"}  # nothing of the refused command was taken
            await runner.subscribe("demo_b", ["/YM"], "bars")
            # Unsubscribed there, it may be streamed here.
            await runner.unsubscribe("demo", ["/ES"], "bars")
            await runner.subscribe("demo_b", ["/ES"], "bars")
            with pytest.raises(ConfigError, match="/ES is streamed by demo_b"):
                await runner.subscribe("demo", ["/ES"], "bars")
            return {name: rt.wanted["bars"] for name, rt in runner.runtimes.items()}

    assert asyncio.run(go()) == {"demo": set(), "demo_b": {"/NQ", "/YM", "/ES"}}
