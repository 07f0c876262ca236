"""Benchmark of the tos streamer plugin: websocket frames -> parser -> AsyncPublisher -> Redis.

Run: ``python benchmarks/bench_tos.py`` (about 30 s). Starts a private redis-server and, in child processes, a
fake Schwab streamer (``livedata_tos.testing.FakeStreamer``) and a redis-py subscriber, then measures:

1. throughput: the streamer sends LEVELONE_EQUITIES frames of 100 quotes each as fast as the socket takes
   them; quotes/s from the first frame until every quote is written to Redis;
2. latency at a steady 10,000 quotes/s (200 frames/s x 50 quotes): the send time (us) rides in field 8 and
   the subscriber process computes receive time - send time; p50/p99/max;

each for ``TosStream`` + ``AsyncPublisher`` and for a naive loop in the same run (``json.loads`` each frame,
merge into dicts, ``await redis.asyncio.publish`` one message at a time).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import time

import orjson

from livedata_core.redis_io.publisher import AsyncPublisher
from livedata_core.redis_io.server import RedisServer
from livedata_core.plugin_kit.streaming import HEARTBEAT
from livedata_tos.stream import StreamerTokens, TosStream
from livedata_tos.testing import FakeStreamer, FakeTokens, data_frame

N_SYMBOLS = 2000
PER_FRAME = 100
BLAST_FRAMES = 3000  # 300k quotes for livedata
NAIVE_BLAST_FRAMES = 300  # 30k quotes for the naive loop (it is slow)
STEADY_RATE = 10_000
STEADY_PER_FRAME = 50
STEADY_SECONDS = 4.0
SYMBOLS = [f"S{i:04d}" for i in range(N_SYMBOLS)]


# -- child process: the fake streamer ----------------------------------------------------------------------


def _blast_frames(count: int) -> list[str]:
    """Pre-encoded frames; each carries PER_FRAME symbols' changed bid/ask/last/size fields (deltas)."""
    frames = []
    for f in range(count):
        base = (f * PER_FRAME) % N_SYMBOLS
        items = []
        for i in range(PER_FRAME):
            p = 100.0 + (f % 97) * 0.01 + i * 0.001
            items.append({"key": SYMBOLS[(base + i) % N_SYMBOLS], "1": p, "2": p + 0.02, "3": p + 0.01,
                          "4": 3, "5": 5, "8": 1000 + f, "34": 1_700_000_000_000 + f})  # fmt: skip
        frames.append(orjson.dumps(data_frame("LEVELONE_EQUITIES", items, 1_700_000_000_000 + f)).decode())
    return frames


def streamer_process(conn, mode: str, frames: int) -> None:
    async def main():
        async with FakeStreamer() as fake:
            conn.send(fake.url)
            await fake.wait_for(lambda: len(fake.subscriptions.get("LEVELONE_EQUITIES", ())) >= N_SYMBOLS, 30)
            (ws,) = fake.connections
            if mode == "blast":
                encoded = _blast_frames(min(frames, 500))
                for f in range(frames):
                    await ws.send(encoded[f % len(encoded)])
            else:
                loop = asyncio.get_running_loop()
                interval = STEADY_PER_FRAME / STEADY_RATE
                n_frames = int(STEADY_SECONDS * STEADY_RATE / STEADY_PER_FRAME)
                start = loop.time() + 0.05
                for f in range(n_frames):
                    delay = start + f * interval - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    base = (f * STEADY_PER_FRAME) % N_SYMBOLS
                    sent_us = time.time_ns() // 1000
                    items = [{"key": SYMBOLS[(base + i) % N_SYMBOLS], "1": 10.0 + i, "2": 10.5 + i, "8": sent_us}
                             for i in range(STEADY_PER_FRAME)]  # fmt: skip
                    await ws.send(orjson.dumps(data_frame("LEVELONE_EQUITIES", items)).decode())
            await ws.wait_closed()

    asyncio.run(main())


# -- child process: the subscriber measuring latency -------------------------------------------------------


