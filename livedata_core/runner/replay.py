"""Replaying a recording (:mod:`livedata_core.recording`) through the plugin's own stream and the publisher (``livedata replay DIR``).

For each instance of the recording, core asks the plugin for a stream (its ``replay_stream`` hook: built as
``stream`` builds one, without a session) and opens it on the recording instead of a socket
(:class:`ReplayConnection`, through ``WebSocketStream.opener``). The runner's own lifecycle then drives it
(:class:`ReplayRuntime` is a :class:`~livedata_core.runner.broker_runtime.BrokerRuntime`): ``connect()`` (the
plugin's login sends its frames, the recorded answers come back), ``subscribe()`` of the symbols the recorded
connection streamed, ``events()`` into the same publisher, ``close()``. Each recorded connection is one
connection of the replay; live ``subscribe``/``unsubscribe`` happen again where they happened. REST calls are
answered from the recording (:class:`~livedata_core.recording.http.RestReplay`); polls are not run (what the
polls published is in the recorded REST answers, not replayed).

Order and pace: until a recorded connection was streaming, a received frame is handed over only once the
plugin has sent as many frames as had been sent before it (its login and subscribe requests, so each answer
finds its request waiting), and afterwards only once the replayed connection is streaming too. Frames are then
paced by their recorded times divided by ``speed`` (``None``: as fast as they are parsed), from ``start`` on
(frames before it are fed at once: they build the login, subscriptions and merged quotes later frames need).
The same recording therefore gives the same published payloads in the same order, whatever the speed; the
stream's ``clock`` gives each frame its recorded receive time, so a plugin that stamps ``received_at`` with
``WebSocketStream.received_ms()`` (tos, IBKR) publishes the very payloads of the live run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, LivedataError, PluginError, StreamError
from ..plugin_kit.streaming import BrokerStream
from ..recording.http import HTTP_RECORDING, RestReplay
from ..recording.reader import Recording
from .broker_runtime import BrokerRuntime
from .config import BackoffConfig, BrokerConfig

__all__ = ["Pace", "Replay", "ReplayConnection", "ReplayRuntime", "Segment", "segments"]

log = logging.getLogger("livedata.replay")

GATE_TIMEOUT = 2.0
"""Seconds a frame waits for the plugin to send what was sent before it (or to be streaming); then it goes on
(counted in ``gate_timeouts``): a plugin that no longer sends the same requests still gets every frame."""
REPLAY_BACKOFF = BackoffConfig(initial=0.001, max=0.001)


class Segment:
    """One recorded connection: its frames and marks, in order."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.items: list[dict[str, Any]] = []
        self.symbols: list[str] = []
        """The quotes it subscribed at connect time (its ``streaming`` mark)."""
        self.kinds: dict[str, list[str]] = {}
        """The other kinds' symbols it subscribed at connect time (bars, depth)."""
        self.frames = 0

    def __repr__(self) -> str:
        return f"Segment({self.index}, frames={self.frames}, symbols={len(self.symbols)})"


def segments(records: Any) -> tuple[list[Segment], list[dict[str, Any]]]:
    """Split an instance's records into its connections, and collect its REST answers."""
    out: list[Segment] = []
    rest: list[dict[str, Any]] = []
    current: Segment | None = None
    for record in records:
        kind = record.get("kind")
        if kind == "rest":
            rest.append(record)
        elif kind == "connect":
            current = Segment(len(out))
            out.append(current)
        elif current is None:
            continue  # meta, or frames of a connection whose start is not in the recording
        elif kind in ("in", "out", "subscribe", "unsubscribe", "streaming"):
            current.items.append(record)
            if kind == "in":
                current.frames += 1
            elif kind == "streaming" and not current.symbols and not current.kinds:
                current.symbols = list(record.get("symbols") or ())
                current.kinds = {k: list(v) for k, v in (record.get("kinds") or {}).items()}
    return out, rest


