#!/usr/bin/env python3
"""Memory of a long-running runner: orders at ~150 events/s while Redis is killed and restarted again and again.

    python3 dev.py shell python benchmarks/bench_memory.py [--minutes 1] [--order-rate 150] [--kill-every 9]

Runs the real runner (``Runner`` built from a TOML file, as ``livedata run`` does) in a child process with the
demo broker placing, accepting and filling orders fast enough for about ``--order-rate`` order events a second
(plus one transaction per filled order and 20 quotes a second), against a private redis-server that is killed
(SIGKILL) every ``--kill-every`` seconds and started again ``--down`` seconds later. A second child runs the
same runner with no orders and no kills: the baseline, what an idle runner's memory does over the same time.

Prints, every ``--every`` seconds, the resident size (RSS, read from /proc) of both, the Python heap as
tracemalloc counts it, the order events published so far and their rate, the account events waiting for
Redis, and the size of each bounded structure (the order and transaction dedupe sets against their bounds).
At the end: RSS and heap at the end of warm-up (``--warmup``, default 40% of the run) and at the end, the
growth per minute after warm-up, the tracemalloc top growers between the two, the Python memory blocks in use
(``sys.getallocatedblocks``: flat while the RSS creeps means the allocator holds free memory, not the runner),
the RSS before and after glibc's ``malloc_trim(0)``, and how many account events the runner could not write
before it exited (Redis is up at the end, so none should be).

tracemalloc (one frame) makes the child slower and adds its own bookkeeping to the RSS, and taking the warm-up
snapshot raises the RSS once (the final snapshot reuses that memory): the RSS after warm-up is read after that
snapshot, the RSS at the end before the final one. ``--no-tracemalloc`` measures the RSS alone. Warm-up lasts
until the dedupe sets are full (about 4 minutes at 150 order events/s); a shorter run shows them still filling.
Figures, not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from livedata_core.redis_io.server import RedisServer


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def write_config(path: Path, url: str, order_rate: float) -> None:
    # The demo moves each order one step (placed, accepted, filled) per orders poll, and places a new one on a
    # poll when order_every has passed: three order events per poll, so the poll interval sets the rate.
    if order_rate > 0:
        account = f"""order_every = 0.001
poll = {{ orders = {3.0 / order_rate:.6f}, transactions = 1, positions = 1, balances = 1 }}"""
    else:
        account = "order_every = 0\npoll = { orders = 1, transactions = 1, positions = 1, balances = 1 }"
    path.write_text(f"""[redis]
url = "{url}"

[brokers.demo]
symbols = ["AAPL", "MSFT", "SPY", "BRK.B", "/ESZ24", "$SPX"]
quotes_per_second = 20
{account}
""")


# -- the child: one runner, sampling itself ------------------------------------------------------------------


def release_free_memory() -> tuple[float, float] | None:
    """RSS before and after glibc's ``malloc_trim(0)``: how much of the RSS was memory the allocator kept free."""
    import ctypes
    import os

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    before = rss_mb(os.getpid())
    libc.malloc_trim(0)
    return before, rss_mb(os.getpid())


def child(config_path: str, samples_path: str, every: float, warmup: float, duration: float, trace: bool) -> None:
    import tracemalloc

    from livedata_core.logs import setup_logging
    from livedata_core.models import Order, Transaction
    from livedata_core.runner import Runner, load_config_file

    if trace:
        tracemalloc.start(1)
    setup_logging(0)
    runner = Runner(load_config_file(config_path))
    rt = runner.runtimes["demo"]
    counts = {"orders": 0, "transactions": 0}
    publish = rt.publish

    def counting(model):  # what the runner published, to check against the streams at the end
        ok = publish(model)
        if ok and type(model) is Order:
            counts["orders"] += 1
        elif ok and type(model) is Transaction:
            counts["transactions"] += 1
        return ok

    rt.publish = counting

    async def sample(out) -> None:
        start = time.monotonic()
        first = None
        while True:
            await asyncio.sleep(every)
            elapsed = time.monotonic() - start
            snapped = False
            if trace and first is None and elapsed >= warmup:
                first = tracemalloc.take_snapshot()
                snapped = True
            line = {
                "t": elapsed,
                "warm": elapsed >= warmup,
                "snapped": snapped,
                "heap": tracemalloc.get_traced_memory()[0] / 2**20 if trace else None,
                "trace_overhead": tracemalloc.get_tracemalloc_memory() / 2**20 if trace else None,
                "orders": counts["orders"],
                "transactions": counts["transactions"],
                "pending": runner.publisher.pending,
                "seen_orders": len(rt.order_events._seen._items),
                "seen_orders_limit": rt.order_events._seen.limit,
                "seen_transactions": len(rt.transaction_events._seen._items),
                "seen_transactions_limit": rt.transaction_events._seen.limit,
                "demo_transactions": len(rt.ctx.session.account.transactions) if rt.ctx.session else 0,
                "quote_heads": len(runner.publisher._quote_heads),
                # Python objects' memory blocks: flat while RSS creeps means the allocator, not the runner, holds it.
                "blocks": sys.getallocatedblocks(),
            }
            if elapsed >= duration:
                line["trim"] = release_free_memory()
                if trace and first is not None:
                    last = tracemalloc.take_snapshot()
                    line["top"] = [str(s) for s in last.compare_to(first, "lineno")[:12]]
                line["final"] = True
            out.write(json.dumps(line) + "\n")
            out.flush()
            if line.get("final"):
                return

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runner.stop)
        with open(samples_path, "w") as out:
            sampler = asyncio.create_task(sample(out))
            try:
                await runner.run()
            finally:
                sampler.cancel()
        # What a clean stop could not write (Redis was up, so nothing should be left).
        unsent = sum(1 for event in runner.publisher._reliable if event.publish)
        with open(samples_path, "a") as out:
            out.write(json.dumps({"done": True, "unsent": unsent, "confirmed": runner.publisher.stats.published,
                                  **counts}) + "\n")

    asyncio.run(main())


