"""The runner's state as Prometheus metrics (served on ``/metrics`` by :mod:`livedata_core.runner.ops.health`).

Nearly everything is read from the runner's status when Prometheus scrapes (a custom collector), so metrics cost the
publish path nothing. The one measurement of its own is the publish latency, sampled (:class:`LatencySampler`).

Labels are bounded: ``instance`` and ``plugin`` (the configured instances), ``kind`` (the five data types),
``reason`` (fixed skip texts, at most :data:`MAX_REASONS` per instance, the rest as ``other``), ``state`` (the
runner's fixed states) and ``symbol`` only on the series of stale symbols (at most the subscription cap). No label
or value carries a setting, an error text, an account number or a token. docs/operations.md lists every series.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ...channels import CHANNEL_TYPES
from . import REFRESH_TOKEN_EXPIRES_AT

__all__ = ["LATENCY_BUCKETS", "MAX_REASONS", "LatencySampler", "RunnerCollector", "RunnerMetrics"]

log = logging.getLogger("livedata.runner.metrics")

MAX_REASONS = 50
"""Skip reasons exported per instance; further ones are summed as ``reason="other"``."""
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SAMPLE_INTERVAL = 0.25
"""Seconds between publish-latency samples (one per instance with a new quote)."""
FLUSH_TIMEOUT = 30.0
DAY = 86400.0


class RunnerCollector:
    """A prometheus_client collector that reads a :class:`~livedata_core.runner.Runner` at each scrape.

    ``redis_up`` is the result of the last Redis probe (the health server probes before each scrape).
    """

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.redis_up: bool | None = None

    def describe(self) -> list[Metric]:
        return []  # families depend on the runner's state; describing none keeps registration from collecting

    def collect(self) -> Iterator[Metric]:
        status = self.runner.status()
        now = status.get("now") or time.time()
        pub = status["publisher"]
        yield _gauge("livedata_redis_up", "Whether Redis answered the last probe (PING) before this scrape.",
                     1.0 if self.redis_up else 0.0)
        yield _gauge("livedata_publisher_connected", "Whether the publisher's connection to Redis is up.",
                     1.0 if pub["connected"] else 0.0)
        yield _gauge("livedata_publisher_pending_messages",
                     "Payloads queued or sent but not yet confirmed by Redis (the publisher's queue depth).", pub["pending"])
        yield _counter("livedata_publisher_published", "Payloads Redis confirmed.", pub["published"])
        yield _counter("livedata_publisher_conflated", "Quotes replaced in the queue by a newer one of their symbol "
                       "before they were sent (Redis slower than the brokers).", pub["conflated"])
        yield _counter("livedata_publisher_refused", "Account events Redis refused for good (logged with payload).",
                       pub.get("refused", 0))
        yield _counter("livedata_publisher_errors", "Redis errors seen by the publisher.", pub["errors"])
        yield _counter("livedata_publisher_reconnects", "Times the publisher lost Redis and reconnected.", pub["reconnects"])
        ha = status.get("ha")
        if ha is not None:  # [ha]: alert when no runner of a prefix leads (sum over runners of livedata_ha_leader == 0)
            yield _gauge("livedata_ha_leader", "1 while this runner holds the hot-standby lease, 0 while it stands by.",
                         1.0 if ha["role"] == "leader" else 0.0)
            yield _gauge("livedata_ha_epoch", "The fencing epoch of the lease this runner holds or last held (0: none).",
                         float(ha["epoch"] or 0))

        labels = ["instance", "plugin"]
        published = CounterMetricFamily("livedata_messages_published", "Messages published per instance and kind "
                                        "(handed to the publisher; quotes may be conflated after).",
                                        labels=[*labels, "kind"])  # fmt: skip
        reconnects = CounterMetricFamily("livedata_broker_reconnects", "Stream reconnects of an instance.", labels=labels)
        auth = CounterMetricFamily("livedata_auth_failures", "Logins the broker refused (AuthError, LoginRequired).",
                                   labels=labels)
        skipped = CounterMetricFamily("livedata_skipped", "Items not published, by reason (logged).",
                                      labels=[*labels, "reason"])
        polls = CounterMetricFamily("livedata_account_polls", "Successful account polls, by kind.", labels=[*labels, "kind"])
        age = GaugeMetricFamily("livedata_last_message_age_seconds", "Seconds since the instance last published a "
                                "message (absent before the first).", labels=labels)  # fmt: skip
        heartbeat = GaugeMetricFamily("livedata_last_heartbeat_age_seconds", "Seconds since the broker last sent a "
                                      "heartbeat (absent before the first).", labels=labels)  # fmt: skip
        state = GaugeMetricFamily("livedata_broker_state", "1 for the instance's current state (streaming, polling, "
                                  "backoff, login_required, ...).", labels=[*labels, "state"])  # fmt: skip
        symbols = GaugeMetricFamily("livedata_subscribed_symbols", "Symbols the instance streams.", labels=labels)
        stale = GaugeMetricFamily("livedata_stale_symbols", "Subscribed symbols silent past stale_after while their "
                                  "market is open.", labels=labels)  # fmt: skip
        stale_for = GaugeMetricFamily("livedata_stale_symbol_silent_seconds", "Seconds each stale symbol has been "
                                      "silent (only stale symbols have a series).", labels=[*labels, "symbol"])  # fmt: skip
        resubscribes = CounterMetricFamily("livedata_resubscribes", "Symbols resubscribed after silence past "
                                           "stale_after in session.", labels=labels)  # fmt: skip
        backfilled = CounterMetricFamily("livedata_bars_backfilled", "Bars published after a gap, fetched from the "
                                         "broker's history (backfilled: true).", labels=labels)  # fmt: skip
        unfilled = CounterMetricFamily("livedata_bar_gaps_unfilled", "Gaps in a symbol's bars the broker could not "
                                       "fill (logged; livedata status shows the latest).", labels=labels)  # fmt: skip
        token = GaugeMetricFamily("livedata_refresh_token_days_left", "Days until the login's refresh token expires "
                                  "(when the plugin reports it; negative: expired).", labels=labels)  # fmt: skip
        for name, b in status["brokers"].items():
            lv = [name, b.get("plugin") or b["broker"]]
            events = {**(b.get("account_events") or {}), **(b.get("market_events") or {})}
            for kind in CHANNEL_TYPES:
                count = b["messages"] - sum(events.values()) if kind == "quotes" else events.get(kind, 0)
                published.add_metric([*lv, kind], max(count, 0))
            reconnects.add_metric(lv, b["reconnects"])
            auth.add_metric(lv, b.get("auth_failures", 0))
            for reason, count in _bounded(b.get("skipped") or {}).items():
                skipped.add_metric([*lv, reason], count)
            for kind, count in sorted((b.get("polls") or {}).items()):
                polls.add_metric([*lv, kind], count)
            if b.get("last_message_at"):
                age.add_metric(lv, max(0.0, now - b["last_message_at"]))
            if b.get("last_heartbeat_at"):
                heartbeat.add_metric(lv, max(0.0, now - b["last_heartbeat_at"]))
            state.add_metric([*lv, b["state"]], 1.0)
            symbols.add_metric(lv, len(b.get("symbols") or ()))
            stale_now = b.get("stale") or {}
            stale.add_metric(lv, len(stale_now))
            for symbol, since in sorted(stale_now.items()):
                stale_for.add_metric([*lv, symbol], max(0.0, now - since))
            resubscribes.add_metric(lv, b.get("resubscribes", 0))
            bars = b.get("bars")
            if bars:  # an instance of a broker that streams bars
                backfilled.add_metric(lv, bars.get("backfilled", 0))
                unfilled.add_metric(lv, bars.get("unfilled", 0))
            expires = (b.get("extra") or {}).get(REFRESH_TOKEN_EXPIRES_AT)
            if isinstance(expires, (int, float)) and not isinstance(expires, bool) and math.isfinite(expires):
                token.add_metric(lv, (expires - now) / DAY)
        yield from (published, reconnects, auth, skipped, polls, age, heartbeat, state, symbols, stale, stale_for,
                    resubscribes, backfilled, unfilled, token)  # fmt: skip


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _bounded(reasons: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
        key = reason if len(out) < MAX_REASONS or reason in out else "other"
        out[key] = out.get(key, 0) + count
    return out


class LatencySampler:
    """Sample the publish latency: from a quote's receipt (``received_at``, set when the plugin built it from the
    frame) to Redis confirming the pipeline that carried it.

    Every :data:`SAMPLE_INTERVAL` seconds the newest quote of each instance (if new) is taken, the publisher is
    flushed (:meth:`~livedata_core.redis_io.publisher.AsyncPublisher.flush` returns once Redis confirmed everything published
    before), and the time of the last confirmed batch less the quote's receipt is observed. A sample costs the
    publish path nothing; it can run late by at most one batch.
    """

    def __init__(self, runner: Any, histogram: Histogram, interval: float = SAMPLE_INTERVAL) -> None:
        self.runner = runner
        self.histogram = histogram
        self.interval = interval
        self._sampled: dict[str, Any] = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sample()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop sampling for the rest of the run
                log.exception("publish latency sample failed")

    async def sample(self) -> int:
        """Take one sample of each instance with a quote published since the last; returns how many."""
        taken = []
        for name, rt in self.runner.runtimes.items():
            quote = rt.last_quote
            if quote is None or self._sampled.get(name) is quote:
                continue
            self._sampled[name] = quote
            taken.append((name, rt.broker.name, quote.received_at / 1000))
        if not taken:
            return 0
        publisher = self.runner.publisher
        if not await publisher.flush(FLUSH_TIMEOUT):
            return 0  # Redis is away: its recovery is measured by the samples after
        confirmed = getattr(publisher.stats, "last_publish_at", None) or time.time()
        for name, plugin, received in taken:
            latency = confirmed - received
            if latency >= 0:
                self.histogram.labels(name, plugin).observe(latency)
        return len(taken)


class RunnerMetrics:
    """The registry of one runner: the collector, the latency histogram and its sampler."""

    def __init__(self, runner: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = RunnerCollector(runner)
        self.registry.register(self.collector)
        self.latency = Histogram(
            "livedata_publish_latency_seconds",
            "Seconds from a quote's receipt from the broker to Redis confirming its publication (sampled).",
            ["instance", "plugin"], registry=self.registry, buckets=LATENCY_BUCKETS,
        )
        self.sampler = LatencySampler(runner, self.latency)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sampling the publish latency."""
        self._task = asyncio.create_task(self.sampler.run(), name="livedata-latency-sampler")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
