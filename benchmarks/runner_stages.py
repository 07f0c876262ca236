"""Where one frame's time goes inside `livedata run` at a steady rate: wall and CPU microseconds a frame, stage by stage.

Run: ``python benchmarks/runner_stages.py [--rate 10000] [--seconds 4]``. The same parts as ``bench_runner.py`` (a
private redis-server, the fake tos streamer sending 50-quote frames, the tos plugin with default settings, the raw
subscriber), except that the runner is started through this script, which times the runner's internals before
it hands over to the ``livedata`` CLI. It is a diagnostic, not a benchmark: the wrappers cost about 1 us each, and
they reach into private names (asyncio's ``Handle._run``, ``BaseEventLoop._run_once``, the selector transport, the
publisher's ``_take_batch``); a name that moved stops it with an error saying which. The runner runs on the
standard asyncio loop (``--event-loop asyncio``), whose parts these are; under uvloop, the default where it is
installed, the loop's own work and the socket reads and writes cost less (``bench_runner.py`` compares the two).

For each stage it prints the wall time a frame, the CPU time a frame (``time.thread_time``), and calls a frame:

* every callback the event loop runs, named by its task's coroutine (``task WebSocketStream._read_loop``: the
  stream's reader, which parses; ``task BrokerRuntime._read``: the runtime loop, ``publish()`` per quote;
  ``task AsyncPublisher._writer``: batch encoding and the socket write) or by the callback itself;
* inside them: ``TosStream.on_frame`` (orjson.loads and the QuoteBook), ``AsyncPublisher._take_batch`` (to_dict,
  orjson.dumps, RESP), the selector transport's ``write`` (the send system call) and ``_read_ready`` (websocket
  frames and Redis replies coming in), the pushed Redis replies being matched;
* the event loop: iterations a frame, time waiting in ``select``, and its own time (iterations minus waiting
  minus callbacks).

A stage whose wall time is far above its CPU time was descheduled while it ran: on a 2-core machine the socket
write to Redis is (redis-server, woken by the write, often runs on the writer's core at once).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

CHILD_FLAG = "--as-runner"


# -- the child: `livedata ...` with its internals timed ---------------------------------------------------


def run_timed_cli(argv: list[str]) -> int:
    import asyncio.base_events
    import asyncio.events
    import asyncio.selector_events
    import selectors

    from livedata_core.cli.commands import main
    from livedata_core.redis_io.publisher import resp
    from livedata_core.redis_io.publisher.aio import AsyncPublisher
    from livedata_tos.stream import TosStream

    wall: defaultdict[str, float] = defaultdict(float)
    cpu: defaultdict[str, float] = defaultdict(float)
    calls: Counter[str] = Counter()
    clock, thread_clock = time.perf_counter, time.thread_time

    def timed(label: str, fn):
        @functools.wraps(fn)  # the loop names a reader callback by its __qualname__
        def wrapper(*args, **kwargs):
            t, c = clock(), thread_clock()
            try:
                return fn(*args, **kwargs)
            finally:
                wall[label] += clock() - t
                cpu[label] += thread_clock() - c
                calls[label] += 1

        return wrapper

    def patch(owner, name: str, label: str) -> None:
        try:
            original = getattr(owner, name)
        except AttributeError:
            sys.exit(f"runner_stages: {owner.__name__}.{name} is gone; update this script to the code it times")
        setattr(owner, name, timed(label, original))

    handle_run = asyncio.events.Handle._run

    def run_handle(handle) -> None:
        callback = handle._callback
        owner = getattr(callback, "__self__", None)
        if isinstance(owner, asyncio.Task):
            label = "task " + getattr(owner.get_coro(), "__qualname__", "?")
        else:
            label = "callback " + getattr(callback, "__qualname__", type(callback).__name__)
        t, c = clock(), thread_clock()
        try:
            handle_run(handle)
        finally:
            wall[label] += clock() - t
            cpu[label] += thread_clock() - c
            calls[label] += 1

    asyncio.events.Handle._run = run_handle
    patch(asyncio.base_events.BaseEventLoop, "_run_once", "(event loop iterations)")
    patch(selectors.EpollSelector, "select", "(event loop waiting in select)")
    patch(TosStream, "on_frame", "  TosStream.on_frame: orjson.loads + QuoteBook")
    patch(AsyncPublisher, "_take_batch", "  AsyncPublisher._take_batch: to_dict, orjson.dumps, RESP")
    patch(asyncio.selector_events._SelectorSocketTransport, "write", "  socket write (transport.write)")
    patch(asyncio.selector_events._SelectorSocketTransport, "_read_ready", "  socket reads (transport._read_ready)")
    patch(resp._PushedReplies, "data_received", "    Redis replies parsed and matched")

    def reset(*_: object) -> None:
        wall.clear(), cpu.clear(), calls.clear()

    def dump() -> None:
        Path(os.environ["RUNNER_STAGES_OUT"]).write_text(json.dumps({"wall": wall, "cpu": cpu, "calls": calls}))

    signal.signal(signal.SIGUSR1, reset)  # count from here
    signal.signal(signal.SIGUSR2, lambda *_: dump())  # write what was counted (before the stop, which is not timed)
    sys.argv[0] = "livedata"
    return main(argv)


# -- the parent: the same parts as bench_runner, one steady run ---------------------------------------------


def table(result: dict, frames: int) -> str:
    wall, cpu, calls = result["wall"], result["cpu"], result["calls"]
    handled = sum(v for k, v in wall.items() if k.startswith(("task ", "callback ")))
    own = wall["(event loop iterations)"] - wall["(event loop waiting in select)"] - handled
    rows = [(k, wall[k], cpu.get(k), calls[k]) for k in wall if not k.startswith("(")]
    rows = [r for r in rows if r[1] / frames >= 0.5e-6]  # drop what ran once in a while (status, staleness)
    rows.sort(key=lambda r: (not r[0].startswith(("task ", "callback ")), -r[1]))
    lines = [f"{'stage':64} {'wall us':>9} {'cpu us':>8} {'calls':>6}   (a frame)"]
    for name, w, c, n in rows:
        c_text = f"{c / frames * 1e6:8.1f}" if c is not None else " " * 8
        lines.append(f"{name:64} {w / frames * 1e6:9.1f} {c_text} {n / frames:6.2f}")
    lines.append(f"{'event loop: its own work':64} {own / frames * 1e6:9.1f} {'':8} "
                 f"{calls['(event loop iterations)'] / frames:6.2f}")  # fmt: skip
    lines.append(f"{'event loop: waiting in select':64} {wall['(event loop waiting in select)'] / frames * 1e6:9.1f}")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == CHILD_FLAG:
        return run_timed_cli(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=10_000, help="quotes a second, in 50-quote frames (10000)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the measured run (4)")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_runner as bench

    redis_server = bench.RedisProcess()
    streamer = bench.Streamer()
    login = bench.TosLogin(streamer.port, redis_server.url, bench.write_config, "runner_stages.")
    out = login.tmp / "stages.json"
    env = {**login.env, "RUNNER_STAGES_OUT": str(out)}
    # The standard loop: the hooks above are asyncio's own (uvloop's loop and transports are compiled).
    cmd = [sys.executable, str(Path(__file__).resolve()), CHILD_FLAG, "run", "-c", str(login.config), "--quiet",
           "--no-embedded", "--event-loop", "asyncio"]
    runner = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        streamer.call("wait", streamer.n_symbols)
        bench.throughput(streamer, redis_server, runner.pid, 300)  # warm-up
        bench.latency(streamer, redis_server, runner.pid, args.rate, 1.0)
        os.kill(runner.pid, signal.SIGUSR1)  # count from here
        time.sleep(0.1)
        res = bench.latency(streamer, redis_server, runner.pid, args.rate, args.seconds)
        os.kill(runner.pid, signal.SIGUSR2)
        for _ in range(100):
            if out.exists():
                break
            time.sleep(0.05)
        runner.send_signal(signal.SIGTERM)
        _, err = runner.communicate(timeout=60)
        if not out.exists():
            print(err.decode(errors="replace"), file=sys.stderr)
            return 1
        frames = len(res["lat"]) // bench.STEADY_PER_FRAME
        print(f"runner_stages: tos, {args.rate:,} quotes/s in {bench.STEADY_PER_FRAME}-quote frames, {frames} frames, "
              f"Python {sys.version.split()[0]}; latency {bench.describe(res['lat'])}, "
              f"{res['cpu_us']:.2f} us CPU a quote (timed, so above bench_runner's)\n")  # fmt: skip
        print(table(json.loads(out.read_text()), frames))
    finally:
        if runner.poll() is None:
            runner.kill()
        streamer.close()
        login.close()
        redis_server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
