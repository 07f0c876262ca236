"""Live control of a running runner through Redis, from any process or host.

The runner listens on ``live_data:control`` (with the deployment prefix). A command is a JSON object::

    {"id": "...", "command": "subscribe", "broker": "tos", "symbols": ["AAPL"], "reply_to": "live_data:control:reply:..."}

``command`` is ``subscribe``, ``unsubscribe``, ``status`` or ``ping``. The runner answers on ``reply_to``
(which must be under ``live_data:control:reply:``) with ``{"id", "ok", "result"}`` or ``{"id", "ok": false,
"error"}``. :class:`ControlClient` does all of this for Python callers such as Thor; the ``livedata subscribe``,
``unsubscribe`` and ``status`` commands use it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import redis

from .channels import control_channel, status_key, validate_prefix
from .errors import LivedataError, PublishError
from .redis_url import mask_url, parse_redis_url, redis_url_from_env

__all__ = ["COMMANDS", "ControlClient", "ControlError", "NoRunner", "validate_command"]

COMMANDS = frozenset({"subscribe", "unsubscribe", "status", "ping"})
MAX_SYMBOLS = 1000


class ControlError(LivedataError):
    """The runner refused a command; the message is the runner's."""


class NoRunner(LivedataError):
    """No runner is listening on the control channel."""


def reply_prefix(prefix: str = "") -> str:
    return control_channel(prefix) + ":reply:"


def validate_command(data: Any, prefix: str = "") -> dict[str, Any]:
    """Check a decoded command; ``ValueError`` says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("a command must be a JSON object")
    command = data.get("command")
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; expected one of {', '.join(sorted(COMMANDS))}")
    reply_to = data.get("reply_to")
    if reply_to is not None and (not isinstance(reply_to, str) or not reply_to.startswith(reply_prefix(prefix))):
        raise ValueError(f"reply_to must be a channel under {reply_prefix(prefix)}")
    if command in ("subscribe", "unsubscribe"):
        if not isinstance(data.get("broker"), str):
            raise ValueError(f"{command} needs a broker name")
        symbols = data.get("symbols")
        if not isinstance(symbols, list) or not symbols or not all(isinstance(s, str) for s in symbols):
            raise ValueError(f"{command} needs a non-empty list of symbols")
        if len(symbols) > MAX_SYMBOLS:
            raise ValueError(f"at most {MAX_SYMBOLS} symbols per command, was {len(symbols)}")
    return data


class ControlClient:
    """Send commands to a running runner and read its status.

    :param url: Redis URL; default ``LIVEDATA_REDIS_URL`` or ``redis://localhost:6379/0``.
    :param prefix: the runner's deployment prefix.
    """

    def __init__(self, url: str | None = None, prefix: str = "", timeout: float = 10.0) -> None:
        self.url = url or redis_url_from_env()[0]
        parse_redis_url(self.url)
        self.prefix = validate_prefix(prefix)
        self.timeout = timeout
        self._redis = redis.Redis.from_url(self.url, socket_connect_timeout=5, socket_timeout=timeout + 5)

    def __repr__(self) -> str:
        return f"ControlClient({mask_url(self.url)!r})"

    def close(self) -> None:
        self._redis.close()

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, command: dict[str, Any]) -> Any:
        request_id = uuid.uuid4().hex
        reply_to = reply_prefix(self.prefix) + request_id
        command = {**command, "id": request_id, "reply_to": reply_to}
        try:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(reply_to)
            try:
                listeners = self._redis.publish(control_channel(self.prefix), orjson.dumps(command))
                if listeners == 0:
                    raise NoRunner(
                        f"no runner is listening on {control_channel(self.prefix)} at {mask_url(self.url)}; "
                        "is `livedata run` running with the same Redis URL and prefix?"
                    )
                deadline = time.monotonic() + self.timeout
                while time.monotonic() < deadline:
                    message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
                    if message is None or message.get("type") != "message":
                        continue
                    reply = orjson.loads(message["data"])
                    if reply.get("id") != request_id:
                        continue
                    if not reply.get("ok"):
                        raise ControlError(reply.get("error") or "the runner refused the command")
                    return reply.get("result")
                raise ControlError(f"the runner did not answer within {self.timeout:g}s")
            finally:
                pubsub.close()
        except redis.RedisError as exc:
            raise PublishError(f"cannot reach Redis at {mask_url(self.url)}: {exc}") from None

    def subscribe(self, broker: str, symbols: list[str]) -> dict[str, list[str]]:
        """Ask the runner to stream more symbols from ``broker``. Returns ``{"added": [...], "already": [...]}``."""
        return self._request({"command": "subscribe", "broker": broker, "symbols": list(symbols)})

    def unsubscribe(self, broker: str, symbols: list[str]) -> dict[str, list[str]]:
        """Ask the runner to stop streaming symbols. Returns ``{"removed": [...], "not_subscribed": [...]}``."""
        return self._request({"command": "unsubscribe", "broker": broker, "symbols": list(symbols)})

    def status(self) -> dict[str, Any]:
        """The runner's live status (asks the runner; falls back to the last status it stored)."""
        try:
            return self._request({"command": "status"})
        except NoRunner:
            stored = self.stored_status()
            if stored is None:
                raise
            stored["stale"] = True
            return stored

    def stored_status(self) -> dict[str, Any] | None:
        """The status the runner last wrote to ``live_data:status``, or ``None``."""
        try:
            raw = self._redis.get(status_key(self.prefix))
        except redis.RedisError as exc:
            raise PublishError(f"cannot reach Redis at {mask_url(self.url)}: {exc}") from None
        return orjson.loads(raw) if raw else None


