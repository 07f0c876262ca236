"""Secrets out of every record before it is written: tokens, cookies, API keys, passwords, sessions.

:func:`redact_text` takes a frame or a response body. JSON is walked, and the value of every key that names a
secret (:func:`is_secret_key`: ending with a word of :data:`SECRET_ENDINGS`, case, ``-`` and ``_`` aside:
``Authorization``, ``access_token``, ``refreshToken``, ``session``, ``Cookie``, ``apiKey``, ``app_key``...)
becomes :data:`REDACTED`, at any depth, also inside a string that is itself JSON (IBKR's ``api={"session": ...}``). Text that is not JSON has ``key=value`` and
``key: value`` pairs of those names, and ``Bearer`` tokens, masked. A frame without a secret is kept exactly as
it was (byte for byte), so a replay parses what the broker sent. :func:`redact_url` masks query parameters.

A plugin whose protocol hides secrets elsewhere adds its own step with the ``redact_recording`` hook
(:mod:`livedata_core.plugin_kit.hookspecs`); it runs after these, in the recorder's thread.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

__all__ = [
    "REDACTED", "SECRET_ENDINGS", "SECRET_NAMES", "NOT_SECRET", "is_secret_key", "redact_text", "redact_url",
    "redact_value",
]  # fmt: skip

REDACTED = "[redacted]"

# The one list of secret names: the JSON walk (is_secret_key), the text pattern (_PAIR) and the fast scan
# (_MAY_HOLD_A_SECRET) are all made from these three. A "_" marks where words may meet: in a frame they may be
# written together, or with "-" or "_" (client_id, clientId, client-id).
SECRET_ENDINGS = (
    "token", "secret", "key", "session", "session_id", "password", "passwd", "verifier", "cookie", "authorization",
    "credential", "credentials", "signature", "jwt", "bearer",
)  # fmt: skip
"""A key whose name ends with one of these words (case, ``-`` and ``_`` aside) holds a secret: ``Authorization``,
``access_token``, ``authToken``, ``ssoToken``, ``live_session_token``, ``app_key``, ``consumer_key``, ``apiKey``,
``private_key``, ``client_secret``, ``code_verifier``, ``Set-Cookie``, ``session``, ``password``, ``jwt``..."""
SECRET_NAMES = ("client_id",)
"""Names of a secret that end otherwise: ``client_id`` (Schwab's app key, in its OAuth requests)."""
NOT_SECRET = ("key",)
"""Names ending with a secret word that are none: ``key`` is the symbol of a Schwab streamer item and the type of
an IBKR ledger row."""


def _normal(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


_ENDINGS = tuple(_normal(w) for w in SECRET_ENDINGS)
_NAMES = frozenset(_normal(w) for w in SECRET_NAMES)
_NOT_SECRET = frozenset(_normal(w) for w in NOT_SECRET)


def _word(w: str) -> str:
    return w.replace("_", "[-_]?")


def _ending(w: str) -> str:
    """The pattern of a name ending with ``w``: a word that is a secret alone, or one that needs words before it."""
    return "[a-z0-9][-_]?" + _word(w) if _normal(w) in _NOT_SECRET else _word(w)


# "authorization": "x", token=x, Cookie: x, app_key=x, appKey: x; the name may carry - or _ between its words
# (the words before a secret ending at most 40 characters: no backtracking over a long run of them).
_NAME = (
    r"\b(?:[\w-]{0,40}?(?:" + "|".join(_ending(w) for w in sorted(SECRET_ENDINGS, key=len, reverse=True)) + ")"
    + "".join("|" + _word(w) for w in SECRET_NAMES) + r")\b"
)
_PAIR = re.compile(r"(?i)(" + _NAME + r"[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic)\s+)?)([^\"'&\s,;}]+)")
_BEARER = re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9._~+/=-]+)")


