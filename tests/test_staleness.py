"""Per-symbol staleness: a symbol silent past stale_after while its market is open is resubscribed once, then
reported stale (status, readiness, the events channel, `livedata status`); never outside its session."""

import asyncio
import datetime as dt
import json
import threading
from zoneinfo import ZoneInfo

import httpx
import pytest
import redis

from livedata_core import cli
from livedata_core.errors import ConfigError
from livedata_core.runner.ops.market_hours import SessionMap
from livedata_core.runner.ops.staleness import SymbolStaleness
from livedata_core.runner import load_config
from livedata_core.testing import running

from ops_feed import FeedBroker, eventually, feed_plugin, feed_runner

NY = ZoneInfo("America/New_York")
WEDNESDAY_11AM = dt.datetime(2024, 6, 12, 11, 0, tzinfo=NY).timestamp()  # US equities open since 09:30
SATURDAY_NOON = dt.datetime(2024, 6, 15, 12, 0, tzinfo=NY).timestamp()


# -- the rules, on given times ------------------------------------------------------------------------------------


def tracker(stale_after=1.0, patterns=()):
    last = {}
    return SymbolStaleness(stale_after, SessionMap(patterns), last), last


def test_a_silent_symbol_is_resubscribed_once_then_stale_until_it_updates():
    watch, last = tracker()
    assert watch.check({"AAPL", "MSFT"}, 0.0, WEDNESDAY_11AM, "conn-1").resubscribe == []
    last["AAPL"] = 1.0
    assert watch.check({"AAPL", "MSFT"}, 1.0, WEDNESDAY_11AM, "conn-1").resubscribe == []
    verdict = watch.check({"AAPL", "MSFT"}, 1.1, WEDNESDAY_11AM, "conn-1")
    assert verdict.resubscribe == ["MSFT"] and verdict.stale == []
    assert watch.check({"AAPL", "MSFT"}, 1.2, WEDNESDAY_11AM, "conn-1").stale == []  # its grace: 0.25 s
    verdict = watch.check({"AAPL", "MSFT"}, 1.4, WEDNESDAY_11AM, "conn-1")
    assert verdict.resubscribe == [] and [s for s, _, _ in verdict.stale] == ["MSFT"]
    assert verdict.stale[0][2] == "us_equity" and verdict.stale[0][1] > 1.0
    for now in (2.0, 5.0, 9.0):  # stays stale, never resubscribed again
        last["AAPL"] = now
        verdict = watch.check({"AAPL", "MSFT"}, now, WEDNESDAY_11AM, "conn-1")
        assert verdict.resubscribe == [] and verdict.stale == [] and verdict.fresh == []
    last["MSFT"] = 9.5
    assert watch.check({"AAPL", "MSFT"}, 9.6, WEDNESDAY_11AM, "conn-1").fresh == [("MSFT", "updated")]
    assert watch.stale == {}


def test_no_alarm_while_the_market_is_closed():
    watch, last = tracker()
    watch.check({"AAPL"}, 0.0, SATURDAY_NOON, "conn-1")
    verdict = watch.check({"AAPL"}, 3600.0, SATURDAY_NOON + 3600, "conn-1")
    assert verdict.resubscribe == [] and verdict.stale == []


def test_silence_counts_from_the_session_start():
    watch, last = tracker(stale_after=60.0)
    opening = dt.datetime(2024, 6, 12, 9, 30, tzinfo=NY).timestamp()
    last["AAPL"] = 0.0  # last updated at yesterday's close, long ago in loop time
    watch.check({"AAPL"}, 0.0, opening - 60, "conn-1")
    assert watch.check({"AAPL"}, 50_000.0, opening + 30, "conn-1").resubscribe == []
    assert watch.check({"AAPL"}, 50_031.0, opening + 61, "conn-1").resubscribe == ["AAPL"]


def test_a_stale_symbol_stops_being_stale_when_its_session_closes_or_it_is_unsubscribed():
    watch, last = tracker(patterns=[("BTC*", "always")])
    closing = dt.datetime(2024, 6, 12, 16, 0, tzinfo=NY).timestamp()
    watch.check({"AAPL", "BTCUSD"}, 0.0, closing - 10, "conn-1")
    watch.check({"AAPL", "BTCUSD"}, 2.0, closing - 8, "conn-1")
    verdict = watch.check({"AAPL", "BTCUSD"}, 2.5, closing - 7.5, "conn-1")
    assert sorted(s for s, _, _ in verdict.stale) == ["AAPL", "BTCUSD"]
    assert watch.check({"AAPL", "BTCUSD"}, 20.0, closing + 10, "conn-1").fresh == [("AAPL", "session closed")]
    assert watch.check({"AAPL"}, 21.0, closing + 11, "conn-1").fresh == [("BTCUSD", "unsubscribed")]
    assert "BTCUSD" not in last


def test_a_new_connection_restarts_the_silence_of_symbols_not_stale():
    watch, last = tracker()
    watch.check({"AAPL"}, 0.0, WEDNESDAY_11AM, "conn-1")
    assert watch.check({"AAPL"}, 0.9, WEDNESDAY_11AM, "conn-2").resubscribe == []
    assert watch.check({"AAPL"}, 1.5, WEDNESDAY_11AM, "conn-2").resubscribe == []
    assert watch.check({"AAPL"}, 2.0, WEDNESDAY_11AM, "conn-2").resubscribe == ["AAPL"]


