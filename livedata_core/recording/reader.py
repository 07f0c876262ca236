"""Reading a recording back: its instances, and each one's records in order, within a time window."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import zstandard

from ..errors import ConfigError
from .format import instance_files

__all__ = ["Recording", "read_file"]

log = logging.getLogger("livedata.recording")


def read_file(path: Path) -> Iterator[dict[str, Any]]:
    """The records of one file. A file cut short (a crash) gives what its frames hold up to the cut; a last line
    left incomplete is skipped, said in the log."""
    with open(path, "rb") as raw:
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        text = io.BufferedReader(reader)  # type: ignore[arg-type]
        n = 0
        try:
            for line in text:
                n += 1
                if not line.endswith(b"\n"):
                    log.warning("%s: the last line is incomplete (the run stopped while writing it); skipped", path)
                    return
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    log.warning("%s: line %d is not JSON; skipped", path, n)
        except zstandard.ZstdError as exc:
            log.warning("%s ends early after %d records (%s): the run stopped while writing it", path, n, exc)


class Recording:
    """A recording folder (``livedata run --record DIR``): one subfolder per instance.

    :raises ConfigError: ``directory`` is not a recording.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ConfigError(f"{self.directory} is not a folder (a recording is the folder given to --record)")
        self.files = {p.name: instance_files(p) for p in sorted(self.directory.iterdir()) if p.is_dir()}
        self.files = {name: files for name, files in self.files.items() if files}
        if not self.files:
            raise ConfigError(f"{self.directory} holds no recording (no <instance>/*.jsonl.zst files)")

    def __repr__(self) -> str:
        return f"Recording({str(self.directory)!r}, instances={sorted(self.files)})"

    @property
    def instances(self) -> list[str]:
        return sorted(self.files)

    def plugin(self, instance: str) -> str:
        """The plugin the instance ran (from its files' ``meta`` records)."""
        return self.meta(instance)["plugin"]

    def settings(self, instance: str) -> dict[str, Any]:
        """The instance's settings table as recorded (secrets redacted; empty if the recording has none)."""
        return dict(self.meta(instance).get("settings") or {})

    def meta(self, instance: str) -> dict[str, Any]:
        """The instance's first ``meta`` record."""
        for record in self.records(instance):
            if record["kind"] == "meta":
                return record
        raise ConfigError(f"the recording of {instance!r} has no meta record")

    def records(self, instance: str, start: float | None = None, end: float | None = None) -> Iterator[dict[str, Any]]:
        """The records of ``instance`` in the order written, those after ``end`` left out. ``start`` leaves out
        nothing (what came before it built the state later frames need); the replay uses it for its pace."""
        for path in self.files.get(instance, ()):
            for record in read_file(path):
                if end is not None and record.get("t", 0) > end:
                    return
                yield record