class Pace:
    """Recorded time to loop time: ``speed`` times as fast (``None``: no waiting), starting at ``start``
    (recorded seconds; frames before it are not waited for)."""

    def __init__(self, speed: float | None, start: float) -> None:
        if speed is not None and not speed > 0:
            raise ConfigError(f"--speed must be a positive number or max, was {speed!r}")
        self.speed = speed
        self.start = start
        self.loop_start: float | None = None
        self.delivered: list[tuple[float, float, int, bool]] = []
        """(recorded time, wall time handed over, connection, gated) of every paced frame: the replay's timing, for
        tests and figures. ``gated``: a login or subscribe answer, handed over only once the plugin had sent the
        request it answers (see the module docstring), so its time is the plugin's as much as the recording's."""

    def begin(self) -> None:
        self.loop_start = time.perf_counter()

    async def wait(self, t: float, closed: asyncio.Event) -> None:
        if self.speed is None or t < self.start:
            return
        due = self.loop_start + (t - self.start) / self.speed  # type: ignore[operator]
        delay = due - time.perf_counter()
        if delay > 0.002:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed.wait(), delay - 0.001)
        while time.perf_counter() < due and not closed.is_set():
            await asyncio.sleep(0)  # the last millisecond: the loop's timers are coarser than that

    def timing_error(self, quantile: float = 0.99) -> float:
        """The ``quantile`` of |replayed gap - recorded gap / speed| between consecutive paced frames of one
        recorded connection while it streams, seconds. Left out: gaps across connections (frames of two
        connections recorded a fraction of a millisecond apart are parsed one after the other on one event loop,
        so such a gap times the parsers) and gaps to or from a gated frame (its time is when the plugin asked)."""
        errors = []
        last: dict[int, tuple[float, float, bool]] = {}
        for t1, w1, connection, gated in self.delivered:
            if connection in last:
                t0, w0, gated0 = last[connection]
                if not (gated or gated0):
                    errors.append(abs((w1 - w0) - (t1 - t0) / (self.speed or 1)))
            last[connection] = (t1, w1, gated)
        if not errors:
            return 0.0
        errors.sort()
        return errors[min(len(errors) - 1, int(quantile * len(errors)))]


class _Transport:
    def __init__(self, conn: ReplayConnection) -> None:
        self.conn = conn

    def abort(self) -> None:
        self.conn.closed.set()


class ReplayConnection:
    """What a :class:`~livedata_core.plugin_kit.websocket_stream.WebSocketStream` reads instead of a socket: one
    recorded connection, handed over as the module docstring says. What the plugin sends is counted, not kept."""

    def __init__(self, segment: Segment, pace: Pace, runtime: ReplayRuntime) -> None:
        self.segment = segment
        self.pace = pace
        self.runtime = runtime
        self.sent = 0
        self.closed = asyncio.Event()
        self.transport = _Transport(self)
        self._sent_changed = asyncio.Event()
        self._ended = False
        self._t = 0.0

    def now(self) -> float:
        """The recorded receive time of the frame being handed over (the stream's ``clock``)."""
        return self._t

    @property
    def state(self) -> Any:
        from websockets.protocol import State

        return State.CLOSED if self.closed.is_set() else State.OPEN

    async def send(self, message: str | bytes) -> None:
        if self.closed.is_set() or self._ended:
            from websockets.exceptions import ConnectionClosedOK

            raise ConnectionClosedOK(None, None)
        self.sent += 1
        self._sent_changed.set()

    async def close(self, *args: Any, **kwargs: Any) -> None:
        self.closed.set()

    async def ping(self, *args: Any) -> asyncio.Future[float]:
        future = asyncio.get_running_loop().create_future()
        future.set_result(0.0)
        return future

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[str | bytes]:
        import base64

        runtime = self.runtime
        pace = self.pace
        outs = 0
        streaming = False
        try:
            for item in self.segment.items:
                if self.closed.is_set():
                    return
                kind = item["kind"]
                if kind == "out":
                    outs += 1
                elif kind == "streaming":
                    streaming = True
                elif kind == "in":
                    gated = not streaming or runtime.subscribing
                    if gated:
                        await self._sent_at_least(outs)
                    else:
                        await self._streaming()
                    await pace.wait(item["t"], self.closed)
                    if self.closed.is_set():
                        return
                    if pace.speed is not None and item["t"] >= pace.start:
                        pace.delivered.append((item["t"], time.perf_counter(), id(self), gated))
                    if streaming:
                        await runtime.caught_up()
                    runtime.replayed_at = self._t = item["t"]
                    runtime.frames += 1
                    data = item.get("data")
                    if data is None:
                        data = base64.b64decode(item["b64"])
                    elif item.get("binary"):
                        data = data.encode()
                    yield data
                else:  # a live subscribe or unsubscribe, where it happened
                    await pace.wait(item["t"], self.closed)
                    runtime.live_change(kind, item.get("symbols") or [], item.get("data_kind") or "quotes")
                    await asyncio.sleep(0)  # let it send its request before the answer is handed over
        finally:
            self._ended = True

    async def _sent_at_least(self, n: int) -> None:
        deadline = time.perf_counter() + GATE_TIMEOUT
        while self.sent < n and not self.closed.is_set():
            self._sent_changed.clear()
            left = deadline - time.perf_counter()
            if left <= 0:
                self.runtime.gate_timeouts += 1
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sent_changed.wait(), left)

    async def _streaming(self) -> None:
        event = self.runtime.streaming_now
        if not event.is_set():
            try:
                await asyncio.wait_for(event.wait(), GATE_TIMEOUT)
            except TimeoutError:
                self.runtime.gate_timeouts += 1


