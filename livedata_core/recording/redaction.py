"""Secrets out of every record before it is written: tokens, cookies, API keys, passwords, sessions.

:func:`redact_text` takes a frame or a response body. JSON is walked, and the value of every key that names a
secret (:data:`SECRET_KEYS`, compared without case, ``-`` or ``_``: ``Authorization``, ``access_token``,
``refreshToken``, ``session``, ``Cookie``, ``apiKey``...) becomes :data:`REDACTED`, at any depth, also inside a
string that is itself JSON (IBKR's ``api={"session": ...}``). Text that is not JSON has ``key=value`` and
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

__all__ = ["REDACTED", "SECRET_KEYS", "is_secret_key", "redact_text", "redact_url", "redact_value"]

REDACTED = "[redacted]"

SECRET_KEYS = frozenset({
    "authorization", "proxyauthorization", "token", "accesstoken", "refreshtoken", "idtoken", "bearer",
    "session", "sessionid", "sessiontoken", "cookie", "setcookie", "apikey", "xapikey", "key_secret",
    "password", "passwd", "secret", "clientsecret", "appsecret", "appkey", "credential", "credentials", "code_verifier",
    "codeverifier", "privatekey", "signature", "oauthtoken", "oauthsignature", "accesstokensecret",
})  # fmt: skip
"""Key names whose values are secret, lower case without ``-`` and ``_``."""

# "authorization": "x", token=x, Cookie: x, session=x; the name may carry - or _ between its words.
_NAMES = r"(?:access[-_]?token|refresh[-_]?token|id[-_]?token|api[-_]?key|x[-_]api[-_]key|set[-_]cookie|client[-_]?secret|app[-_]?secret|session[-_]?id|session[-_]?token|proxy[-_]authorization|authorization|token|session|cookie|password|passwd|secret|credentials?|signature)"
_PAIR = re.compile(r"(?i)(\b" + _NAMES + r"\b[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic)\s+)?)([^\"'&\s,;}]+)")
_BEARER = re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9._~+/=-]+)")
# Every secret key and pattern above contains one of these: a frame with none of them (a quote frame) is kept
# without being parsed. One search of the lower-cased text, the alternatives grouped by their first letters so
# that the regex engine tries only where one of those letters is: about 90 us for a 10 KB frame of 100 quotes,
# where a case-insensitive alternation took 3 ms, 17 substring tests 190 us, and parsing the JSON 115 us.
_MAY_HOLD_A_SECRET = re.compile(
    r"a(?:uthor|pi[-_]?key|pp[-_]?key)|token|se(?:ssion|cret)|signature|cookie|credential|p(?:assw|rivate)|"
    r"bearer|verifier"
).search


def _may_hold_a_secret(text: str) -> bool:
    return _MAY_HOLD_A_SECRET(text.lower()) is not None


def is_secret_key(name: str) -> bool:
    """Whether a key of this name holds a secret (``Authorization``, ``refresh_token``, ``apiKey``...)."""
    return name.lower().replace("-", "").replace("_", "") in SECRET_KEYS


def redact_value(value: Any) -> tuple[Any, bool]:
    """``value`` (parsed JSON) with every secret replaced, and whether anything was."""
    if type(value) is dict:
        changed = False
        out = {}
        for k, v in value.items():
            if type(k) is str and is_secret_key(k) and v not in (None, "", REDACTED):
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