def subscriber_process(conn, port: int, expected: int) -> None:
    from lean_subscriber import messages

    latencies = []
    first_of_frame = []
    last_sent = None
    loads = orjson.loads
    for arrived, data in messages(port, "live_data:quotes:*", STEADY_SECONDS + 10, ready=lambda: conn.send("ready")):
        sent = int(loads(data)["volume"])
        latencies.append(arrived - sent)
        if sent != last_sent:
            first_of_frame.append(arrived - sent)
            last_sent = sent
        if len(latencies) >= expected:
            break
    conn.send((latencies, first_of_frame))


# -- the clients under test --------------------------------------------------------------------------------


async def livedata_client(url: str, redis_url: str, expected: int) -> tuple[float, int, int]:
    """TosStream + AsyncPublisher; returns (seconds from first frame to all written, parsed, published)."""
    publisher = AsyncPublisher(redis_url, latest=True)
    await publisher.start()
    tokens = FakeTokens()
    stream = TosStream(FakeStreamer().info(), StreamerTokens(tokens.get, tokens.refresh), url=url,
                       account_activity=False, heartbeat_timeout=None)  # fmt: skip
    await stream.connect()
    await stream.subscribe(SYMBOLS)
    parsed = 0
    first = None
    publish = publisher.publish
    async for item in stream.events():
        if item is HEARTBEAT:
            continue
        if first is None:
            first = time.perf_counter()
        for model in item:
            publish(model)
        parsed += len(item)
        if parsed >= expected:
            break
    await publisher.flush()
    elapsed = time.perf_counter() - first
    published = publisher.stats.published
    await stream.close()
    await publisher.close()
    return elapsed, parsed, published


async def _raw_login(url: str):
    from websockets.asyncio.client import connect

    info = FakeStreamer().info()
    ws = await connect(url, compression=None, max_size=2**24)

    async def command(rid, service, cmd, params):
        await ws.send(json.dumps({"requests": [{"service": service, "command": cmd, "requestid": rid,
            "SchwabClientCustomerId": info.customer_id, "SchwabClientCorrelId": info.correl_id,
            "parameters": params}]}))  # fmt: skip
        while "response" not in json.loads(await ws.recv()):
            pass

    await command("1", "ADMIN", "LOGIN", {"Authorization": "t", "SchwabClientChannel": "N9", "SchwabClientFunctionId": "APIAPP"})
    await command("2", "LEVELONE_EQUITIES", "ADD", {"keys": ",".join(SYMBOLS), "fields": "0,1,2,3,4,5,8,34"})
    return ws


async def transport_floor() -> list[int]:
    """The same steady stream received by a bare websocket client: no parsing into quotes, no Redis. This is
    the process-to-process floor of this machine, which every pipeline above pays three times
    (streamer -> livedata -> redis-server -> subscriber)."""
    proc, url = _start_streamer("steady", 0)
    ws = await _raw_login(url)
    latencies = []
    async for raw in ws:
        now_us = time.time_ns() // 1000
        latencies.append(now_us - orjson.loads(raw)["data"][0]["content"][0]["8"])
        if len(latencies) * STEADY_PER_FRAME >= STEADY_SECONDS * STEADY_RATE:
            break
    await ws.close()
    proc.join(10)
    return latencies


async def naive_client(url: str, redis_url: str, expected: int) -> tuple[float, int, int]:
    """The obvious loop: json.loads, merge into a dict per symbol, one awaited PUBLISH per quote."""
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(redis_url)
    ws = await _raw_login(url)
    names = {"1": "bid", "2": "ask", "3": "last", "4": "bid_size", "5": "ask_size", "8": "volume", "34": "timestamp"}
    state: dict[str, dict] = {}
    n = 0
    first = None
    async for raw in ws:
        msg = json.loads(raw)
        if first is None:
            first = time.perf_counter()
        for entry in msg.get("data", []):
            for item in entry["content"]:
                symbol = item["key"]
                quote = state.setdefault(symbol, {"broker": "tos", "symbol": symbol})
                for k, v in item.items():
                    if k in names:
                        quote[names[k]] = v
                quote["received_at"] = int(time.time() * 1000)
                await r.publish(f"live_data:quotes:{symbol}", json.dumps(quote))
                n += 1
        if n >= expected:
            break
    elapsed = time.perf_counter() - first
    await ws.close()
    await r.aclose()
    return elapsed, n, n


