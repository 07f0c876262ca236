"""What a new leader takes over from the one before: the symbols it streamed, as its last stored status says.

Symbols added or removed live (``livedata subscribe`` / ``unsubscribe``) live in the leader's memory only; the
leader stores its status (``live_data:status``, every ``status_interval``; with ``[ha]`` kept at least three
leases), and a runner
that takes the lease streams, per instance, the symbols that status lists instead of the configured ones. A status
older than that (no leader for a while) or of an instance this runner does not have changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from ...aio_tools import reraise_if_cancelling, within
from ...channels import status_key

__all__ = ["adopt_symbols"]

log = logging.getLogger("livedata.runner.ha")


async def adopt_symbols(client: Any, prefix: str, runtimes: dict[str, Any], timeout: float = 2.0) -> dict[str, list[str]]:
    """Set each streaming instance's wanted symbols to those of the previous leader's stored status (before its
    stream starts). Returns what changed, ``{instance: symbols}``; a status that cannot be read changes nothing."""
    try:
        raw = await within(client.get(status_key(prefix)), timeout)
        brokers = orjson.loads(raw)["brokers"] if raw else {}
    except Exception as exc:
        reraise_if_cancelling()
        log.warning("could not read the previous leader's status (%s): streaming the configured symbols", exc)
        return {}
    changed: dict[str, list[str]] = {}
    for name, row in brokers.items() if isinstance(brokers, dict) else ():
        rt = runtimes.get(name)
        symbols = row.get("symbols") if isinstance(row, dict) else None
        if rt is None or not rt.broker.has("stream") or not isinstance(symbols, list):
            continue
        try:
            wanted = rt.normalize(symbols)
        except Exception as exc:  # a plugin that changed its mind about a symbol: keep the configured ones
            log.warning("%s: the previous leader's symbols are not taken over: %s", name, exc)
            continue
        if len(wanted) > rt.max_symbols or set(wanted) == rt.symbols:
            continue
        rt.symbols.clear()  # the same set object the stream reader filters quotes with
        rt.symbols.update(wanted)
        changed[name] = wanted
        log.warning("%s: streaming the %d symbols the previous leader streamed (added or removed live): %s", name,
                    len(wanted), ", ".join(wanted[:20]) + (" ..." if len(wanted) > 20 else ""))  # fmt: skip
    return changed
