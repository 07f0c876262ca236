"""Token stores: where broker tokens live. Secrets never leave through logs, reprs or exceptions.

(The default keyring/file stores are built out in the Schwab work; this module defines the interface.)
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["MemoryTokenStore", "TokenStore"]


@runtime_checkable
class TokenStore(Protocol):
    """Load, save and delete one broker's token record (a JSON-able dict) under a key."""

    def load(self, key: str) -> dict[str, Any] | None: ...

    def save(self, key: str, tokens: dict[str, Any]) -> None: ...

    def delete(self, key: str) -> None: ...


class MemoryTokenStore:
    """A token store that keeps tokens in this process only (tests, demos)."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, Any]] = {}

    def load(self, key: str) -> dict[str, Any] | None:
        value = self._data.get(key)
        return dict(value) if value is not None else None

    def save(self, key: str, tokens: dict[str, Any]) -> None:
        self._data[key] = dict(tokens)

    def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def __repr__(self) -> str:
        return f"MemoryTokenStore(keys={sorted(self._data)})"
