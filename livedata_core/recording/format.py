"""The recording file format: one folder per instance, one zstd-compressed JSON-lines file per UTC hour.

``DIR/<instance>/<YYYYMMDD-HH>.jsonl.zst`` holds one JSON object per line, in the order they happened. Every
record has ``t`` (wall-clock seconds, ``time.time()``, when the frame was received or sent) and ``kind``:

==============  ===========================================================================================
``kind``        other fields
==============  ===========================================================================================
``meta``        ``format`` (:data:`FORMAT_VERSION`), ``instance``, ``plugin``, ``livedata`` (core's version),
                ``settings`` (the instance's table, secrets redacted): the first record of every file a run writes
``in``, ``out`` ``data``: a websocket frame received or sent, as text (``binary``: true when it came as a binary
                frame of UTF-8 text); recordings before withholding existed may have ``b64`` instead of ``data``
``withheld``    ``direction`` (``in``/``out``), ``bytes``: a binary frame that is not UTF-8 text, left out because
                it cannot be redacted (its place and size only)
``rest``        ``method``, ``url`` (its query redacted), ``status``, ``body`` (the response text; ``""`` with
                ``withheld``: its size, for a body that is not UTF-8 text): a REST answer
``connect``     a new stream connection starts (the stream hook returned a stream)
``streaming``   ``symbols``: connected and subscribed to these at connect time; ``kinds``: the symbols of other
                data kinds (``{"bars": [...], "depth": [...]}``), when there are any
``subscribe``,  ``symbols``: a live (un)subscribe starts (``livedata subscribe``); ``data_kind``: its kind, when
``unsubscribe`` not quotes
``dropped``     ``count``: records dropped from the recording because the disk was slow (never from publishing)
==============  ===========================================================================================

A file is a sequence of zstd frames (one per flush, about every second), so a file cut short by a crash reads
up to its last complete frame, and a second run in the same hour appends its own frames.
"""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["FORMAT_VERSION", "SUFFIX", "file_name", "file_hour"]

FORMAT_VERSION = 1
SUFFIX = ".jsonl.zst"


def file_name(t: float) -> str:
    """The file a record at wall-clock time ``t`` goes to: its UTC hour, ``20261205-03.jsonl.zst``."""
    return time.strftime("%Y%m%d-%H", time.gmtime(t)) + SUFFIX


def file_hour(t: float) -> int:
    """The hour number (hours since the epoch) of ``t``: a file holds one such hour."""
    return int(t // 3600)


def instance_files(folder: Path) -> list[Path]:
    """The recording files of one instance's folder, oldest first."""
    return sorted(p for p in folder.iterdir() if p.name.endswith(SUFFIX))
