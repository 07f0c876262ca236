#!/usr/bin/env python3
"""Benchmark of the publish path: throughput, latency and memory, against a naive loop in the same run.

    python3 dev.py shell python benchmarks/bench_publish.py [--seconds 3]

Starts a private redis-server (loopback) and prints:

1. throughput: quotes/s through the core AsyncPublisher (pre-built quotes; also alternating without and with a
   hot standby leader's fence, ``[ha]``, in ABBA order), through the ClusterPublisher to a
   local three-master Redis Cluster (sharded and plain pub/sub; skipped before Redis 7), through the whole runner with the
   demo broker streaming as fast as it can, and through a naive ``json.dumps`` + ``await publish`` loop;
   counted by Redis itself (INFO commandstats), not by the client; then the runner with metrics off and on
   (``[metrics]``: the /metrics server, scraped every second, and the sampled publish latency), each twice,
   alternating (target: metrics cost at most 5%);
2. latency publish-to-subscriber p50/p99/max at a steady 10k quotes/s, measured in a separate subscriber
   process, for the core publisher and for the naive loop;
3. memory: resident size while quotes arrive about 10x faster than Redis accepts them (redis-server is
   paused 90% of the time), with per-symbol conflation vs a naive unbounded queue; and that every order
   published meanwhile arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time

import redis
import redis.asyncio as aioredis

from livedata_core.models import Order, Quote
from livedata_core.redis_io.publisher import AsyncPublisher
from livedata_core.redis_io.server import RedisServer

SYMBOLS = [f"S{i:04d}" for i in range(1000)]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def publish_calls(port: int) -> int:
    stats = redis.Redis(port=port).info("commandstats")
    return int(stats.get("cmdstat_publish", {}).get("calls", 0))


def make_quotes(n: int) -> list[Quote]:
    return [Quote(broker="bench", symbol=SYMBOLS[i % len(SYMBOLS)], bid=100.0 + i % 7, ask=100.1 + i % 7,
                  last=100.05, volume=float(i), timestamp=1) for i in range(n)]


# -- 1. throughput ---------------------------------------------------------------------------------------------


async def core_throughput(url: str, port: int, seconds: float, fence: bool = False) -> float:
    pub = AsyncPublisher(url, latest=True)
    if fence:  # a hot standby's leader ([ha]): the lease's clock is read before every batch
        from livedata_core.runner.ha import Lease

        lease = Lease(pub.topology, "", 5.0, on_lost=lambda why: None)
        lease._deadline = time.monotonic() + 3600  # held (no Redis round trip: renewals run on their own task)
        pub.fence = lease.holds
        pub.set_epoch(1)
    await pub.start()
    quotes = make_quotes(len(SYMBOLS))
    before = publish_calls(port)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for q in quotes:
            pub.publish(q)
        await asyncio.sleep(0)  # let the writer run, as a broker's read loop does between frames
    await pub.flush(30)
    elapsed = time.perf_counter() - start
    await pub.close()
    return (publish_calls(port) - before) / elapsed


def fence_cost_ns() -> float:
    """What the [ha] fence adds to each batch the writer sends: one Lease.holds() call."""
    import timeit

    from livedata_core.runner.ha import Lease
    from livedata_core.redis_io.topology import as_topology

    lease = Lease(as_topology("redis://127.0.0.1:1/0"), "", 5.0, on_lost=lambda why: None)
    lease._deadline = time.monotonic() + 3600
    n = 1_000_000
    return min(timeit.repeat(lease.holds, number=n, repeat=5)) / n * 1e9


async def runner_throughput(url: str, port: int, seconds: float, metrics: bool = False) -> tuple[float, int]:
    from livedata_core.runner import Runner, load_config
    from livedata_core.plugin_kit.tokens import MemoryTokenStore

    data = {"redis": {"url": url}, "brokers": {"demo": {
        "symbols": SYMBOLS, "quotes_per_second": 0, "batch": 1000, "order_every": 0,
        "poll": {"positions": 0, "balances": 0, "orders": 0, "transactions": 0}}}}
    if metrics:
        data["metrics"] = {"port": 0}
    runner = Runner(load_config(data), token_store=MemoryTokenStore())
    task = asyncio.create_task(runner.run())
    await runner.ready.wait()
    scraping = threading.Event()
    scraper = None
    if metrics:  # as Prometheus would, from outside the event loop (more often: every second)
        scraper = threading.Thread(target=scrape_every_second, args=(f"{runner.ops.url}/metrics", scraping), daemon=True)
        scraper.start()
    await asyncio.sleep(0.5)
    before = publish_calls(port)
    start = time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - start
    rate = (publish_calls(port) - before) / elapsed
    conflated = runner.publisher.stats.conflated
    scraping.set()
    if scraper is not None:
        scraper.join(5)
    runner.stop()
    await task
    return rate, conflated


def scrape_every_second(url: str, stop: threading.Event) -> None:
    import httpx

    with httpx.Client(timeout=5) as http:
        while not stop.wait(1.0):
            http.get(url).raise_for_status()


async def naive_throughput(port: int, seconds: float) -> float:
    client = aioredis.Redis(port=port)
    quotes = make_quotes(len(SYMBOLS))
    dicts = [{"broker": q.broker, "symbol": q.symbol, "bid": q.bid, "ask": q.ask, "last": q.last, "volume": q.volume}
             for q in quotes]
    before = publish_calls(port)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for d in dicts:
            await client.publish(f"live_data:quotes:{d['symbol']}", json.dumps(d))
    elapsed = time.perf_counter() - start
    await client.aclose()
    return (publish_calls(port) - before) / elapsed


async def cluster_throughput(seconds: float) -> tuple[float, float] | str:
    """Quotes/s through the ClusterPublisher to a local three-master cluster, with sharded (SPUBLISH) and plain
    PUBLISH; counted by the nodes. A string says why it could not run."""
    from livedata_core.redis_io.publisher import make_publisher
    from livedata_core.testing.topology import LocalCluster, topology_skip_reason

    reason = topology_skip_reason("cluster")
    if reason:
        return reason
    cluster = LocalCluster().start()
    try:
        rates = []
        for sharded in (True, False):
            word = "spublish" if sharded else "publish"

            def calls() -> int:
                return sum(int(redis.Redis(port=n.port).info("commandstats").get(f"cmdstat_{word}", {}).get("calls", 0))
                           for n in cluster.nodes)

            pub = make_publisher(cluster.topology(sharded=sharded), latest=True)
            await pub.start()
            quotes = make_quotes(len(SYMBOLS))
            before = calls()
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                for q in quotes:
                    pub.publish(q)
                await asyncio.sleep(0)
            await pub.flush(60)
            elapsed = time.perf_counter() - start
            await pub.close()
            rates.append((calls() - before) / elapsed)
        return rates[0], rates[1]
    finally:
        cluster.close()


# -- 2. latency ------------------------------------------------------------------------------------------------


def subscriber_process(port: int, count: int, ready, results) -> None:
    from lean_subscriber import messages

    latencies = []
    for arrived, data in messages(port, "live_data:quotes:*", 60, ready=ready.set):
        latencies.append((arrived * 1000 - json.loads(data)["extra"]["t"]) / 1e6)
        if len(latencies) >= count:
            break
    results.put(latencies)


async def paced(rate: int, seconds: float, emit) -> None:
    """Call ``emit(n)`` so that ``rate`` quotes per second go out, in ticks of 1 ms."""
    start = time.perf_counter()
    sent = 0
    total = int(rate * seconds)
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * rate))
        if due > sent:
            await emit(due - sent, sent)
            sent = due
        await asyncio.sleep(0.0005)


def measure_latency(url: str, port: int, rate: int, seconds: float, naive: bool) -> list[float]:
    ctx = mp.get_context("spawn")
    ready, results = ctx.Event(), ctx.Queue()
    total = int(rate * seconds)
    proc = ctx.Process(target=subscriber_process, args=(port, total, ready, results))
    proc.start()
    ready.wait(20)
    time.sleep(0.3)

    async def core() -> None:
        pub = AsyncPublisher(url)
        await pub.start()

        async def emit(n: int, offset: int) -> None:
            for i in range(offset, offset + n):
                pub.publish(Quote(broker="bench", symbol=SYMBOLS[i % 1000], last=1.0, extra={"t": time.time_ns()}))

        await paced(rate, seconds, emit)
        await pub.flush(10)
        await pub.close()

    async def baseline() -> None:
        client = aioredis.Redis(port=port)

        async def emit(n: int, offset: int) -> None:
            for i in range(offset, offset + n):
                d = {"broker": "bench", "symbol": SYMBOLS[i % 1000], "last": 1.0, "extra": {"t": time.time_ns()}}
                await client.publish(f"live_data:quotes:{d['symbol']}", json.dumps(d))

        await paced(rate, seconds, emit)
        await client.aclose()

    asyncio.run(baseline() if naive else core())
    latencies = results.get(timeout=60)
    proc.join(10)
    return latencies


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


# -- 3. memory under a slow Redis -----------------------------------------------------------------------------


def throttle(server: RedisServer, stop: threading.Event) -> None:
    """Let redis-server run 10% of the time: it accepts about a tenth of what it could."""
    while not stop.is_set():
        os.kill(server.proc.pid, signal.SIGSTOP)
        time.sleep(0.009)
        os.kill(server.proc.pid, signal.SIGCONT)
        time.sleep(0.001)


async def memory_core(url: str, port: int, seconds: float) -> tuple[float, float, int, int]:
    pub = AsyncPublisher(url, stream_maxlen=10_000_000)  # the stream counts deliveries: no trimming
    await pub.start()
    quotes = make_quotes(len(SYMBOLS))
    base = rss_mb()
    peak = base
    orders = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for q in quotes:
            pub.publish(q)
        pub.publish(Order(broker="bench", account_id="MEM", order_id=str(orders), status="open"))
        orders += 1
        peak = max(peak, rss_mb())
        await asyncio.sleep(0)
    offered = orders * len(quotes)
    await pub.flush(60)
    await pub.close()
    return base, peak, offered, orders


async def memory_naive(port: int, seconds: float) -> tuple[float, float, int]:
    client = aioredis.Redis(port=port)
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def writer() -> None:
        while True:
            channel, payload = await queue.get()
            await client.publish(channel, payload)

    task = asyncio.create_task(writer())
    quotes = make_quotes(len(SYMBOLS))
    base = rss_mb()
    peak = base
    offered = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for q in quotes:
            queue.put_nowait((f"live_data:quotes:{q.symbol}", json.dumps({"symbol": q.symbol, "last": q.last})))
        offered += len(quotes)
        peak = max(peak, rss_mb())
        await asyncio.sleep(0)
    backlog = queue.qsize()
    task.cancel()
    await client.aclose()
    return base, peak, backlog


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    args = parser.parse_args()
    s = args.seconds
    print(f"livedata publish benchmark  (python {sys.version.split()[0]}, {os.cpu_count()} cores, redis on loopback)\n")
    with RedisServer() as server:
        url, port = server.url, server.port
        print("1. throughput (counted by Redis: PUBLISH calls per second)")
        naive = asyncio.run(naive_throughput(port, s))
        print(f"   naive json.dumps + await publish loop   {naive:>10,.0f} quotes/s")
        core = asyncio.run(core_throughput(url, port, s))
        print(f"   core AsyncPublisher                     {core:>10,.0f} quotes/s   ({core / naive:.1f}x naive; target >= 100,000)")
        fenced: dict[bool, list[float]] = {False: [], True: []}
        for round_ in range(4):  # ABBA order: neither side is always the one measured second
            for fence in ((False, True) if round_ % 2 == 0 else (True, False)):
                fenced[fence].append(asyncio.run(core_throughput(url, port, s, fence=fence)))
        plain, leader = (sum(sorted(fenced[f])[1:3]) / 2 for f in (False, True))
        print("   core, no [ha] (four runs, ABBA order)   " + " ".join(f"{r:>10,.0f}" for r in fenced[False]) + " quotes/s")
        print("   core, [ha] leader: fence per batch      " + " ".join(f"{r:>10,.0f}" for r in fenced[True])
              + f" quotes/s   (median {(plain - leader) / plain:+.1%}; runs without it spread "
              f"{(max(fenced[False]) - min(fenced[False])) / plain:.0%})")
        print(f"   the fence itself: {fence_cost_ns():.0f} ns per batch (one monotonic clock read; a batch carries "
              "up to 20,000 quotes)")
        cluster = asyncio.run(cluster_throughput(s))
        if isinstance(cluster, str):
            print(f"   ClusterPublisher, 3-master cluster      skipped: {cluster}")
        else:
            print(f"   ClusterPublisher, 3 masters, SPUBLISH   {cluster[0]:>10,.0f} quotes/s   "
                  f"({cluster[0] / core:.2f}x the single server; redis-py's cluster pipeline, all on this host)")
            print(f"   ClusterPublisher, 3 masters, PUBLISH    {cluster[1]:>10,.0f} quotes/s   (broadcast to every node)")
        full, conflated = asyncio.run(runner_throughput(url, port, s))
        print(f"   runner + demo broker, end to end        {full:>10,.0f} quotes/s   (generation included; {conflated} conflated)")
        rates: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(2):
            for metrics in (False, True):
                rates[metrics].append(asyncio.run(runner_throughput(url, port, s, metrics=metrics))[0])
        off, on = (sum(rates[m]) / 2 for m in (False, True))
        print(f"   runner, metrics off (two runs)          {rates[False][0]:>10,.0f} {rates[False][1]:>10,.0f} quotes/s")
        print(f"   runner, metrics on, scraped every 1 s   {rates[True][0]:>10,.0f} {rates[True][1]:>10,.0f} quotes/s   "
              f"(cost {(off - on) / off:+.1%} of the mean; target at most 5%)")

        print("\n2. latency publish -> subscriber at 10,000 quotes/s (separate subscriber process, raw socket + hiredis)")
        for label, naive_flag in (("naive loop", True), ("core AsyncPublisher", False)):
            lat = measure_latency(url, port, 10_000, s, naive_flag)
            if not lat:
                print(f"   {label:<38} no messages received")
                continue
            print(f"   {label:<38} p50 {pct(lat, 0.5):6.3f} ms   p99 {pct(lat, 0.99):6.3f} ms   max {max(lat):7.3f} ms   "
                  f"(n={len(lat)})" + ("   target p99 <= 1 ms" if not naive_flag else ""))

        print("\n3. memory while quotes arrive ~10x faster than Redis accepts them (redis-server runs 10% of the time)")
        stop = threading.Event()
        t = threading.Thread(target=throttle, args=(server, stop), daemon=True)
        t.start()
        try:
            # The core first, so the naive queue's growth does not hide in its baseline.
            base, peak, offered, orders = asyncio.run(memory_core(url, port, s))
            print(f"   core (conflated per symbol)             RSS {base:7.1f} -> {peak:7.1f} MB   offered {offered:,} quotes")
            delivered = redis.Redis(port=port).xlen("live_data:stream:orders:MEM")
            print(f"   orders published meanwhile: {orders:,}, delivered: {delivered:,} ({'none lost' if delivered == orders else 'LOST SOME'})")
            base, peak, backlog = asyncio.run(memory_naive(port, s))
            print(f"   naive unbounded queue                   RSS {base:7.1f} -> {peak:7.1f} MB   backlog {backlog:,} messages")
        finally:
            stop.set()
            t.join()
            os.kill(server.proc.pid, signal.SIGCONT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