# -- the parent: Redis outages, RSS, report ---------------------------------------------------------------------


class Run:
    """One child runner and its private redis-server."""

    def __init__(self, name: str, order_rate: float, args: argparse.Namespace, tmp: Path) -> None:
        self.name = name
        self.server = RedisServer().start()
        self.config = tmp / f"{name}.toml"
        self.samples = tmp / f"{name}.jsonl"
        write_config(self.config, self.server.url, order_rate)
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(self.config), str(self.samples), str(args.every),
             str(args.warmup), str(args.minutes * 60), "1" if args.tracemalloc else "0"],
            stderr=open(tmp / f"{name}.log", "w"),
        )
        self.seen_lines = 0
        self.last: dict = {}
        self.rss: list[tuple[float, float]] = []
        self.warm: tuple[float, float] | None = None  # (t, RSS) once warm-up is over
        self.end: tuple[float, float] | None = None

    def poll(self, elapsed: float) -> list[dict]:
        rss = rss_mb(self.proc.pid)
        self.rss.append((elapsed, rss))
        try:
            lines = self.samples.read_text().splitlines()
        except OSError:
            return []
        new = [json.loads(l) for l in lines[self.seen_lines :] if l.strip()]
        self.seen_lines += len(new)
        if new:
            self.last = new[-1]
            # The reference is read after the warm-up snapshot was taken: a snapshot's own allocations raise the
            # RSS once (the second one reuses that memory), and must not count as growth.
            if self.warm is None and any(line.get("warm") for line in new):
                self.warm = (elapsed, rss)
            # Likewise the end is the sample before the final snapshot.
            if any(line.get("final") for line in new) and len(self.rss) > 1:
                self.end = self.rss[-2]
        return new

    def finished(self) -> bool:
        return bool(self.last.get("final")) or self.proc.poll() is not None

    def stop(self) -> dict:
        if self.server.proc is None:
            self.server.start()  # the runner flushes what is queued before it exits
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        totals: dict = {}
        for line in self.samples.read_text().splitlines():
            data = json.loads(line)
            if data.get("done"):
                totals = data
        self.server.close()
        return totals


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        c, s, every, warmup, duration, trace = sys.argv[2:8]
        child(c, s, float(every), float(warmup), float(duration), trace == "1")
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=1.0, help="how long the runner runs (default 1)")
    parser.add_argument("--order-rate", type=float, default=150.0, help="order events per second (default 150)")
    parser.add_argument("--kill-every", type=float, default=9.0, help="seconds between Redis kills (default 9)")
    parser.add_argument("--down", type=float, default=2.0, help="seconds Redis stays down each time (default 2)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between printed samples (default 5)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of warm-up (default 40%% of the run)")
    parser.add_argument("--no-tracemalloc", dest="tracemalloc", action="store_false",
                        help="RSS alone: no heap figures, no top growers")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the idle runner")
    args = parser.parse_args()
    duration = args.minutes * 60
    if args.warmup is None:
        args.warmup = 0.4 * duration
    args.warmup = min(args.warmup, duration)

    tmp = Path(tempfile.mkdtemp(prefix="livedata-bench-memory-"))
    print(f"runner with ~{args.order_rate:g} order events/s, Redis killed every {args.kill_every:g}s for "
          f"{args.down:g}s, {args.minutes:g} min; warm-up {args.warmup:.0f}s; "
          f"tracemalloc {'on (1 frame)' if args.tracemalloc else 'off'}; logs in {tmp}")
    load = Run("load", args.order_rate, args, tmp)
    base = Run("baseline", 0, args, tmp) if args.baseline else None
    runs = [r for r in (load, base) if r is not None]
    print(f"{'t':>5} {'RSS':>7} {'base':>7} {'heap':>6} {'blocks':>7} {'orders':>8} {'ord/s':>6} {'queued':>6} "
          f"{'seen orders':>14} {'seen trans.':>14} {'demo tx':>7} {'redis':>5}")
    start = time.monotonic()
    next_kill = start + args.kill_every
    restart_at: float | None = None
    kills = 0
    last_orders, last_t = 0, 0.0
    next_print = start + args.every
    try:
        while not all(r.finished() for r in runs):
            time.sleep(0.1)
            now = time.monotonic()
            if restart_at is None and now >= next_kill and now - start < duration - args.down - 1:
                load.server.kill()
                kills += 1
                restart_at = now + args.down
            elif restart_at is not None and now >= restart_at:
                load.server.start()
                restart_at = None
                next_kill = time.monotonic() + args.kill_every
            if now >= next_print or any(r.finished() for r in runs):
                next_print += args.every
                elapsed = now - start
                for r in runs:
                    r.poll(elapsed)
                s = load.last
                if not s:
                    continue
                rate = (s["orders"] - last_orders) / max(s["t"] - last_t, 1e-9)
                last_orders, last_t = s["orders"], s["t"]
                heap = f"{s['heap']:6.1f}" if s.get("heap") is not None else "     -"
                print(f"{elapsed:5.0f} {load.rss[-1][1]:7.1f} {base.rss[-1][1] if base else float('nan'):7.1f} {heap} "
                      f"{s['blocks']:7d} "
                      f"{s['orders']:8d} {rate:6.0f} {s['pending']:6d} "
                      f"{s['seen_orders']:>6}/{s['seen_orders_limit']:<7} {s['seen_transactions']:>6}/"
                      f"{s['seen_transactions_limit']:<7} {s['demo_transactions']:7d} "
                      f"{'down' if load.server.proc is None else 'up':>5}", flush=True)
    finally:
        if restart_at is not None:
            load.server.start()
        totals = load.stop()
        base_totals = base.stop() if base else None

    warm, r0 = load.warm or load.rss[-1]
    end, r1 = load.end or load.rss[-1]
    print()
    print(f"Redis killed {kills} times")
    print(f"runner RSS: start {load.rss[0][1]:.1f} MB, after warm-up ({warm:.0f}s) {r0:.1f} MB, end ({end:.0f}s) "
          f"{r1:.1f} MB: {r1 - r0:+.1f} MB after warm-up ({(r1 - r0) / max(end - warm, 1) * 60:+.2f} MB/min)")
    if base is not None:
        b0, b1 = (base.warm or base.rss[-1])[1], (base.end or base.rss[-1])[1]
        print(f"baseline RSS (no orders, no kills): after warm-up {b0:.1f} MB, end {b1:.1f} MB ({b1 - b0:+.1f} MB)")
    samples = [json.loads(l) for l in load.samples.read_text().splitlines() if '"blocks"' in l]
    warm_sample = next((b for b in samples if b.get("warm")), None)
    if warm_sample is not None:
        print(f"Python memory blocks (sys.getallocatedblocks): after warm-up {warm_sample['blocks']}, end "
              f"{samples[-1]['blocks']} ({samples[-1]['blocks'] - warm_sample['blocks']:+d})")
    trim = samples[-1].get("trim") if samples else None
    if trim:
        print(f"glibc malloc_trim(0) at the end: RSS {trim[0]:.1f} -> {trim[1]:.1f} MB (what the allocator held free)")
    if load.last:
        s = load.last
        full = (s["seen_orders"] >= s["seen_orders_limit"] - 10
                and s["seen_transactions"] >= s["seen_transactions_limit"] - 10)  # fmt: skip
        print(f"dedupe at the end: {s['seen_orders']}/{s['seen_orders_limit']} order states, "
              f"{s['seen_transactions']}/{s['seen_transactions_limit']} transactions: "
              + ("full, so memory is at its bound" if full else "still filling (part of warm-up): run longer to see "
                 "it flat"))
    heaps = [json.loads(l) for l in load.samples.read_text().splitlines() if '"heap"' in l]
    heaps = [h for h in heaps if h.get("heap") is not None]
    if heaps:
        h0 = next(h for h in heaps if h.get("warm"))
        h1 = heaps[-1]
        print(f"Python heap (tracemalloc): after warm-up {h0['heap']:.1f} MB, end {h1['heap']:.1f} MB "
              f"({h1['heap'] - h0['heap']:+.2f} MB); tracemalloc's own bookkeeping {h1['trace_overhead']:.1f} MB")
        if h1.get("top"):
            print("top growers after warm-up (tracemalloc, by line):")
            for line in h1["top"]:
                print("  " + line)
    print(f"order events published {totals.get('orders')}, transactions {totals.get('transactions')}; "
          f"account events left unsent at exit: {totals.get('unsent')} (each would be logged with its payload)")
    if base_totals is not None and base_totals.get("orders"):
        print(f"baseline published {base_totals['orders']} order events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