def test_configuration_of_stale_after_and_market_hours_is_checked():
    with pytest.raises(ConfigError, match="brokers.demo.stale_after must be a number"):
        load_config({"brokers": {"demo": {"stale_after": "5m"}}}, env={})
    with pytest.raises(ConfigError, match="brokers.demo.market_hours must be a table"):
        load_config({"brokers": {"demo": {"market_hours": "always"}}}, env={})
    config = load_config({"brokers": {"demo": {"market_hours": {"BTC*": "crypto"}}}}, env={})
    from livedata_core.runner import Runner

    with pytest.raises(ConfigError, match=r"brokers.demo.market_hours.'BTC\*': no session class 'crypto'"):
        Runner(config)


# -- a runner whose feed keeps sending heartbeats but stops one symbol ------------------------------------------


class Events:
    """What is announced on live_data:events:stale."""

    def __init__(self, url):
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe("live_data:events:stale")
        self.pubsub.get_message(timeout=2)
        self.seen = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.05)
            if message and message["type"] == "message":
                self.seen.append(json.loads(message["data"]))

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.pubsub.close()
        self.client.close()


def test_a_symbol_that_stops_while_heartbeats_go_on_is_resubscribed_once_then_reported_stale(redis_server, capsys):
    feed = FeedBroker()
    events = Events(redis_server.url)

    async def go():
        with feed_plugin(feed):
            runner = feed_runner(redis_server.url, clock=lambda: WEDNESDAY_11AM, stale_after=0.5)
            async with running(runner):
                url = f"{runner.ops.url}/readyz"
                async with httpx.AsyncClient() as http:
                    await eventually(lambda: runner.status()["brokers"]["feed"]["state"] == "streaming")
                    assert (await http.get(url)).status_code == 200
                    feed.silenced.add("MSFT")
                    await eventually(lambda: "MSFT" in runner.status()["brokers"]["feed"]["stale"], what="MSFT stale")
                    answer = await http.get(url)
                    status = runner.status()["brokers"]["feed"]
                    await asyncio.to_thread(cli.main, ["status", "--redis-url", redis_server.url])
                    await asyncio.sleep(2.0)  # four times stale_after: no second resubscribe
                    later = runner.status()["brokers"]["feed"]
                    feed.silenced.clear()
                    await eventually(lambda: not runner.status()["brokers"]["feed"]["stale"], what="MSFT fresh")
                    await eventually(lambda: len(events.seen) >= 2, what="the fresh event")
                    after = await http.get(url)
        return answer, status, later, after

    try:
        answer, status, later, after = asyncio.run(go())
    finally:
        events.close()
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "unavailable" and body["stale"] == {"feed": ["MSFT"]}
    assert any("feed: 1 stale symbol while the market is open: MSFT (silent" in r for r in body["reasons"]), body
    assert list(status["stale"]) == ["MSFT"] and "AAPL" not in status["stale"]
    assert status["resubscribes"] == 1 and later["resubscribes"] == 1
    assert feed.unsubscribe_calls == [["MSFT"]]
    assert feed.subscribe_calls == [["AAPL", "MSFT"], ["MSFT"]]
    stale, fresh = events.seen[0], events.seen[-1]
    assert stale["stale"] is True and stale["symbol"] == "MSFT" and stale["instance"] == "feed"
    assert stale["plugin"] == "feed" and stale["session"] == "us_equity" and stale["stale_after"] == 0.5
    assert stale["silent_for"] > 0.5
    assert fresh == {**fresh, "stale": False, "symbol": "MSFT", "reason": "updated"}
    assert after.status_code == 200 and after.json()["reasons"] == []
    out = capsys.readouterr().out
    assert "  stale            MSFT (silent " in out and "resubscribed 1" in out


def test_no_alarm_for_a_symbol_whose_session_is_closed(redis_server):
    feed = FeedBroker()

    async def go():
        with feed_plugin(feed):
            # Saturday: US equities are closed; BTCUSD's class is open all week.
            runner = feed_runner(redis_server.url, clock=lambda: SATURDAY_NOON, stale_after=0.3,
                                 symbols=["AAPL", "BTCUSD"], market_hours={"BTC*": "always"})
            async with running(runner):
                await eventually(lambda: runner.status()["brokers"]["feed"]["state"] == "streaming")
                feed.silenced.update({"AAPL", "BTCUSD"})
                await eventually(lambda: "BTCUSD" in runner.status()["brokers"]["feed"]["stale"], what="BTCUSD stale")
                async with httpx.AsyncClient() as http:
                    body = (await http.get(f"{runner.ops.url}/readyz")).json()
                return runner.status()["brokers"]["feed"], body

    status, body = asyncio.run(go())
    assert list(status["stale"]) == ["BTCUSD"]
    assert status["resubscribes"] == 1 and feed.unsubscribe_calls == [["BTCUSD"]]
    assert body["stale"] == {"feed": ["BTCUSD"]} and not any("AAPL" in r for r in body["reasons"])