class ReplayRuntime(BrokerRuntime):
    """A :class:`~livedata_core.runner.broker_runtime.BrokerRuntime` whose streams are opened on a recording.

    :param rest: the instance's recorded REST answers.
    """

    BARS_CONTINUE_REDIS = False
    """A replay's bars start from the recording, not from what a live run or an earlier replay left in Redis (which
    would drop every replayed bar as a repeat, or check gaps against another stream)."""

    def __init__(self, broker: Any, config: BrokerConfig, publisher: Any, segments_: list[Segment],
                 rest: RestReplay, pace: Pace, *, ctx: Any = None) -> None:  # fmt: skip
        super().__init__(broker, config, publisher, REPLAY_BACKOFF, ctx=ctx)
        self.segments = segments_
        self.rest = rest
        self.pace = pace
        self.total_frames = sum(s.frames for s in segments_)
        self.frames = 0
        self.gate_timeouts = 0
        self.subscribing = 0
        self.replayed_at: float | None = None
        self.streaming_now = asyncio.Event()
        self._connection: ReplayConnection | None = None
        self._changes: set[asyncio.Task[Any]] = set()
        if not broker.has_hook("replay_stream"):
            raise ConfigError(f"{config.name}: plugin {broker.name!r} cannot replay a recording (it has no "
                              "replay_stream hook; see docs/recording.md)")  # fmt: skip

    async def ensure_authenticated(self) -> None:
        """A replay logs in nowhere: its REST calls (a bar gap's history) are answered from the recording."""

    async def _open_stream(self) -> BrokerStream:
        stream = await self.broker.call("replay_stream", ctx=self.ctx)
        if not isinstance(stream, BrokerStream) or not hasattr(stream, "opener"):
            raise PluginError(f"replay_stream hook of {self.broker.name!r} returned {type(stream).__name__}, not a "
                              "WebSocketStream")  # fmt: skip
        connection = self._connection
        stream.opener = lambda url, **options: _opened(connection)
        if connection is not None:
            stream.clock = connection.now  # receive times are the recorded ones: the same received_at
        stream.heartbeat_timeout = None  # a recording's silences are the broker's, not a dead connection
        stream.ping_interval = None
        return stream

    def _streaming(self, stream: BrokerStream) -> None:
        self.streaming_now.set()

    def live_change(self, kind: str, symbols: list[str], data_kind: str = "quotes") -> None:
        """A recorded live subscribe or unsubscribe (of quotes, bars or depth), done again now."""
        call = self.subscribe if kind == "subscribe" else self.unsubscribe
        self.subscribing += 1

        async def change() -> None:
            try:
                await call(symbols, data_kind)
            except Exception as exc:
                self._record_error(f"replayed {kind} of {', '.join(symbols)} failed", exc)
            finally:
                self.subscribing -= 1

        task = asyncio.get_running_loop().create_task(change())
        self._changes.add(task)
        task.add_done_callback(self._changes.discard)

    async def caught_up(self) -> None:
        """Wait until what the last frame carried is taken up for Redis, so none of it is conflated with the next:
        at any speed the replay publishes every quote the recorded connection yielded."""
        stream = self._stream_obj
        queue = getattr(stream, "_queue", None)
        publisher = self.publisher
        spins = 0
        while (queue is not None and queue.qsize()) or getattr(publisher, "queued_quotes", 0):
            spins += 1
            await asyncio.sleep(0 if spins < 50 else 0.0005)

    def progress(self) -> str:
        """``'42% (1,234 of 2,900 frames)'``: for status lines."""
        share = self.frames / self.total_frames if self.total_frames else 1.0
        return f"{share:.0%} ({self.frames:,} of {self.total_frames:,} frames)"

    async def replay(self) -> None:
        """Replay every recorded connection in turn; never raises but a cancellation (errors are in the status)."""
        HTTP_RECORDING.set(self.rest)
        for segment in self.segments:
            if self.stopping.is_set():
                break
            for data_kind, wanted in self.wanted.items():  # the same sets: the runtime's other parts hold them
                wanted.clear()
                wanted.update(segment.kinds.get(data_kind, ()) if data_kind != "quotes" else segment.symbols)
            self.streaming_now = asyncio.Event()
            self._connection = ReplayConnection(segment, self.pace, self)
            try:
                await self._connect_and_pump(_NO_BACKOFF)
            except StreamError as exc:
                if str(exc) != "the broker closed the stream":  # the recorded connection ended: the usual end
                    self._record_error(f"replayed connection {segment.index + 1} failed", exc)
            except LivedataError as exc:
                self._record_error(f"replayed connection {segment.index + 1} failed", exc)
            except Exception as exc:
                self.log.exception("replaying connection %d crashed", segment.index + 1)
                self._record_error("replay crashed", exc, log=False)
            if self._changes:
                await asyncio.wait(set(self._changes), timeout=GATE_TIMEOUT)
            if not await self.bars.settled(GATE_TIMEOUT):  # the bars a gap fill holds are published by the replay too
                self._record_error("replay", StreamError(f"a bar gap fill did not end within {GATE_TIMEOUT:g}s"))
        self.status.state = "replayed"


