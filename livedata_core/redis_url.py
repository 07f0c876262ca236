"""Where Redis is: ``LIVEDATA_REDIS_URL`` (default ``redis://localhost:6379/0``), and how it is shown."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit

import attrs

from .errors import ConfigError

__all__ = ["DEFAULT_REDIS_URL", "RedisTarget", "mask_url", "parse_redis_url", "redis_url_from_env"]

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
ENV_VAR = "LIVEDATA_REDIS_URL"


def redis_url_from_env() -> tuple[str, bool]:
    """The Redis URL to use and whether the user chose it (``False`` means the default)."""
    value = os.environ.get(ENV_VAR)
    if value:
        return value, True
    return DEFAULT_REDIS_URL, False


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)@")


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, safe for logs and messages.

    Works on the raw text up to the last ``@``, so a password with ``/``, ``#`` or ``?`` that was not
    percent-encoded (and so confuses URL parsers) is hidden too.
    """
    match = _USERINFO.match(url)
    if match is None:
        at = url.rfind("@")  # no scheme (a typo such as redis//...): hide everything before the last @
        return "***" + url[at:] if at >= 0 else url
    userinfo = match.group(2)
    user = userinfo.split(":", 1)[0] if ":" in userinfo else userinfo
    hidden = f"{user}:***" if ":" in userinfo else "***"
    return match.group(1) + hidden + "@" + url[match.end():]


@attrs.frozen(repr=False)
class RedisTarget:
    """A parsed Redis URL. ``repr`` masks the password."""

    url: str
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool
    unix_path: str | None = None

    def __repr__(self) -> str:
        return f"RedisTarget({mask_url(self.url)!r})"


def parse_redis_url(url: str) -> RedisTarget:
    """Parse ``redis://``, ``rediss://`` (TLS) or ``unix://`` URLs; ``ConfigError`` for anything else."""
    shown = mask_url(url)
    # Messages show only the masked URL: a parser's own error text can quote part of the password.
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"Redis URL {shown!r} is not valid: its port is not a number (characters such as / # ? @ in a "
            "password must be percent-encoded)"
        ) from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"Redis URL {shown!r} must start with redis://, rediss:// or unix://")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if parts.scheme == "unix":
        db = 0
        for item in parts.query.split("&"):
            if item.startswith("db="):
                try:
                    db = int(item[3:])
                except ValueError:
                    raise ConfigError(f"Redis URL {shown!r}: db={item[3:]!r} is not a number") from None
        return RedisTarget(url, "", 0, db, username, password, False, unix_path=parts.path)
    if not parts.hostname:
        raise ConfigError(f"Redis URL {shown!r} has no host")
    path = parts.path.strip("/")
    try:
        db = int(path) if path else 0
    except ValueError:
        raise ConfigError(f"Redis URL {shown!r}: database {path!r} is not a number") from None
    return RedisTarget(url, parts.hostname, port or 6379, db, username, password, parts.scheme == "rediss")
