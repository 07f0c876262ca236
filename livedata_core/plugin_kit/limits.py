"""Bounds on numeric settings: one attrs validator, :func:`between`, that core and every plugin use.

Every numeric setting is bounded by what consumes it (Redis, the OS, the broker, the runner's own waits), so a
value out of range stops ``livedata run`` at start with the key named instead of failing later, or being
changed without a word. A plugin declares a field's bounds with ``attrs.field(validator=between(...))``; when
the ``[brokers.NAME]`` table is loaded, core checks them before the settings class is built
(:func:`livedata_core.plugin_kit.broker.structure_settings`), so the message names the whole key::

    brokers.tos.schwab.request_timeout must be at most 3600, was 1e+20

Built directly (``SchwabSettings(request_timeout=1e20)``), the same validator raises ``ValueError``.
Whatever a field declares, a number setting must be finite and a whole-number setting must fit in 64 bits.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

__all__ = [
    "Between",
    "EachValue",
    "INT64_MAX",
    "MAX_INTERVAL",
    "MAX_STREAM_MAXLEN",
    "MAX_SYMBOLS_CAP",
    "MAX_TIMEOUT",
    "MAX_WAIT",
    "between",
    "bounds_of",
    "each_value",
    "number_problem",
    "seconds",
]

INT64_MAX = 2**63 - 1
"""The largest whole number a setting may hold (Redis and most C interfaces take signed 64-bit integers)."""

MAX_TIMEOUT = 3600.0
"""The longest timeout a setting may ask for: an hour (a socket or request waiting longer has failed)."""

MAX_WAIT = 3600.0
"""The longest the runner waits before trying again (reconnect, retry-after): a longer setting could not take
effect, so it is refused rather than cut short."""

MAX_INTERVAL = 86_400.0
"""The longest interval between repeated work (a poll, a keep-alive): a day."""

MAX_SYMBOLS_CAP = 100_000
"""The largest cap on the symbols one broker streams at once (``[brokers.NAME] max_symbols``)."""

MAX_STREAM_MAXLEN = 1_000_000
"""The largest ``stream_maxlen`` (entries kept per orders or transactions stream): a restart reads an account's
stream back whole to skip events it already published, so a stream must stay small enough to read in one go.
Redis itself would take up to :data:`INT64_MAX`."""


def _shown(value: float) -> str:
    return repr(int(value)) if isinstance(value, float) and value.is_integer() and abs(value) < 1e16 else repr(value)


@attrs.frozen
class Between:
    """An attrs validator: a number from ``minimum`` to ``maximum`` (either end may be exclusive or ``None``).

    ``unit`` follows the bound in messages (``"seconds"``); ``reason`` says where a bound comes from when that
    is not obvious (``"Schwab's streamer takes about 500 keys per request"``).
    """

    minimum: float | None
    maximum: float | None
    min_exclusive: bool = False
    max_exclusive: bool = False
    reason: str = ""
    unit: str = ""

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (``"must be at most 3600, was 1e+20"``), or ``None`` if it is in range."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None  # the type check says what is wrong with that
        why = (f" {self.unit}" if self.unit else "") + (f" ({self.reason})" if self.reason else "")
        lo, hi = self.minimum, self.maximum
        if lo is not None and (value <= lo if self.min_exclusive else value < lo):
            word = "greater than" if self.min_exclusive else "at least"
            return f"must be {word} {_shown(lo)}{why}, was {value!r}"
        if hi is not None and (value >= hi if self.max_exclusive else value > hi):
            word = "below" if self.max_exclusive else "at most"
            return f"must be {word} {_shown(hi)}{why}, was {value!r}"
        return None

    def __call__(self, instance: object, attribute: attrs.Attribute, value: Any) -> None:
        problem = self.problem(value)
        if problem:
            raise ValueError(f"{attribute.name} {problem}")


@attrs.frozen
class EachValue:
    """An attrs validator for a table of numbers (``dict[str, float]``): every value within ``bounds``."""

    bounds: Between

    def __call__(self, instance: object, attribute: attrs.Attribute, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                problem = self.bounds.problem(item)
                if problem:
                    raise ValueError(f"{attribute.name}[{key!r}] {problem}")


def between(
    minimum: float | None,
    maximum: float | None,
    *,
    min_exclusive: bool = False,
    max_exclusive: bool = False,
    reason: str = "",
    unit: str = "",
) -> Between:
    """The validator for a number setting from ``minimum`` to ``maximum``: ``between(0, MAX_TIMEOUT,
    min_exclusive=True, unit="seconds")`` is "greater than 0 and at most an hour"."""
    return Between(minimum, maximum, min_exclusive, max_exclusive, reason, unit)


def seconds(minimum: float, maximum: float, *, min_exclusive: bool = False, max_exclusive: bool = False,
            reason: str = "") -> Between:
    """:func:`between` for a duration: messages say ``seconds``."""
    return Between(minimum, maximum, min_exclusive, max_exclusive, reason, "seconds")


def each_value(bounds: Between) -> EachValue:
    """The validator for a table whose every value is a number within ``bounds``."""
    return EachValue(bounds)


def bounds_of(validator: Any) -> Iterator[Between | EachValue]:
    """The :class:`Between` and :class:`EachValue` validators inside an attrs field's ``validator``."""
    if isinstance(validator, (Between, EachValue)):
        yield validator
    # attrs turns a list of validators into an and_() validator, which keeps them in ``_validators``.
    for inner in getattr(validator, "_validators", ()) or ():
        yield from bounds_of(inner)


def number_problem(value: Any, whole: bool) -> str | None:
    """What makes ``value`` unusable as a number setting whatever its bounds (infinite, beyond 64 bits)."""
    if isinstance(value, bool):
        return None
    if whole:
        if isinstance(value, int) and not -INT64_MAX - 1 <= value <= INT64_MAX:
            return f"must be a whole number from {-INT64_MAX - 1} to {INT64_MAX}, was {value!r}"
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a number, was {value!r}"
    if isinstance(value, int) and abs(value) > INT64_MAX:
        return f"must be a number from {-INT64_MAX - 1} to {INT64_MAX}, was {value!r}"
    return None
