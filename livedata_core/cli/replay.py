"""``livedata replay DIR``: a recording fed through the plugins' parsers and the publisher into Redis."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import sys
import time
from typing import Any

from ..errors import ConfigError

__all__ = ["add_parser", "cmd_replay", "parse_speed", "parse_time"]

SPEED_HELP = "1 (the recorded pace, the default), 10 (ten times as fast), any factor, or max (as fast as it parses)"
TIME_HELP = ("an ISO time (2026-12-05T14:30:00, UTC unless it names a zone), seconds since the epoch, or +SECONDS "
             "from the recording's first frame")


def parse_speed(text: str) -> float | None:
    """``"max"`` is ``None`` (no pacing); otherwise a positive factor."""
    if text.strip().lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--speed must be a number such as 1 or 10, or max; was {text!r}") from None
    if not 0 < value < 1e6:
        raise ConfigError(f"--speed must be more than 0 (and less than a million), was {text!r}")
    return value


def parse_time(text: str, first: float | None) -> float:
    """A ``--from``/``--to`` value as wall-clock seconds (see :data:`TIME_HELP`)."""
    text = text.strip()
    if text.startswith("+"):
        if first is None:
            raise ConfigError("the recording has no frames to count +SECONDS from")
        try:
            return first + float(text[1:])
        except ValueError:
            raise ConfigError(f"{text!r}: +SECONDS must be a number of seconds") from None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a time: give {TIME_HELP}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def add_parser(sub: Any, redis_args: Any) -> None:
    from .runner_options import add_event_loop_option

    p = sub.add_parser(
        "replay", help="replay a recording (livedata run --record) into Redis",
        description="Feed a recording made by `livedata run --record DIR` through the same plugin parsers and the "
        "same publisher into Redis, at the recorded pace or faster; `livedata status` shows its progress. The "
        "same recording publishes the same payloads, received_at included. See docs/recording.md.")
    p.add_argument("dir", metavar="DIR", help="the recording's folder (the one given to --record)")
    p.add_argument("--speed", default="1", metavar="N|max", help=SPEED_HELP)
    p.add_argument("--from", dest="start", metavar="TIME", help=f"start the pace here ({TIME_HELP}); frames "
                   "before it are fed at once, as they build the login, subscriptions and merged quotes")
    p.add_argument("--to", dest="end", metavar="TIME", help=f"stop after this time ({TIME_HELP})")
    p.add_argument("--instance", "-b", action="append", metavar="NAME",
                   help="replay only this instance of the recording (repeatable; default: all)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    add_event_loop_option(p)
    redis_args(p)
    p.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    from ..recording.reader import Recording
    from ..runner.replay import Replay
    from ..redis_io.publisher import make_publisher
    from ..runner import event_loop
    from .runner_options import load_runner_config

    config = load_runner_config(args)
    loop_factory, _ = event_loop.loop_factory(config.event_loop)
    speed = parse_speed(args.speed)
    recording = Recording(args.dir)
    first = _first_time(recording)
    start = parse_time(args.start, first) if args.start else None
    end = parse_time(args.end, first) if args.end else None
    if start is not None and end is not None and end < start:
        raise ConfigError("--to is before --from")
    publisher = make_publisher(config.redis.topology, prefix=config.redis.prefix, latest=config.redis.latest,
                               streams=config.redis.streams, stream_maxlen=config.redis.stream_maxlen)  # fmt: skip
    settings = {name: dict(bc.settings) for name, bc in config.brokers.items()}
    replay = Replay(recording, publisher, speed=speed, start=start, end=end, instances=args.instance, settings=settings)
    event_loop.run(_replay(replay, publisher, config, args.quiet), loop_factory)
    return 0


def _first_time(recording: Any) -> float | None:
    first = None
    for name in recording.instances:
        for record in recording.records(name):
            if record.get("kind") in ("in", "out"):
                first = record["t"] if first is None else min(first, record["t"])
                break
    return first


async def _replay(replay: Any, publisher: Any, config: Any, quiet: bool) -> None:
    from ..runner.control_server import ControlServer

    started = time.time()

    def status() -> dict[str, Any]:
        stats = publisher.stats
        return {
            "pid": os.getpid(), "started_at": started, "now": time.time(),
            "redis": config.redis.topology.describe(), "prefix": config.redis.prefix,
            "publisher": {"connected": stats.connected, "published": stats.published, "conflated": stats.conflated,
                          "refused": stats.refused, "pending": publisher.pending, "errors": stats.errors,
                          "reconnects": stats.reconnects, "unreplicated": stats.unreplicated,
                          "last_error": stats.last_error},
            "brokers": replay.status(),
            "replay": {"recording": str(replay.recording.directory), "speed": replay.pace.speed or "max"},
            "metrics": None,
        }  # fmt: skip

    async def command(message: dict[str, Any]) -> Any:
        if message["command"] == "status":
            return status()
        if message["command"] == "ping":
            return {"pong": time.time()}
        raise ConfigError("a replay takes no subscribe or unsubscribe: it streams what was recorded")

    await publisher.start()
    control = ControlServer(config.redis.topology, config.redis.prefix, command, status, config.status_interval)
    control_task = asyncio.create_task(control.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, replay.stop)
    task = asyncio.create_task(replay.run())
    began = time.perf_counter()
    try:
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=5.0)
            if not done and not quiet:
                print(_progress(replay, publisher), file=sys.stderr)
        task.result()
        await publisher.flush(timeout=10.0)
    finally:
        control_task.cancel()
        lost = await publisher.close()
        await control.close(status())
    elapsed = time.perf_counter() - began
    if not quiet:
        frames = sum(rt.frames for rt in replay.runtimes.values())
        line = (f"livedata: replayed {frames:,} frames in {elapsed:.1f} s ({frames / max(elapsed, 1e-9):,.0f}/s), "
                f"published {publisher.stats.published:,}")
        if replay.pace.speed is not None:
            line += f"; pace error p99 {replay.pace.timing_error() * 1000:.1f} ms"
        print(line, file=sys.stderr)
    if lost:
        print(f"livedata: {lost} account events could not be published (logged above)", file=sys.stderr)


def _progress(replay: Any, publisher: Any) -> str:
    parts = [f"published {publisher.stats.published:,}"]
    for name, rt in replay.runtimes.items():
        at = rt.replayed_at
        when = time.strftime("%H:%M:%S", time.gmtime(at)) if at else "-"
        parts.append(f"{name}: {rt.progress()}, at {when} UTC")
    return "livedata replay: " + "; ".join(parts)