# -- scenarios ---------------------------------------------------------------------------------------------


def _start_streamer(mode: str, frames: int):
    parent, child = mp.Pipe()
    proc = mp.Process(target=streamer_process, args=(child, mode, frames), daemon=True)
    proc.start()
    return proc, parent.recv()


def throughput(client, redis_url: str, frames: int) -> tuple[float, float]:
    proc, url = _start_streamer("blast", frames)
    elapsed, parsed, published = asyncio.run(client(url, redis_url, frames * PER_FRAME))
    proc.join(10)
    return parsed / elapsed, published / elapsed


def latency(client, redis: RedisServer) -> tuple[list[int], list[int]]:
    expected = int(STEADY_SECONDS * STEADY_RATE)
    parent, child = mp.Pipe()
    sub = mp.Process(target=subscriber_process, args=(child, redis.port, expected), daemon=True)
    sub.start()
    parent.recv()
    proc, url = _start_streamer("steady", 0)
    asyncio.run(client(url, redis.url, expected))
    latencies = parent.recv()
    sub.join(5)
    proc.join(10)
    return latencies


def describe(latencies: list[int]) -> str:
    if not latencies:
        return "no messages received"
    q = statistics.quantiles(latencies, n=100)
    # Every quote of a frame carries the frame's send time; the subscriber handles a frame's messages one after
    # another, so later quotes of a frame also wait for the subscriber itself. The first message per frame
    # shows the pipeline without that queueing.
    return f"p50 {q[49] / 1000:.3f} ms  p99 {q[98] / 1000:.3f} ms  max {max(latencies) / 1000:.3f} ms"


def main() -> int:
    redis = RedisServer().start()
    try:
        print(f"bench_tos: {N_SYMBOLS} symbols, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
              f"redis-server {'.'.join(map(str, redis.version))}")  # fmt: skip
        parsed, published = throughput(livedata_client, redis.url, BLAST_FRAMES)
        print(f"throughput livedata  (TosStream + AsyncPublisher, {PER_FRAME} quotes/frame): "
              f"{parsed:,.0f} quotes/s socket->Redis ({published:,.0f}/s written after conflation)")  # fmt: skip
        n_parsed, _ = throughput(naive_client, redis.url, NAIVE_BLAST_FRAMES)
        print(f"throughput naive     (json.loads + one awaited PUBLISH per quote):   {n_parsed:,.0f} quotes/s "
              f"-> livedata is {parsed / n_parsed:.1f}x faster")  # fmt: skip
        ours, ours_frames = latency(livedata_client, redis)
        print(f"latency at {STEADY_RATE:,} quotes/s livedata, every quote ({len(ours)}):        {describe(ours)}")
        print(f"latency at {STEADY_RATE:,} quotes/s livedata, first quote of each frame ({len(ours_frames)}): "
              f"{describe(ours_frames)}")  # fmt: skip
        floor = asyncio.run(transport_floor())
        print(f"latency floor: streamer -> bare websocket client in another process ({len(floor)} frames): "
              f"{describe(floor)}")  # fmt: skip
        naive, naive_frames = latency(naive_client, redis)
        print(f"latency at {STEADY_RATE:,} quotes/s naive, every quote ({len(naive)}):           {describe(naive)}")
        ok_tp = parsed >= 100_000
        ok_lat = bool(ours) and statistics.quantiles(ours, n=100)[98] <= 1000
        print(f"targets: >=100k quotes/s {'MET' if ok_tp else 'MISSED'}; p99 <= 1 ms at 10k/s {'MET' if ok_lat else 'MISSED'}")
    finally:
        redis.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
