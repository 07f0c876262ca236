"""Where Redis is: ``LIVEDATA_REDIS_URL`` (default ``redis://localhost:6379/0``), and how it is shown.

Query arguments are redis-py's own names (``?db=2``, the ``ssl_*`` ones of :mod:`livedata_core.redis_io.tls`),
which redis-py's ``from_url`` passes to its connections as they are. Only those the publisher's own connection
understands too are accepted, so a typo is a ``ConfigError`` at start rather than a setting silently ignored.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

import attrs

from ..errors import ConfigError
from .tls import TLS_ARGUMENTS, TlsOptions, tls_hint, tls_options

__all__ = [
    "DEFAULT_REDIS_URL", "QUERY_ARGUMENTS", "RedisTarget", "TlsOptions", "mask_url", "parse_redis_url",
    "redis_url_from_env", "tls_hint",
]  # fmt: skip

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
ENV_VAR = "LIVEDATA_REDIS_URL"


def redis_url_from_env() -> tuple[str, bool]:
    """The Redis URL to use and whether the user chose it (``False`` means the default)."""
    value = os.environ.get(ENV_VAR)
    if value:
        return value, True
    return DEFAULT_REDIS_URL, False


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)@")

# Query arguments livedata accepts, in redis-py's names. Their values (numbers, flags, file paths) are shown in
# messages; any other argument's value is masked, as redis-py would take ``?password=...`` too.
QUERY_ARGUMENTS = ("db", *TLS_ARGUMENTS)


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, safe for logs and messages.

    Works on the raw text up to the last ``@``, so a password with ``/``, ``#`` or ``?`` that was not
    percent-encoded (and so confuses URL parsers) is hidden too. The value of a query argument that is not one
    of :data:`QUERY_ARGUMENTS` is hidden as well (redis-py would take ``?password=...``); file paths are shown.
    """
    match = _USERINFO.match(url)
    if match is None:
        at = url.rfind("@")  # no scheme (a typo such as redis//...): hide everything before the last @
        return "***" + _mask_query(url[at:]) if at >= 0 else _mask_query(url)
    userinfo = match.group(2)
    user = userinfo.split(":", 1)[0] if ":" in userinfo else userinfo
    hidden = f"{user}:***" if ":" in userinfo else "***"
    return match.group(1) + hidden + "@" + _mask_query(url[match.end():])


def _mask_query(rest: str) -> str:
    """``rest`` (what follows the credentials) with the value of every unknown query argument replaced by ``***``."""
    where, mark, query = rest.partition("?")
    if not mark:
        return rest
    items = []
    for item in query.split("&"):
        name, eq, _ = item.partition("=")
        items.append(item if not eq or unquote_plus(name) in QUERY_ARGUMENTS else f"{name}=***")
    return where + "?" + "&".join(items)


@attrs.frozen(repr=False)
class RedisTarget:
    """A parsed Redis URL. ``repr`` masks the password; ``tls_options`` holds a ``rediss://`` URL's ``ssl_*``."""

    url: str
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool
    unix_path: str | None = None
    tls_options: TlsOptions = TlsOptions()

    def __repr__(self) -> str:
        return f"RedisTarget({mask_url(self.url)!r})"


def parse_redis_url(url: str) -> RedisTarget:
    """Parse ``redis://``, ``rediss://`` (TLS) or ``unix://`` URLs; ``ConfigError`` for anything else.

    The query may hold ``db`` (wins over the path, as in redis-py) and, for ``rediss://``, ``ssl_ca_certs``,
    ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs`` (``required`` or ``none``) and ``ssl_check_hostname``
    (``true`` / ``false``). Any other argument, and a file that is missing, unreadable or not what its argument
    names, is a ``ConfigError``.
    """
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
    query = _query(parts.query, shown)
    tls_names = [name for name in TLS_ARGUMENTS if name in query]
    if tls_names and parts.scheme != "rediss":
        raise ConfigError(f"Redis URL {shown!r}: {tls_names[0]} is for rediss:// (TLS) URLs only")
    db = None
    if "db" in query:
        try:
            db = int(query["db"])
        except ValueError:
            raise ConfigError(f"Redis URL {shown!r}: db={query['db']!r} is not a number") from None
    if parts.scheme == "unix":
        return RedisTarget(url, "", 0, db or 0, username, password, False, unix_path=parts.path)
    if not parts.hostname:
        raise ConfigError(f"Redis URL {shown!r} has no host")
    path = parts.path.strip("/")
    if db is None:
        try:
            db = int(path) if path else 0
        except ValueError:
            raise ConfigError(f"Redis URL {shown!r}: database {path!r} is not a number") from None
    if parts.scheme == "redis":
        return RedisTarget(url, parts.hostname, port or 6379, db, username, password, False)
    return RedisTarget(url, parts.hostname, port or 6379, db, username, password, True,
                       tls_options=tls_options(query, "Redis URL"))  # fmt: skip


def _query(query: str, shown: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):  # decodes as redis-py's parse_qs does
        if name not in QUERY_ARGUMENTS:
            raise ConfigError(
                f"Redis URL {shown!r}: unknown query argument {name[:40]!r}; the ones livedata understands are "
                f"{', '.join(QUERY_ARGUMENTS)} (see docs/configuration.md, Redis)"
            )
        if name in out:
            raise ConfigError(f"Redis URL {shown!r}: {name} is given more than once")
        if not value:
            raise ConfigError(f"Redis URL {shown!r}: {name} is empty")
        out[name] = value
    return out

