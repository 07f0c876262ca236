"""How fast the IBKR plugin turns gateway frames into quotes.

1. ``QuoteBook.apply`` alone: delta frames (2-3 changed fields, values as strings) -> complete Quotes.
2. Over the wire: the fake gateway (WSS, loopback, same process) pushes frames as fast as it can; the
   stream's ``events()`` is read until every frame became a quote (frames/s).
3. Idle latency: one frame at a time, gateway send -> Quote yielded (same process clock).

Run: python3 dev.py shell python benchmarks/bench_ibkr.py
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time

from livedata_core.models import Quote
from livedata_core.plugins import get_broker
from livedata_core.streaming import StreamStats
from livedata_ibkr.quotes import QuoteBook
from livedata_ibkr.testing import FakeGateway

N_BOOK = 200_000
N_WIRE = 20_000
SYMBOLS = 50


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


def bench_book() -> None:
    book = QuoteBook("ibkr", StreamStats())
    for c in range(SYMBOLS):
        book.symbols_of[1000 + c] = {f"S{c}"}
        book.apply({"conid": 1000 + c, "31": "100.00"})  # a known price: every later frame yields a quote
    data = frames(N_BOOK)
    start = time.perf_counter()
    n = 0
    for frame in data:
        n += len(book.apply(frame))
    elapsed = time.perf_counter() - start
    print(f"QuoteBook.apply: {N_BOOK / elapsed:,.0f} frames/s ({elapsed / N_BOOK * 1e6:.2f} us/frame), {n} quotes")


async def bench_wire() -> None:
    broker = get_broker("ibkr")
    async with FakeGateway() as gw:
        gw.conids.update({f"S{c}": 1000 + c for c in range(SYMBOLS)})
        ctx = broker.make_context(gw.settings(max_requests_per_second=500.0), None)
        ctx.log = logging.getLogger("bench")
        await broker.call("authenticate", ctx=ctx)
        stream = await broker.call("stream", ctx=ctx)
        await stream.connect()
        await stream.subscribe([f"S{c}@{1000 + c}" for c in range(SYMBOLS)])
        await gw.wait_for(lambda: all(gw.subscribed(1000 + c) for c in range(SYMBOLS)))
        for c in range(SYMBOLS):  # a known price: every later frame yields a quote
            await gw.push_quote(1000 + c, {"31": "100.00"}, updated=1)
        latencies: list[float] = []
        received = -SYMBOLS
        # Prices carry at least one of bid/ask/last from the first frame on, so every frame yields a quote.
        data = frames(N_WIRE)
        sent_at: dict[int, float] = {}

        async def reader() -> None:
            nonlocal received
            async for item in stream.events():
                for q in item if isinstance(item, list) else [item]:
                    if isinstance(q, Quote):
                        received += 1
                        t0 = sent_at.get(q.timestamp)
                        if t0 is not None:
                            latencies.append(time.perf_counter() - t0)
                if received >= N_WIRE:
                    return

        task = asyncio.create_task(reader())
        start = time.perf_counter()
        for frame in data:
            body = {k: v for k, v in frame.items() if k not in ("topic", "conid", "_updated")}
            sent_at[frame["_updated"]] = time.perf_counter()
            await gw.push_quote(frame["conid"], body, updated=frame["_updated"])
        await asyncio.wait_for(task, 60)
        elapsed = time.perf_counter() - start
        print(f"over WSS loopback, flooded (gateway and plugin in one process): {N_WIRE / elapsed:,.0f} frames/s")

        # Idle latency: one frame at a time, gateway send -> Quote yielded.
        latencies.clear()
        task = asyncio.create_task(_reader_until(stream, sent_at, latencies))
        for i in range(2000):
            ts = 10**13 + i
            sent_at[ts] = time.perf_counter()
            await gw.push_quote(1000 + i % SYMBOLS, {"31": f"{100 + i % 7}.00"}, updated=ts)
            await _until(lambda: len(latencies) > i)
        task.cancel()
        latencies.sort()
        print(f"idle latency over WSS loopback: p50 {statistics.median(latencies) * 1e3:.3f} ms, "
              f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.3f} ms")
        await stream.close()
        await broker.call("shutdown", ctx=ctx)


async def _reader_until(stream, sent_at, latencies) -> None:
    async for item in stream.events():
        for q in item if isinstance(item, list) else [item]:
            if isinstance(q, Quote) and q.timestamp in sent_at:
                latencies.append(time.perf_counter() - sent_at[q.timestamp])


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0)


if __name__ == "__main__":
    bench_book()
    asyncio.run(bench_wire())
