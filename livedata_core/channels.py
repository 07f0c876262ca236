"""Channel names: ``[prefix:]live_data:<type>:<identifier>``, in one place.

Identifiers are what brokers really use: ``AAPL``, ``BRK.B``, ``/ESZ24``, ``$SPX``, OCC option symbols with
spaces (``AAPL  241220C00150000``), account numbers. Anything that would break or confuse a subscriber
is refused with :class:`~livedata_core.errors.InvalidIdentifier`: empty strings, Redis glob characters
(``*?[]``, which would turn a ``PSUBSCRIBE`` pattern into something else), control characters, leading or
trailing whitespace, and identifiers longer than :data:`MAX_IDENTIFIER_LENGTH`.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .errors import InvalidIdentifier

__all__ = [
    "BOOK_TYPES",
    "CHANNEL_TYPES",
    "EVENT_TYPES",
    "MAX_IDENTIFIER_LENGTH",
    "ROOT",
    "book_key",
    "channel",
    "control_channel",
    "event_channel",
    "latest_key",
    "parse_channel",
    "pattern",
    "status_key",
    "stream_key",
    "validate_identifier",
    "validate_prefix",
]

ROOT = "live_data"
CHANNEL_TYPES = ("quotes", "positions", "balances", "orders", "transactions", "bars", "depth")
"""The data types: a channel ``live_data:<type>:<identifier>`` carries that type's models, one identifier each."""
EVENT_TYPES = ("stale",)
"""What the runner announces about itself on ``live_data:events:<type>`` (:func:`event_channel`): JSON objects, not
models, one channel per type (no identifier), so they are not data channels and :data:`CHANNEL_TYPES` leaves them out."""
BOOK_TYPES = ("positions", "balances")
MAX_IDENTIFIER_LENGTH = 64

_BAD_CHARS = re.compile(r"[*?\[\]\\\x00-\x1f\x7f-\x9f\u2028\u2029]")
_PREFIX_OK = re.compile(r"[A-Za-z0-9_.\-]{1,32}")


def validate_identifier(identifier: str) -> str:
    """Return ``identifier`` unchanged if it is safe in a channel name, else raise ``InvalidIdentifier``."""
    if not isinstance(identifier, str):  # before the cache, which cannot even hash a list
        raise InvalidIdentifier(f"identifier must be a string, was {type(identifier).__name__}")
    return _validate_string(identifier)


@lru_cache(maxsize=65536)
def _validate_string(identifier: str) -> str:
    if not identifier:
        raise InvalidIdentifier("identifier is empty")
    if len(identifier) > MAX_IDENTIFIER_LENGTH:
        raise InvalidIdentifier(
            f"identifier is {len(identifier)} characters long; at most {MAX_IDENTIFIER_LENGTH} are allowed"
        )
    bad = _BAD_CHARS.search(identifier)
    if bad:
        raise InvalidIdentifier(
            f"identifier {identifier!r} contains {bad.group()!r}: glob characters *?[]\\ and control "
            "characters are not allowed in channel names"
        )
    if identifier != identifier.strip():
        raise InvalidIdentifier(f"identifier {identifier!r} has leading or trailing whitespace")
    return identifier


def validate_prefix(prefix: str) -> str:
    """Return a deployment prefix if valid ('' for none): letters, digits, ``_.-``, at most 32."""
    if prefix and not _PREFIX_OK.fullmatch(prefix):
        raise InvalidIdentifier(
            f"prefix {prefix!r} is not allowed: use 1 to 32 letters, digits, '_', '.' or '-'"
        )
    return prefix


def _root(prefix: str) -> str:
    return f"{prefix}:{ROOT}" if prefix else ROOT


def _check_type(kind: str) -> None:
    if kind not in CHANNEL_TYPES:
        raise ValueError(f"unknown channel type {kind!r}; expected one of {', '.join(CHANNEL_TYPES)}")


@lru_cache(maxsize=65536)
def channel(kind: str, identifier: str, prefix: str = "") -> str:
    """The channel for one data type and identifier, e.g. ``channel("quotes", "AAPL")`` is
    ``live_data:quotes:AAPL``."""
    _check_type(kind)
    return f"{_root(prefix)}:{kind}:{validate_identifier(identifier)}"


def pattern(spec: str, prefix: str = "") -> str:
    """Expand a short pattern such as ``quotes:*`` or ``orders:12345`` into a full channel pattern.

    A spec that already starts with the root (``live_data:...``) is only prefixed.
    """
    root = _root(prefix)
    if spec.startswith(ROOT + ":"):
        spec = spec[len(ROOT) + 1 :]
    kind = spec.split(":", 1)[0]
    if kind not in CHANNEL_TYPES and kind != "*":
        raise ValueError(f"unknown channel type {kind!r} in {spec!r}; expected one of {', '.join(CHANNEL_TYPES)}")
    return f"{root}:{spec}"


def parse_channel(name: str | bytes, prefix: str = "") -> tuple[str, str]:
    """Split a channel name into ``(type, identifier)``. Raises ``ValueError`` for a foreign name."""
    if isinstance(name, bytes):
        name = name.decode()
    root = _root(prefix) + ":"
    if not name.startswith(root):
        raise ValueError(f"{name!r} is not a livedata channel")
    kind, _, identifier = name[len(root) :].partition(":")
    _check_type(kind)
    return kind, identifier


@lru_cache(maxsize=65536)
def latest_key(kind: str, identifier: str, prefix: str = "") -> str:
    """The key that holds the last payload published on a channel: ``live_data:latest:<type>:<id>``."""
    _check_type(kind)
    return f"{_root(prefix)}:latest:{kind}:{validate_identifier(identifier)}"


@lru_cache(maxsize=65536)
def stream_key(kind: str, identifier: str, prefix: str = "") -> str:
    """The capped Redis Stream that keeps orders, transactions and bars: ``live_data:stream:<type>:<id>``."""
    _check_type(kind)
    return f"{_root(prefix)}:stream:{kind}:{validate_identifier(identifier)}"


@lru_cache(maxsize=65536)
def book_key(kind: str, identifier: str, prefix: str = "") -> str:
    """The hash that holds an account's whole current book: ``live_data:book:positions:<account>`` (one field
    per symbol) or ``live_data:book:balances:<account>`` (one field per currency)."""
    if kind not in BOOK_TYPES:
        raise ValueError(f"no book for {kind!r}; books exist for {' and '.join(BOOK_TYPES)}")
    return f"{_root(prefix)}:book:{kind}:{validate_identifier(identifier)}"


def control_channel(prefix: str = "") -> str:
    """The channel on which a running runner takes commands (subscribe, unsubscribe, status)."""
    return f"{_root(prefix)}:control"


def event_channel(kind: str, prefix: str = "") -> str:
    """The channel of one type of runner event, e.g. ``event_channel("stale")`` is ``live_data:events:stale``: a
    subscribed symbol went silent while its market is open, or came back (see docs/channels.md)."""
    if kind not in EVENT_TYPES:
        raise ValueError(f"unknown event type {kind!r}; expected one of {', '.join(EVENT_TYPES)}")
    return f"{_root(prefix)}:events:{kind}"


def status_key(prefix: str = "") -> str:
    """The key where a running runner keeps its status as JSON."""
    return f"{_root(prefix)}:status"
