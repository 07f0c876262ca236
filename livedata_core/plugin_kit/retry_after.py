"""Reading a broker's ``Retry-After`` header, the same way for every plugin."""

from __future__ import annotations

import email.utils
import math
import time

__all__ = ["MAX_RETRY_AFTER", "parse_retry_after"]

MAX_RETRY_AFTER = 600.0
"""The longest ``Retry-After`` honoured, in seconds: a larger value must not stall a poll or an endpoint for hours."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (a number or an HTTP date), capped at :data:`MAX_RETRY_AFTER`;
    ``None`` if absent or unreadable (``inf`` and ``nan`` included)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return min(max(0.0, seconds), MAX_RETRY_AFTER) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - time.time()), MAX_RETRY_AFTER)
