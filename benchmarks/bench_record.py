"""Benchmark of recording and replay (issue 19): what `livedata run --record` costs the live path, and how fast
`livedata replay --speed max` goes beside it.

Run: ``python benchmarks/bench_record.py`` (about a minute). Starts a private redis-server and, in a child
process, a fake Schwab streamer (``livedata_tos.testing.FakeStreamer``) that sends LEVELONE_EQUITIES frames of
100 quotes as fast as the socket takes them (bench_tos.py's throughput scenario), and measures quotes/s from the
first frame until every quote is written to Redis, for ``TosStream`` + ``AsyncPublisher``:

1. live, not recording (the tap unset);
2. live, recording through :class:`~livedata_core.recording.writer.Recorder` (the tap queues each frame; a writer
   thread redacts, encodes and zstd-compresses): the cost, target at most 10 %;
3. the naive baseline: a tap that writes each frame to a gzip file on the event loop;
4. the recording of run 2 replayed by :class:`~livedata_core.runner.replay.Replay` at ``max`` through the same
   plugin parser and publisher (every quote published: a replay conflates nothing): target at least as fast
   as run 1;
5. the machine's floor for this work: ``orjson.loads`` of every recorded frame, nothing else.

The three live variants run one after the other in each of ``ROUNDS`` rounds, as the machine is shared (other
processes' load moves a run's throughput by a factor of two here). Printed per variant: the best and the median
throughput, and the median CPU time of this process (both threads: the writer's too) per quote, which other
processes' load moves much less; the cost of recording is given on each.

Where the cost goes: the event loop only appends each frame to a queue (under a microsecond). The writer thread
scans each frame for secret names (about 0.2 ms for a 10 KB frame of 100 quotes), encodes a JSON line (30 us)
and compresses it (zstd releases the GIL); the scan holds the GIL, which the event loop then waits for.
"""

from __future__ import annotations

import asyncio
import gzip
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

from livedata_core.plugin_kit.streaming import HEARTBEAT
from livedata_core.recording.reader import Recording
from livedata_core.recording.writer import Recorder
from livedata_core.redis_io.publisher import AsyncPublisher
from livedata_core.redis_io.server import RedisServer
from livedata_core.runner.replay import Replay
from livedata_tos.stream import StreamerTokens, TosStream
from livedata_tos.testing import FakeStreamer, FakeTokens, data_frame

N_SYMBOLS = 2000
PER_FRAME = 100
FRAMES = 2000  # 200k quotes per run
ROUNDS = 5
SYMBOLS = [f"S{i:04d}" for i in range(N_SYMBOLS)]


def _frames(count: int) -> list[str]:
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


def streamer_process(conn, frames: int) -> None:
    async def main():
        async with FakeStreamer() as fake:
            conn.send(fake.url)
            await fake.wait_for(lambda: len(fake.subscriptions.get("LEVELONE_EQUITIES", ())) >= N_SYMBOLS, 30)
            (ws,) = fake.connections
            encoded = _frames(500)
            for f in range(frames):
                await ws.send(encoded[f % len(encoded)])
            await asyncio.sleep(2)

    asyncio.run(main())


async def live(url: str, redis_url: str, tap) -> tuple[float, float]:
    """TosStream + AsyncPublisher with ``tap`` (a recorder's, or None): quotes/s from the first frame until all
    are written, and this process's CPU microseconds per quote meanwhile."""
    publisher = AsyncPublisher(redis_url, latest=True)
    await publisher.start()
    tokens = FakeTokens()
    stream = TosStream(FakeStreamer().info(), StreamerTokens(tokens.get, tokens.refresh), url=url,
                       account_activity=False, heartbeat_timeout=None)  # fmt: skip
    if tap is not None:
        tap.mark("connect")
        stream.tap = tap.tap
    await stream.connect()
    await stream.subscribe(SYMBOLS)
    if tap is not None:
        tap.mark("streaming", symbols=SYMBOLS)
    parsed = 0
    first = None
    publish = publisher.publish
    expected = FRAMES * PER_FRAME
    async for item in stream.events():
        if item is HEARTBEAT:
            continue
        if first is None:
            first = time.perf_counter()
            cpu = time.process_time()
        for model in item:
            publish(model)
        parsed += len(item)
        if parsed >= expected:
            break
    await publisher.flush()
    elapsed = time.perf_counter() - first
    cpu = time.process_time() - cpu
    await stream.close()
    await publisher.close()
    return parsed / elapsed, cpu / parsed * 1e6


