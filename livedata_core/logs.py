"""Logging for the CLI: quiet by default, ``key=value`` lines, and secrets masked on the way out."""

from __future__ import annotations

import json
import logging
import os
import re
import sys

__all__ = ["TRANSPORT_LOGGERS", "SecretFilter", "setup_logging"]

TRANSPORT_LOGGERS = ("httpx", "httpcore", "websockets", "asyncio", "hpack", "urllib3")
"""Loggers of the libraries under the plugins; below ``-vvv`` they only pass warnings and errors."""

# Defence in depth: plugins must never log secrets, but if one slips into a message it is masked here.
_SECRET_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)((?:access|refresh|id)_?token[\"']?\s*[:=]\s*[\"']?)[^\s\"',}&]+"),
    re.compile(r"(?i)((?:client_secret|app_secret|password|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}&]+"),
    re.compile(r"((?:rediss?|unix)://[^:/@\s]*:)\S+(@)"),  # up to the last @: a password may hold an @
    re.compile(r"([?&]code=)[^&\s\"']+"),  # OAuth authorization codes in callback URLs
    re.compile(r"(?i)((?:set-)?cookie[\"']?\s*[:=]\s*[\"']?)[^\n\"']+"),
    re.compile(r"(?i)([\"']session[\"']\s*:\s*[\"'])[^\"']+"),
    # Headers as httpcore logs them at -vvv: (b'Set-Cookie', b'x-sess-uuid=...'), (b'Authorization', b'Basic ...')
    re.compile(r"(?i)(b?[\"'](?:set-cookie|cookie|authorization|proxy-authorization|x-api-key)[\"'],\s*b?[\"'])[^\"']+"),
]


def mask_secrets(text: str) -> str:
    """``text`` with anything that looks like a token or password replaced by ``***``."""
    for pat in _SECRET_PATTERNS:
        text = pat.sub(lambda m: m.group(1) + "***" + (m.group(2) if m.lastindex and m.lastindex >= 2 else ""), text)
    return text


class SecretFilter(logging.Filter):
    """Mask tokens and passwords in every record that passes through (for an application's own handlers; the
    CLI's formatters mask their whole output, tracebacks included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return mask_secrets(base)  # tracebacks too: exception text can quote a URL or a header


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask_secrets(record.getMessage()),
        }
        if record.exc_info:
            data["exception"] = mask_secrets(self.formatException(record.exc_info))
        # Masked before encoding: JSON escapes the quotes the token patterns look for.
        return json.dumps(data)


def setup_logging(verbosity: int = 0, json_lines: bool | None = None) -> None:
    """Warnings only by default; ``-v`` adds what the runner does, ``-vv`` debug output. The transport
    libraries (:data:`TRANSPORT_LOGGERS`), which log raw frames and headers at debug level, stay at WARNING
    unless ``-vvv``.

    ``json_lines`` (default: ``LIVEDATA_LOG_FORMAT=json``) writes one JSON object per line for log collectors.
    """
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    if json_lines is None:
        json_lines = os.environ.get("LIVEDATA_LOG_FORMAT", "").lower() == "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if json_lines else _Formatter())  # both mask secrets in what they write
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if verbosity < 3:
        for noisy in TRANSPORT_LOGGERS:
            logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
