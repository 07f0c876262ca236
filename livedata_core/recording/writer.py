"""The recorder: what the runner hands it is queued in memory and written by one thread.

The event loop only appends to a queue (a few hundred nanoseconds per frame); redaction, JSON encoding, zstd
compression and the disk are the writer thread's. The queue is bounded: when the disk is slow and ``max_queue``
records (or ``max_bytes`` of them) wait, frames and REST answers are dropped *from the recording*, counted per
instance (in ``livedata status`` and as a ``dropped`` record in the file), never held up and never dropped from
publishing.
Marks (connect, subscribe) are rare and always queued.

Compression is zstandard (level 3): on frames like a streamer's it compresses at about 170 MB/s against gzip's
34 MB/s (level 6) for the same ratio (about 13:1), and reads back about twice as fast, so a busy hour costs
the writer thread a fraction of a core and the disk a few MB.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import zstandard

from .format import FORMAT_VERSION, file_hour, file_name
from .redaction import redact_text, redact_url, redact_value

__all__ = ["InstanceRecorder", "Recorder"]

log = logging.getLogger("livedata.recording")

MAX_QUEUE = 100_000
"""Records waiting for the writer thread, at most."""
MAX_BYTES = 64 * 2**20
"""Bytes of frames and REST bodies waiting for the writer thread, at most (64 MB)."""
FLUSH_EVERY = 1.0
"""Seconds between zstd frame ends: a crash loses at most this much of the recording."""
LEVEL = 3

_STOP = object()
Redactor = Callable[[str, str], str]


class InstanceRecorder:
    """What one instance records through: its frames (:meth:`tap`), REST answers (:meth:`rest`) and marks.

    Made by :meth:`Recorder.instance`; every method is called on the event loop and never blocks.
    """

    def __init__(self, recorder: Recorder, instance: str, plugin: str, redact: Redactor | None,
                 settings: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.recorder = recorder
        self.instance = instance
        self.plugin = plugin
        self.redact = redact
        self.settings = redact_value(settings)[0] if settings else {}
        """The instance's ``[brokers.NAME]`` table, secrets redacted: the replay's default settings."""
        self.queued = 0
        self.dropped = 0
        self.withheld = 0
        """Frames left out because they could not be redacted (the writer thread's count)."""
        self._dropped_written = 0  # the writer thread's: drops already said in the file
        self._queue = recorder._queue
        self._max = recorder.max_queue
        self._max_bytes = recorder.max_bytes

    def __repr__(self) -> str:
        return f"InstanceRecorder({self.instance!r}, queued={self.queued}, dropped={self.dropped})"

    def tap(self, direction: str, data: str | bytes, t: float) -> None:
        """A websocket frame (the :data:`~livedata_core.plugin_kit.websocket_stream.Tap` of a stream)."""
        self._put(direction, t, data, len(data))

    def rest(self, method: str, url: str, status: int, body: bytes, t: float) -> None:
        """A REST answer (the HTTP transport of :mod:`livedata_core.recording.http` calls it)."""
        self._put("rest", t, (method, url, status, body), len(body))

    def _put(self, kind: str, t: float, data: Any, size: int) -> None:
        """Queue a frame or an answer of ``size`` bytes, or count it dropped when the queue is full."""
        recorder = self.recorder
        if self._queue.qsize() >= self._max or recorder.queued_bytes - recorder.written_bytes >= self._max_bytes:
            self.dropped += 1
            return
        self.queued += 1
        recorder.queued_bytes += size
        self._queue.put((self, kind, t, data))

    def mark(self, kind: str, **fields: Any) -> None:
        """A runner event (``connect``, ``streaming``, ``subscribe``, ``unsubscribe``); always queued."""
        self.queued += 1
        self._queue.put((self, kind, time.time(), fields))

    def status(self) -> str:
        """One line for ``livedata status``."""
        line = f"{self.queued} records" + (f", {self.dropped} dropped (disk too slow)" if self.dropped else "")
        if self.withheld:
            line += f", {self.withheld} withheld (binary, not text: cannot be redacted)"
        failed = self.recorder.failed
        return line + (f"; writing failed: {failed}" if failed else "")


class _File:
    __slots__ = ("hour", "raw", "out", "path")

    def __init__(self, path: Path, hour: int, level: int) -> None:
        self.path = path
        self.hour = hour
        self.raw = open(path, "ab")  # a second run in the same hour appends its own zstd frames
        self.out = zstandard.ZstdCompressor(level=level).stream_writer(self.raw, closefd=False)

    def flush(self) -> None:
        self.out.flush(zstandard.FLUSH_FRAME)
        self.raw.flush()

    def close(self) -> None:
        try:
            self.out.flush(zstandard.FLUSH_FRAME)
            self.out.close()
        finally:
            self.raw.close()


class Recorder:
    """Record every instance of a run into ``directory`` (``livedata run --record DIR``).

    :param directory: where the instances' folders go (made if missing).
    :param max_queue: records waiting for the writer, at most; more are dropped from the recording and counted.
    :param max_bytes: bytes of frames and bodies waiting for the writer, at most; likewise.

    :meth:`start` the thread, :meth:`close` at the end (it writes what is queued).
    """

    def __init__(self, directory: str | Path, *, max_queue: int = MAX_QUEUE, max_bytes: int = MAX_BYTES,
                 level: int = LEVEL) -> None:  # fmt: skip
        self.directory = Path(directory)
        self.max_queue = max_queue
        self.max_bytes = max_bytes
        # Each counter has one writer (the event loop, the writer thread): their difference is the backlog.
        self.queued_bytes = 0
        self.written_bytes = 0
        self.level = level
        self.written = 0
        self.failed: str | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._instances: dict[str, InstanceRecorder] = {}
        self._files: dict[str, _File] = {}
        self._thread: threading.Thread | None = None
        existing = self.directory
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            from ..errors import ConfigError

            raise ConfigError(f"cannot record into {self.directory}: {existing} is not a folder this user may write to")

    def __repr__(self) -> str:
        return f"Recorder({str(self.directory)!r}, instances={sorted(self._instances)})"

    def instance(self, name: str, plugin: str, redact: Redactor | None = None,
                 settings: dict[str, Any] | None = None) -> InstanceRecorder:  # fmt: skip
        """The recorder of instance ``name`` (folder ``directory/name``); ``redact(kind, text)`` is the plugin's
        own redaction step, run after core's in the writer thread; ``settings`` (its table) go into each file's
        ``meta`` record, secrets redacted, for the replay."""
        rec = self._instances.get(name)
        if rec is None:
            rec = self._instances[name] = InstanceRecorder(self, name, plugin, redact, settings)
        return rec

    def start(self) -> None:
        """Start the writer thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="livedata-recorder", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and close the files (waits at most ``timeout`` seconds for the thread)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)
            if thread.is_alive():
                log.error("the recorder did not finish writing within %.0f s; the files may end early", timeout)

    # -- the writer thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        q = self._queue
        last_flush = time.monotonic()
        stop = False
        while not stop:
            try:
                item = q.get(timeout=FLUSH_EVERY)
            except queue.Empty:
                item = None
            batch = [] if item is None else [item]
            while len(batch) < 10_000:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            for entry in batch:
                if entry is _STOP:
                    stop = True
                    continue
                if entry[1] == "rest":
                    self.written_bytes += len(entry[3][3])
                elif entry[1] in ("in", "out"):
                    self.written_bytes += len(entry[3])
                try:
                    self._write(*entry)
                except Exception as exc:  # a full disk, a bug: say it once, keep publishing, keep trying
                    if self.failed is None:
                        log.error("recording failed: %s: %s", type(exc).__name__, exc)
                    self.failed = f"{type(exc).__name__}: {exc}"
            now = time.monotonic()
            if stop or now - last_flush >= FLUSH_EVERY:
                last_flush = now
                for f in self._files.values():
                    try:
                        f.flush()
                    except OSError as exc:
                        self.failed = f"{type(exc).__name__}: {exc}"
        for f in self._files.values():
            try:
                f.close()
            except OSError as exc:
                log.error("closing recording file %s failed: %s", f.path, exc)
        self._files.clear()

    def _file(self, rec: InstanceRecorder, t: float) -> _File:
        f = self._files.get(rec.instance)
        hour = file_hour(t)
        if f is None or hour > f.hour:  # a late record of the previous hour stays in the newer file
            if f is not None:
                f.close()
            from .. import __version__

            folder = self.directory / rec.instance
            folder.mkdir(parents=True, exist_ok=True)
            f = self._files[rec.instance] = _File(folder / file_name(t), hour, self.level)
            self._line(f, {"t": t, "kind": "meta", "format": FORMAT_VERSION, "instance": rec.instance,
                           "plugin": rec.plugin, "livedata": __version__, "settings": rec.settings})  # fmt: skip
        return f

    def _line(self, f: _File, record: dict[str, Any]) -> None:
        f.out.write(orjson.dumps(record) + b"\n")
        self.written += 1

    def _write(self, rec: InstanceRecorder, kind: str, t: float, data: Any) -> None:
        f = self._file(rec, t)
        if rec.dropped != rec._dropped_written:
            count, rec._dropped_written = rec.dropped - rec._dropped_written, rec.dropped
            self._line(f, {"t": t, "kind": "dropped", "count": count})
        if kind == "in" or kind == "out":
            binary = type(data) is bytes
            if binary:
                try:
                    data = data.decode()  # text in a binary frame is redacted like any other
                except UnicodeDecodeError:
                    # Not text: a secret in it may have no name to find it by. Never written; the place is.
                    if not rec.withheld:
                        log.warning("recording %s: binary frames that are not UTF-8 text cannot be redacted and are "
                                    "left out of the recording (counted in status)", rec.instance)  # fmt: skip
                    rec.withheld += 1
                    self._line(f, {"t": t, "kind": "withheld", "direction": kind, "bytes": len(data)})
                    return
            text = redact_text(data)
            if rec.redact is not None:
                text = rec.redact(kind, text)
            self._line(f, {"t": t, "kind": kind, "data": text, "binary": True} if binary else
                          {"t": t, "kind": kind, "data": text})  # fmt: skip
        elif kind == "rest":
            method, url, status, body = data
            record = {"t": t, "kind": "rest", "method": method, "url": redact_url(url), "status": status}
            try:
                text = body.decode()
            except UnicodeDecodeError:  # as a binary frame: its place and status only
                rec.withheld += 1
                self._line(f, {**record, "body": "", "withheld": len(body)})
                return
            text = redact_text(text) if text else text
            if rec.redact is not None and text:
                text = rec.redact(kind, text)
            self._line(f, {**record, "body": text})
        else:
            self._line(f, {"t": t, "kind": kind, **data})
