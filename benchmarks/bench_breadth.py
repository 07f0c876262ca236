"""Market data breadth through the real runner (issue 15): quotes beside book depth and 1-minute bars.

Run: ``python benchmarks/bench_breadth.py`` (about a minute; ``--quick`` for a smoke run). Every part is its own
process, as in ``bench_runner.py``: a private redis-server, the fake Schwab streamer
(``livedata_tos.testing.FakeStreamer``), ``livedata run -c <config>`` (tos plugin; 500 quote symbols, 200 of them
also with bars on CHART_EQUITY, 50 others with depth on NASDAQ_BOOK; the config points at a fake Schwab REST server, the
saved login is a token file) and a raw-socket hiredis subscriber on ``live_data:*`` (``lean_subscriber``).

The streamer sends, for ``seconds``:

* quotes: 10,000 a second, 50-quote LEVELONE_EQUITIES frames every 5 ms (the send time in us rides in field 8,
  volume);
* depth: 50 symbols x 10 updates a second, 10 levels a side, in frames of 10 books every 20 ms (the send time
  rides in the best bid's market-maker count);
* bars: one CHART_EQUITY frame of 200 bars (one per symbol) every 2 s, each a new minute (a bar per symbol per
  minute, as Schwab sends them, at 30 times the pace; the send time rides in the bar's volume);

then a sentinel quote. It prints, for the quotes-only run and the mixed run side by side: the quote latency
(p50/p99/max of arrival - send over every quote), each other kind's rate (published per second) and latency, and
the runner's CPU per second; beside them the floor (a bare websocket client receiving the same mixed stream:
transport only, per frame) and a naive loop (json.loads, one awaited redis-py PUBLISH per item, no merge, no
conflation) on the mixed stream. Target: quote p99 within 1 ms at 10k quotes/s with depth and bars beside them.
``bench_kinds.py`` measures the core publisher's share of the same load alone (no websocket, no plugin).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runner import LIVEDATA, RedisProcess, TosLogin, cpu_seconds, describe, p99_ms  # noqa: E402
from lean_subscriber import messages  # noqa: E402

from livedata_schwab.testing import FakeSchwab  # noqa: E402
from livedata_tos.testing import FakeStreamer, data_frame  # noqa: E402

N_QUOTE = 499  # + the sentinel = 500, the streamer's per-service cap (tos max_symbols)
N_BARS = 200
N_DEPTH = 50
LEVELS = 10
QUOTE_RATE = 10_000
PER_FRAME = 50
TICK = PER_FRAME / QUOTE_RATE  # 5 ms: one quote frame a tick
BOOKS_EVERY = 4  # ticks: 10 books every 20 ms = 500 books/s = 50 symbols x 10/s
BOOKS_PER_FRAME = 10
BARS_EVERY = 400  # ticks: 2 s, one "minute" of bars for every bar symbol
QUOTES = [f"Q{i:04d}" for i in range(N_QUOTE)]
BARS = QUOTES[:N_BARS]
DEPTH = QUOTES[N_BARS : N_BARS + N_DEPTH]
SENTINEL = "ZEND"
EQUITIES, CHART, BOOK = "LEVELONE_EQUITIES", "CHART_EQUITY", "NASDAQ_BOOK"
TARGET_P99_MS = 1.0


# -- child process: the fake streamer ----------------------------------------------------------------------


def _book(symbol: str, tick: int, sent_us: int) -> dict:
    p = 100.0 + tick % 50 * 0.01
    bids = [{"0": round(p - i * 0.01, 2), "1": 100.0 * (i + 1), "2": (sent_us if i == 0 else i + 1)} for i in range(LEVELS)]
    asks = [{"0": round(p + 0.01 + i * 0.01, 2), "1": 100.0 * (i + 1), "2": i + 1} for i in range(LEVELS)]
    return {"key": symbol, "1": sent_us // 1000, "2": bids, "3": asks}


def _bar(symbol: str, start: int, sent_us: int, seq: int) -> dict:
    return {"seq": seq, "key": symbol, "1": start // 60_000 % 1440, "2": 100.0, "3": 100.5, "4": 99.5, "5": 100.25,
            "6": float(sent_us), "7": start, "8": start // 86_400_000}  # fmt: skip


def streamer_process(conn) -> None:
    """Commands: ("wait",) until one client subscribed everything; ("run", seconds, token, kinds) with kinds
    the other kinds to send beside the quotes ("depth", "bars"); ("stop",)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with FakeStreamer() as fake:
            minute = fake.clock.ms
            conn.send(fake.port)
            while True:
                cmd = await loop.run_in_executor(None, conn.recv)
                if cmd[0] == "stop":
                    return
                if cmd[0] == "wait":
                    await fake.wait_for(lambda: len(fake.connections) == 1
                                        and len(fake.subscriptions.get(EQUITIES, ())) >= N_QUOTE + 1
                                        and len(fake.subscriptions.get(CHART, ())) >= N_BARS
                                        and len(fake.subscriptions.get(BOOK, ())) >= N_DEPTH, 60)  # fmt: skip
                    # A new client: its bars go on from the one the fake's answer to its chart ADD brought, so
                    # no gap (a gap would make the runner fetch 200 symbols' history, paced at 120 requests/min).
                    minute = fake.clock.ms
                    conn.send("ok")
                    continue
                _, seconds, token, kinds = cmd
                (ws,) = fake.connections
                sent = {"quotes": 0, "depth": 0, "bars": 0, "frames": 0}
                start = loop.time() + 0.05
                for tick in range(int(seconds / TICK)):
                    delay = start + tick * TICK - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    sent_us = time.time_ns() // 1000
                    base = tick * PER_FRAME % N_QUOTE
                    items = [{"key": QUOTES[(base + i) % N_QUOTE], "1": 10.0 + i, "2": 10.5 + i, "8": sent_us}
                             for i in range(PER_FRAME)]  # fmt: skip
                    await ws.send(orjson.dumps(data_frame(EQUITIES, items)).decode())
                    sent["quotes"] += PER_FRAME
                    sent["frames"] += 1
                    if "depth" in kinds and tick % BOOKS_EVERY == 0:
                        b = tick // BOOKS_EVERY * BOOKS_PER_FRAME % N_DEPTH
                        books = [_book(DEPTH[(b + i) % N_DEPTH], tick, sent_us) for i in range(BOOKS_PER_FRAME)]
                        await ws.send(orjson.dumps(data_frame(BOOK, books)).decode())
                        sent["depth"] += BOOKS_PER_FRAME
                        sent["frames"] += 1
                    if "bars" in kinds and tick % BARS_EVERY == BARS_EVERY // 2:
                        bars = [_bar(s, minute, sent_us, minute // 60_000) for s in BARS]
                        minute += 60_000
                        await ws.send(orjson.dumps(data_frame(CHART, bars)).decode())
                        sent["bars"] += N_BARS
                        sent["frames"] += 1
                await asyncio.sleep(0.1)
                await ws.send(orjson.dumps(data_frame(EQUITIES, [{"key": SENTINEL, "1": 1.0, "8": token}])).decode())
                conn.send(sent)

    asyncio.run(main())


class Streamer:
    def __init__(self) -> None:
        self.conn, child = mp.Pipe()
        self.proc = mp.Process(target=streamer_process, args=(child,), daemon=True)
        self.proc.start()
        self.port = self.conn.recv()
        self.url = f"ws://127.0.0.1:{self.port}/ws"

    def call(self, *cmd):
        self.conn.send(cmd)
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(("stop",))
        self.proc.join(10)


# -- child process: the subscriber -------------------------------------------------------------------------


def subscriber_process(conn, port: int, token: int, timeout: float) -> None:
    """Latency (us) per kind until the sentinel: quotes by volume, books by the best bid's count, bars by volume."""
    out: dict[str, list[int]] = {"quotes": [], "depth": [], "bars": []}
    loads = orjson.loads
    for arrived, data in messages(port, "live_data:*", timeout, ready=lambda: conn.send("ready")):
        try:
            m = loads(data)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(m, dict) or "symbol" not in m:
            continue
        if "bids" in m:
            if m["bids"]:
                out["depth"].append(arrived - int(m["bids"][0]["count"]))
        elif "interval" in m:
            if not m.get("backfilled"):
                out["bars"].append(arrived - int(m["volume"]))
        elif m["symbol"] == SENTINEL:
            if m.get("volume") == token:
                break
        elif m.get("volume") is not None:
            out["quotes"].append(arrived - int(m["volume"]))
    conn.send(out)


class Subscriber:
    def __init__(self, port: int, token: int, timeout: float = 120.0) -> None:
        self.conn, child = mp.Pipe()
        self.proc = mp.Process(target=subscriber_process, args=(child, port, token, timeout), daemon=True)
        self.proc.start()
        assert self.conn.recv() == "ready"

    def result(self) -> dict[str, list[int]]:
        out = self.conn.recv()
        self.proc.join(5)
        return out


# -- the floor and the naive loop --------------------------------------------------------------------------


async def raw_login(url: str):
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
    await command("2", EQUITIES, "ADD", {"keys": ",".join(QUOTES + [SENTINEL]), "fields": "0,1,2,8"})
    await command("3", CHART, "ADD", {"keys": ",".join(BARS), "fields": "0,1,2,3,4,5,6,7,8"})
    await command("4", BOOK, "ADD", {"keys": ",".join(DEPTH), "fields": "0,1,2,3"})
    return ws


def _send_time(service: str, item: dict) -> int | None:
    if service == EQUITIES:
        return item.get("8")
    if service == BOOK:
        return item["2"][0]["2"]
    return int(item["6"])


def floor_process(conn, url: str) -> None:
    """A bare websocket client: arrival - send time of each quote frame (its first item), each book and each bar."""

    async def main():
        ws = await raw_login(url)
        conn.send(os.getpid())
        out: dict[str, list[int]] = {"quotes": [], "depth": [], "bars": []}
        kind = {EQUITIES: "quotes", BOOK: "depth", CHART: "bars"}
        async for raw in ws:
            now_us = time.time_ns() // 1000
            entry = orjson.loads(raw).get("data", [{}])[0]
            content = entry.get("content") or [{}]
            if content[0].get("key") == SENTINEL:
                break
            service = entry.get("service")
            if service == EQUITIES:  # per frame, as bench_runner's floor
                out["quotes"].append(now_us - _send_time(service, content[0]))
            elif service in kind:  # per book or bar (a frame's items share its send time)
                out[kind[service]].extend(now_us - _send_time(service, item) for item in content)
        await ws.close()
        conn.send(out)

    asyncio.run(main())


def naive_process(conn, url: str, redis_url: str) -> None:
    """The obvious loop: json.loads, one awaited redis-py PUBLISH per item (quotes as merged dicts, books and
    bars as they come)."""
    import redis.asyncio as aioredis

    async def main():
        r = aioredis.Redis.from_url(redis_url)
        ws = await raw_login(url)
        conn.send(os.getpid())
        state: dict[str, dict] = {}
        async for raw in ws:
            for entry in json.loads(raw).get("data", []):
                service = entry["service"]
                for item in entry["content"]:
                    symbol = item["key"]
                    if service == EQUITIES:
                        q = state.setdefault(symbol, {"broker": "tos", "symbol": symbol})
                        q.update({"bid": item.get("1", q.get("bid")), "ask": item.get("2", q.get("ask")),
                                  "volume": item.get("8", q.get("volume"))})  # fmt: skip
                        await r.publish(f"live_data:quotes:{symbol}", json.dumps(q))
                    elif service == BOOK:
                        book = {"symbol": symbol, "bids": [{"price": lv["0"], "size": lv["1"], "count": lv["2"]}
                                                           for lv in item["2"]], "asks": []}  # fmt: skip
                        await r.publish(f"live_data:depth:{symbol}", json.dumps(book))
                    else:
                        bar = {"symbol": symbol, "interval": 60, "start": item["7"], "volume": item["6"]}
                        await r.publish(f"live_data:bars:{symbol}", json.dumps(bar))

    try:
        asyncio.run(main())
    except Exception:
        pass


# -- scenarios ---------------------------------------------------------------------------------------------


def write_config(tmp: Path, rest_base: str) -> Path:
    table = FakeSchwab().table()
    lines = ["[brokers.tos]", f"symbols = {json.dumps(QUOTES + [SENTINEL])}", f"bars = {json.dumps(BARS)}",
             f"depth = {json.dumps(DEPTH)}", "account_activity = false", "",
             "[brokers.tos.schwab]", f"app_key = {json.dumps(table['app_key'])}",
             f"app_secret = {json.dumps(table['app_secret'])}", f"api_base_url = {json.dumps(rest_base + '/trader/v1')}",
             f"auth_base_url = {json.dumps(rest_base + '/v1/oauth')}"]  # fmt: skip
    path = tmp / "livedata.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


_tokens = iter(range(1, 1_000_000))


def run_once(streamer: Streamer, redis: RedisProcess, pid: int, seconds: float, kinds: tuple[str, ...]) -> dict:
    token = next(_tokens)
    sub = Subscriber(redis.port, token)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    sent = streamer.call("run", seconds, token, kinds)
    lat = sub.result()
    elapsed = time.monotonic() - t0
    return {"sent": sent, "lat": lat, "cpu": (cpu_seconds(pid) - cpu0) / elapsed, "seconds": seconds}


def report(name: str, res: dict) -> None:
    print(f"{name}:")
    seconds = res["seconds"]
    for kind in ("quotes", "depth", "bars"):
        lat = res["lat"][kind]
        sent = res["sent"][kind]
        if not sent:
            continue
        print(f"  {kind:<6} sent {sent / seconds:>8,.0f}/s  published {len(lat) / seconds:>8,.0f}/s  {describe(lat)}")
    if res.get("cpu") is not None:
        print(f"  process CPU {res['cpu'] * 100:.0f}% of one core")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run (default 10)")
    parser.add_argument("--quick", action="store_true", help="3-second runs")
    parser.add_argument("--each", action="store_true", help="also quotes + depth and quotes + bars, each on its own")
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.seconds

    redis = RedisProcess()
    streamer = Streamer()
    login = TosLogin(streamer.port, redis.url, write_config, "bench_breadth.")
    config, env = login.config, login.env
    try:
        print(f"bench_breadth: {N_QUOTE} quote symbols at {QUOTE_RATE:,}/s, {N_DEPTH} depth symbols x {LEVELS} "
              f"levels x 10/s, {N_BARS} bar symbols; {seconds:.0f} s runs; Python {sys.version.split()[0]}, "
              f"{os.cpu_count()} CPUs, redis-server {redis.version}")  # fmt: skip

        # The floor: the same mixed stream to a bare websocket client (transport only).
        parent, child = mp.Pipe()
        proc = mp.Process(target=floor_process, args=(child, streamer.url), daemon=True)
        proc.start()
        parent.recv()
        streamer.call("wait")
        sent = streamer.call("run", seconds, next(_tokens), ("depth", "bars"))
        floor = parent.recv()
        proc.join(5)
        report("floor: streamer -> bare websocket client (no parsing, no Redis; quotes per frame)",
               {"sent": sent, "lat": floor, "seconds": seconds})

        stderr = tempfile.TemporaryFile()
        runner = subprocess.Popen([str(LIVEDATA), "run", "-c", str(config), "--quiet", "--no-embedded"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=stderr)  # fmt: skip
        try:
            streamer.call("wait")
            time.sleep(0.5)
            alone = run_once(streamer, redis, runner.pid, seconds, kinds=())
            report("livedata run, quotes alone", alone)
            if args.each:
                for kind in ("depth", "bars"):
                    report(f"livedata run, quotes + {kind}", run_once(streamer, redis, runner.pid, seconds, kinds=(kind,)))
            mixed = run_once(streamer, redis, runner.pid, seconds, kinds=("depth", "bars"))
            report("livedata run, quotes + depth + bars", mixed)
        finally:
            runner.send_signal(signal.SIGTERM)
            try:
                runner.wait(30)
            except subprocess.TimeoutExpired:
                runner.kill()
            stderr.seek(0)
            errors = stderr.read().decode(errors="replace").strip()
            if errors:
                print("runner stderr (last lines):", *errors.splitlines()[-5:], sep="\n  ")

        parent, child = mp.Pipe()
        naive = mp.Process(target=naive_process, args=(child, streamer.url, redis.url), daemon=True)
        naive.start()
        pid = parent.recv()
        streamer.call("wait")
        res = run_once(streamer, redis, pid, seconds, kinds=("depth", "bars"))
        naive.terminate()
        naive.join(5)
        report("naive loop, quotes + depth + bars (json.loads -> awaited PUBLISH per item)", res)

        p99_alone, p99_mixed = p99_ms(alone["lat"]["quotes"]), p99_ms(mixed["lat"]["quotes"])
        print(f"quote p99: {p99_alone:.3f} ms alone, {p99_mixed:.3f} ms beside depth and bars "
              f"(floor p99 {p99_ms(floor['quotes']):.3f} ms per frame)")  # fmt: skip
        floor_p99 = p99_ms(floor["quotes"])
        print(f"target: quote p99 <= {TARGET_P99_MS} ms at {QUOTE_RATE:,} quotes/s beside depth and bars: "
              f"{'MET' if p99_mixed <= TARGET_P99_MS else 'MISSED'}"
              + (f" (the floor's p99 alone is {floor_p99:.3f} ms: this machine is busy, compare alone vs beside)"
                 if floor_p99 > TARGET_P99_MS / 2 else ""))  # fmt: skip
    finally:
        streamer.close()
        login.close()
        redis.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
