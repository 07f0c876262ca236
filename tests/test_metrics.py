"""/metrics, scraped with a real HTTP client while the runner streams from a fake broker: every series is there with
plausible values, and no label carries a secret or grows without bound."""

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from livedata_core.testing import running

from ops_feed import SECRET, TOKEN_DAYS_LEFT, FeedBroker, eventually, feed_plugin, feed_runner

FEED = {"instance": "feed", "plugin": "feed"}
ALLOWED_LABELS = {"instance", "plugin", "kind", "reason", "state", "symbol", "le"}


def scrape(text):
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples, name, **labels):
    found = [v for got, v in samples.get(name, []) if got == labels]
    assert len(found) == 1, f"{name}{labels}: {samples.get(name)}"
    return found[0]


@pytest.fixture
def scraped(redis_server):
    # The first login is refused once (an auth failure and a reconnect); each connection sends an order and a quote
    # the publisher refuses (a skip); MSFT goes silent to be stale.
    feed = FeedBroker(fail_first_login=True)

    async def go():
        with feed_plugin(feed):
            runner = feed_runner(redis_server.url, stale_after=0.3, market_hours={"*": "always"},
                                 symbols=["AAPL", "MSFT", "SPY"])
            async with running(runner):
                async with httpx.AsyncClient() as http:
                    await eventually(lambda: runner.status()["brokers"]["feed"]["messages"] > 50)
                    feed.silenced.add("MSFT")
                    await eventually(lambda: runner.status()["brokers"]["feed"]["stale"], what="MSFT stale")
                    await eventually(lambda: runner.ops.metrics.latency.labels("feed", "feed")._sum.get() > 0,
                                     what="a latency sample")  # fmt: skip
                    answer = await http.get(f"{runner.ops.url}/metrics")
        return answer

    return asyncio.run(go())


def test_every_series_is_scraped_with_plausible_values(scraped):
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain; version=")
    s = scrape(scraped.text)
    assert value(s, "livedata_messages_published_total", **FEED, kind="quotes") > 50
    assert value(s, "livedata_messages_published_total", **FEED, kind="orders") >= 1
    assert value(s, "livedata_messages_published_total", **FEED, kind="positions") == 0
    count = value(s, "livedata_publish_latency_seconds_count", **FEED)
    total = value(s, "livedata_publish_latency_seconds_sum", **FEED)
    assert count >= 1 and 0 <= total / count < 5
    assert value(s, "livedata_publish_latency_seconds_bucket", **FEED, le="+Inf") == count
    assert value(s, "livedata_publisher_pending_messages") >= 0
    assert value(s, "livedata_publisher_conflated_total") >= 0
    assert value(s, "livedata_publisher_published_total") > 50
    assert value(s, "livedata_publisher_reconnects_total") == 0
    assert value(s, "livedata_redis_up") == 1 and value(s, "livedata_publisher_connected") == 1
    assert value(s, "livedata_broker_reconnects_total", **FEED) >= 1
    assert value(s, "livedata_auth_failures_total", **FEED) == 1
    assert value(s, "livedata_skipped_total", **FEED, reason="quote refused") >= 1
    assert 0 <= value(s, "livedata_last_message_age_seconds", **FEED) < 5
    assert 0 <= value(s, "livedata_last_heartbeat_age_seconds", **FEED) < 5
    assert value(s, "livedata_broker_state", **FEED, state="streaming") == 1
    assert value(s, "livedata_subscribed_symbols", **FEED) == 3
    assert value(s, "livedata_stale_symbols", **FEED) == 1
    assert value(s, "livedata_stale_symbol_silent_seconds", **FEED, symbol="MSFT") > 0.3
    assert value(s, "livedata_resubscribes_total", **FEED) == 1
    assert TOKEN_DAYS_LEFT - 0.01 < value(s, "livedata_refresh_token_days_left", **FEED) <= TOKEN_DAYS_LEFT


def test_no_metric_carries_a_secret_or_an_unbounded_label(scraped):
    assert SECRET not in scraped.text and "ACC-1" not in scraped.text  # a setting, an account number
    s = scrape(scraped.text)
    for name, series in s.items():
        for labels, _ in series:
            assert set(labels) <= ALLOWED_LABELS, (name, labels)
            if "symbol" in labels:  # only stale symbols, bounded by the subscription cap
                assert name == "livedata_stale_symbol_silent_seconds" and labels["symbol"] == "MSFT"
            if "state" in labels:
                assert labels["state"] in {"starting", "authenticating", "connecting", "streaming", "polling", "backoff",
                                           "login_required", "stopped", "failed"}  # fmt: skip


def test_skip_reasons_are_bounded():
    from livedata_core.runner.ops.metrics import MAX_REASONS, _bounded

    reasons = {f"reason {i}": i + 1 for i in range(MAX_REASONS + 20)}
    bounded = _bounded(reasons)
    assert len(bounded) == MAX_REASONS + 1 and sum(bounded.values()) == sum(reasons.values())
    assert bounded["other"] == sum(range(1, 21))