class NaiveTap:
    """Recording the obvious way: each frame, as a JSON line, into a gzip file on the event loop."""

    def __init__(self, path: Path) -> None:
        self.file = gzip.open(path, "wb")

    def mark(self, kind, **fields) -> None:
        pass

    def tap(self, direction, data, t) -> None:
        self.file.write(orjson.dumps({"t": t, "kind": direction, "data": data}) + b"\n")


def run_live(redis_url: str, tap) -> tuple[float, float]:
    parent, child = mp.Pipe()
    proc = mp.Process(target=streamer_process, args=(child, FRAMES), daemon=True)
    proc.start()
    url = parent.recv()
    rate = asyncio.run(live(url, redis_url, tap))
    proc.join(10)
    return rate


async def replay(folder: Path, redis_url: str) -> tuple[float, int]:
    publisher = AsyncPublisher(redis_url, latest=True)
    await publisher.start()
    job = Replay(folder, publisher, speed=None, settings={"tos": {"account_activity": False}})  # as recorded
    started = time.perf_counter()
    await job.run()
    await publisher.flush()
    elapsed = time.perf_counter() - started
    quotes = sum(rt.status.messages for rt in job.runtimes.values())
    await publisher.close()
    return quotes / elapsed, quotes


def _figures(runs: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Best and median quotes/s, median CPU us per quote."""
    return max(r for r, _ in runs), statistics.median(r for r, _ in runs), statistics.median(c for _, c in runs)


def _show(fig: tuple[float, float, float], base: tuple[float, float, float] | None = None) -> str:
    text = f"best {fig[0]:,.0f}, median {fig[1]:,.0f} quotes/s; {fig[2]:.2f} CPU us/quote"
    if base is not None:
        text += (f": cost {(1 - fig[0] / base[0]) * 100:.1f} % (best), {(1 - fig[1] / base[1]) * 100:.1f} % (median), "
                 f"{(fig[2] / base[2] - 1) * 100:.1f} % CPU")  # fmt: skip
    return text


def main() -> int:
    redis = RedisServer().start()
    tmp = Path(tempfile.mkdtemp(prefix="bench-record-"))
    try:
        print(f"bench_record: {N_SYMBOLS} symbols, {FRAMES} frames x {PER_FRAME} quotes per run, best of {ROUNDS}, "
              f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")  # fmt: skip
        plain, recorded, naive = [], [], []
        folder = tmp / "rec"
        for round_ in range(ROUNDS):
            plain.append(run_live(redis.url, None))
            shutil.rmtree(folder, ignore_errors=True)
            recorder = Recorder(folder)
            rec = recorder.instance("tos", "tos")
            recorder.start()
            recorded.append(run_live(redis.url, rec))
            started = time.perf_counter()
            recorder.close()
            drain = time.perf_counter() - started
            naive_tap = NaiveTap(tmp / "naive.jsonl.gz")
            naive.append(run_live(redis.url, naive_tap))
            naive_tap.file.close()
            print(f"  round {round_ + 1}: {plain[-1][0]:,.0f} / {recorded[-1][0]:,.0f} (recording; {rec.dropped} "
                  f"dropped, writer done {drain:.2f} s after) / {naive[-1][0]:,.0f} (naive) quotes/s")  # fmt: skip
        best = max(r for r, _ in plain)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        frames = [r["data"] for r in Recording(folder).records("tos") if r["kind"] == "in"]
        raw = sum(len(f) for f in frames)
        base = _figures(plain)
        print(f"live, not recording:        {_show(base)}")
        print(f"live, recording:            {_show(_figures(recorded), base)} (target <= 10 %)")
        print(f"naive (gzip on the loop):   {_show(_figures(naive), base)}")
        print(f"recording: {len(frames):,} frames, {raw / 1e6:.1f} MB -> {size / 1e6:.2f} MB zstd ({raw / max(size, 1):.1f}:1)")
        rates = [asyncio.run(replay(folder, redis.url)) for _ in range(ROUNDS)]
        rate, quotes = max(rates)
        print(f"replay --speed max:         {rate:,.0f} quotes/s through TosStream's parser and the publisher "
              f"({quotes:,} quotes, none conflated): {rate / best:.2f}x the live path (target >= 1)")  # fmt: skip
        started = time.perf_counter()
        for f in frames:
            orjson.loads(f)
        floor = len(frames) * PER_FRAME / (time.perf_counter() - started)
        print(f"floor (orjson.loads only):  {floor:,.0f} quotes/s")
    finally:
        redis.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