class _NoBackoff:
    attempt = 0

    def reset(self) -> None:
        pass


_NO_BACKOFF: Any = _NoBackoff()


async def _opened(connection: ReplayConnection | None) -> ReplayConnection:
    if connection is None:
        raise StreamError("no recorded connection to replay")
    return connection


class Replay:
    """Replay a recording into a publisher: every instance (or those named), at ``speed``.

    :param recording: the folder, or a :class:`~livedata_core.recording.reader.Recording`.
    :param publisher: an :class:`~livedata_core.redis_io.publisher.AsyncPublisher` (started and closed by the
        caller), or anything with its ``publish(model)``.
    :param settings: per instance, settings over those recorded (the instance's table when it was recorded).
    :param start, end: recorded wall-clock seconds: pace from ``start``, stop after ``end``.
    """

    def __init__(self, recording: str | Path | Recording, publisher: Any, *, speed: float | None = None,
                 start: float | None = None, end: float | None = None, instances: list[str] | None = None,
                 settings: dict[str, dict[str, Any]] | None = None) -> None:  # fmt: skip
        from ..plugin_kit.plugins import get_broker

        self.recording = recording if isinstance(recording, Recording) else Recording(recording)
        names = instances or self.recording.instances
        unknown = [n for n in names if n not in self.recording.files]
        if unknown:
            raise ConfigError(f"the recording has no instance {', '.join(unknown)}; it has "
                              f"{', '.join(self.recording.instances)}")  # fmt: skip
        first = None
        parts = {}
        self.skipped: list[str] = []
        """Instances with no stream in the recording (REST answers of polls only): nothing to replay."""
        for name in names:
            segs, rest = segments(self.recording.records(name, end=end))
            if not segs:
                self.skipped.append(name)
                log.info("%s: no stream connection in the recording (polls are not replayed); skipped", name)
                continue
            parts[name] = (segs, rest)
            for seg in segs:
                for item in seg.items:
                    first = item["t"] if first is None else min(first, item["t"])
                    break
        self.pace = Pace(speed, start if start is not None else (first or 0.0))
        self.runtimes: dict[str, ReplayRuntime] = {}
        for name in parts:
            broker = get_broker(self.recording.plugin(name))
            table = {**self.recording.settings(name), **(settings or {}).get(name, {})}
            link = broker.info.login_plugin
            if link is not None and isinstance(table.get(link), str):
                del table[link]  # a link to another instance's login: a replay logs in nowhere
            config = BrokerConfig(name=name, plugin=broker.name, settings=table)
            # No credentials are checked: a replay logs in nowhere (a developer's machine may have none).
            ctx = broker.make_context(config.settings, None, instance=name, check_config=False)
            segs, rest = parts[name]
            self.runtimes[name] = ReplayRuntime(broker, config, publisher, segs, RestReplay(rest), self.pace, ctx=ctx)

    def __repr__(self) -> str:
        return f"Replay({str(self.recording.directory)!r}, speed={self.pace.speed or 'max'})"

    async def run(self) -> None:
        """Replay every instance side by side, on one clock; return when all are done."""
        self.pace.begin()
        tasks = [asyncio.create_task(rt.replay(), name=f"replay-{name}") for name, rt in self.runtimes.items()]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for name, rt in self.runtimes.items():
                if rt.broker.has_hook("shutdown"):
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(rt.broker.call("shutdown", ctx=rt.ctx), 2.0)

    def stop(self) -> None:
        for rt in self.runtimes.values():
            rt.stop()
            if rt._connection is not None:
                rt._connection.closed.set()

    def status(self) -> dict[str, dict[str, Any]]:
        """Each instance's status row, with its replay progress (``replay``)."""
        out = {}
        for name, rt in self.runtimes.items():
            rt.status.extra["replay"] = rt.progress()
            if rt.gate_timeouts:
                rt.status.extra["replay_gate_timeouts"] = rt.gate_timeouts
            if rt.rest.missing:
                rt.status.extra["replay_rest_missing"] = rt.rest.missing
            out[name] = rt.snapshot()
        return out