def _scan_pattern() -> str:
    """One alternative per word that no shorter one already finds (``session`` finds ``session_id``), grouped by
    first letter so that the regex engine tries only where one of those letters is (Python's ``re`` skips ahead
    to such a letter only when every alternative starts with one: a ``key`` needs a name letter before it, which
    is checked behind its ``k``)."""
    words = sorted({*SECRET_ENDINGS, *SECRET_NAMES}, key=len)
    kept: list[str] = []
    for w in words:
        if not any(_normal(k) in _normal(w) and _normal(k) not in _NOT_SECRET for k in kept):
            kept.append(w)
    by_letter: dict[str, list[str]] = {}
    for w in sorted(kept):
        rest = _word(w[1:])
        if _normal(w) in _NOT_SECRET:
            rest = f"(?<=[a-z0-9_-]{w[0]})" + rest
        by_letter.setdefault(w[0], []).append(rest)
    return "|".join(f"{c}(?:{'|'.join(rests)})" for c, rests in sorted(by_letter.items()))


# A frame in which this finds nothing (a quote frame) holds no secret name and is kept without being parsed:
# one search of the lower-cased text.
_MAY_HOLD_A_SECRET = re.compile(_scan_pattern()).search


def _may_hold_a_secret(text: str) -> bool:
    return _MAY_HOLD_A_SECRET(text.lower()) is not None


# Schwab's order "session" is NORMAL, AM, PM or SEAMLESS: an upper-case word is no secret session (those are long
# random strings), and kept so that a replay publishes the order as it came.
_ENUM = re.compile(r"[A-Z][A-Z_]{0,11}").fullmatch


def is_secret_key(name: str) -> bool:
    """Whether a key of this name holds a secret: it ends with one of :data:`SECRET_ENDINGS` or is one of
    :data:`SECRET_NAMES` (case, ``-`` and ``_`` aside), and is not one of :data:`NOT_SECRET`."""
    n = _normal(name)
    return (n.endswith(_ENDINGS) or n in _NAMES) and n not in _NOT_SECRET


def _keeps(name: str, value: Any) -> bool:
    """A value of a secret key that is none: empty, already redacted, a session that is an enum (``NORMAL``)."""
    if value is None or value == "" or value == REDACTED or type(value) is bool:
        return True
    return type(value) is str and _normal(name).endswith("session") and _ENUM(value) is not None


def redact_value(value: Any) -> tuple[Any, bool]:
    """``value`` (parsed JSON) with every secret replaced, and whether anything was."""
    if type(value) is dict:
        changed = False
        out = {}
        for k, v in value.items():
            if type(k) is str and is_secret_key(k) and not _keeps(k, v):
                out[k] = REDACTED
                changed = True
            else:
                out[k], c = redact_value(v)
                changed = changed or c
        return (out, True) if changed else (value, False)
    if type(value) is list:
        items = [redact_value(v) for v in value]
        if any(c for _, c in items):
            return [v for v, _ in items], True
        return value, False
    if type(value) is str and value and value[0] in "{[" and len(value) > 1:
        try:
            inner = orjson.loads(value)
        except orjson.JSONDecodeError:
            return _redact_plain(value)
        inner, changed = redact_value(inner)
        return (orjson.dumps(inner).decode(), True) if changed else (value, False)
    if type(value) is str and ("=" in value or ":" in value or " " in value):
        return _redact_plain(value)
    return value, False


def _redact_plain(text: str) -> tuple[str, bool]:
    out = _PAIR.sub(lambda m: m.group(1) + REDACTED, text)
    out = _BEARER.sub(lambda m: m.group(1) + REDACTED, out)
    return out, out != text


def redact_text(text: str) -> str:
    """A frame or a body with its secrets replaced by :data:`REDACTED`; unchanged (the same object) if it had none."""
    if not _may_hold_a_secret(text):
        return text
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            parsed = None
        else:
            parsed, changed = redact_value(parsed)
            return orjson.dumps(parsed).decode() if changed else text
    out, _ = _redact_plain(text)
    # A JSON prefix (IBKR's "smd+265598+{...}") may hide JSON after the text
    if "{" in out:
        head, brace, rest = out.partition("{")
        try:
            parsed = orjson.loads(brace + rest)
        except orjson.JSONDecodeError:
            return out
        parsed, changed = redact_value(parsed)
        return head + orjson.dumps(parsed).decode() if changed else out
    return out


def redact_url(url: str) -> str:
    """``url`` without a password in it, and with the values of secret query parameters replaced."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_key(k) for k, _ in pairs):
            query = urlencode([(k, REDACTED if is_secret_key(k) else v) for k, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
