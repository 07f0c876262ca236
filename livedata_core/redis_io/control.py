"""Live control of a running runner through Redis, from any process or host.

The runner listens on ``live_data:control`` (with the deployment prefix). A command is a JSON object::

    {"id": "...", "command": "subscribe", "broker": "tos", "symbols": ["AAPL"], "reply_to": "live_data:control:reply:..."}

``command`` is ``subscribe``, ``unsubscribe``, ``chain``, ``unchain``, ``status`` or ``ping``. ``subscribe`` and
``unsubscribe`` take an optional ``kind`` (``quotes``, the default, ``bars`` or ``depth``); ``chain`` takes
``underlying`` and optional ``expiration`` (``"2026-12-18"``) and ``strikes`` (1 to 500) and subscribes the option
contracts the broker names for them; ``unchain`` takes ``underlying``. ``broker`` is the name of a running
instance (its ``[brokers.NAME]`` table: ``tos_ira``, or ``tos`` in a one-instance setup). The runner answers on ``reply_to``
(which must be under ``live_data:control:reply:``) with ``{"id", "ok", "result"}`` or ``{"id", "ok": false,
"error"}``. :class:`ControlClient` does all of this for Python callers such as Thor; the ``livedata subscribe``,
``unsubscribe`` and ``status`` commands use it.

Every field is bounded, and a refusal quotes at most the first few characters of a value: a command is at most
:data:`MAX_COMMAND_BYTES` (a longer one is not even read), ``id`` a string of at most :data:`MAX_ID_LENGTH`
characters or a whole number (echoed back only then), ``broker`` at most 32 characters, each symbol at most
64 (:data:`~livedata_core.channels.MAX_IDENTIFIER_LENGTH`), at most :data:`MAX_SYMBOLS` symbols, ``reply_to``
at most 64 characters after the reply prefix, and no other keys. Anyone who can publish on the control channel
can use these commands: see "Who can do what" in docs/channels.md.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import redis

from ..channels import MAX_IDENTIFIER_LENGTH, control_channel, status_key, validate_prefix
from ..errors import LivedataError, PublishError
from .topology import RedisTopology, as_topology, sync_client, sync_pubsub_client
from .url import parse_redis_url

__all__ = [
    "COMMANDS",
    "MAX_COMMAND_BYTES",
    "MAX_ID_LENGTH",
    "MAX_SYMBOLS",
    "ControlClient",
    "ControlError",
    "NoRunner",
    "command_id",
    "reply_channel",
    "validate_command",
]

COMMANDS = frozenset({"subscribe", "unsubscribe", "chain", "unchain", "status", "ping"})
COMMAND_KEYS = frozenset({"id", "command", "broker", "symbols", "kind", "underlying", "expiration", "strikes", "reply_to"})
KINDS = ("quotes", "bars", "depth")  # as livedata_core.plugin_kit.broker.KINDS (not imported: this module stays light)
MAX_SYMBOLS = 1000
"""Symbols in one command."""
MAX_ID_LENGTH = 64
"""Characters of a string ``id``, and of a ``reply_to`` after the reply prefix."""
MAX_BROKER_LENGTH = 32
"""Characters of a broker name (as :class:`~livedata_core.plugin_kit.broker.BrokerInfo` allows)."""
MAX_COMMAND_BYTES = 256 * 1024
"""The longest command the runner reads: 1,000 symbols of 64 characters need about 70 KB (four times that
in the longest UTF-8); anything longer is refused before it is parsed."""
_INT64 = 2**63 - 1


class ControlError(LivedataError):
    """The runner refused a command (the message is the runner's), or the client did before sending it because
    the runner would (a field out of bounds)."""


class NoRunner(LivedataError):
    """No runner is listening on the control channel."""


def reply_prefix(prefix: str = "") -> str:
    return control_channel(prefix) + ":reply:"


def shown(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, saying how long a cut string was: refusals quote no more."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return text[:limit] + "..." + size


def command_id(data: Any) -> str | int | None:
    """The command's ``id`` if it is one that may be echoed back (a short string or a whole number), else ``None``."""
    value = data.get("id") if isinstance(data, dict) else None
    if isinstance(value, str) and len(value) <= MAX_ID_LENGTH:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and -_INT64 - 1 <= value <= _INT64:
        return value
    return None


def reply_channel(data: Any, prefix: str = "") -> str | None:
    """The command's ``reply_to`` if it is a channel the runner may answer on, else ``None``."""
    value = data.get("reply_to") if isinstance(data, dict) else None
    start = reply_prefix(prefix)
    if isinstance(value, str) and value.startswith(start) and 0 < len(value) - len(start) <= MAX_ID_LENGTH:
        return value
    return None


def validate_command(data: Any, prefix: str = "") -> dict[str, Any]:
    """Check a decoded command, every field within its bounds; ``ValueError`` says what is wrong, quoting at
    most the first 40 characters of a value."""
    if not isinstance(data, dict):
        raise ValueError("a command must be a JSON object")
    unknown = sorted(set(data) - COMMAND_KEYS)
    if unknown:
        more = " and more" if len(unknown) > 3 else ""
        raise ValueError(f"unknown key(s) {', '.join(shown(k) for k in unknown[:3])}{more}; "
                         f"allowed: {', '.join(sorted(COMMAND_KEYS))}")  # fmt: skip
    if data.get("id") is not None and command_id(data) is None:
        raise ValueError(f"id must be a string of at most {MAX_ID_LENGTH} characters or a whole number, "
                         f"was {shown(data['id'])}")  # fmt: skip
    command = data.get("command")
    if command not in COMMANDS:
        raise ValueError(f"unknown command {shown(command)}; expected one of {', '.join(sorted(COMMANDS))}")
    if data.get("reply_to") is not None and reply_channel(data, prefix) is None:
        raise ValueError(f"reply_to must be a channel under {reply_prefix(prefix)} with at most {MAX_ID_LENGTH} "
                         f"more characters, was {shown(data['reply_to'])}")  # fmt: skip
    if command in ("subscribe", "unsubscribe", "chain", "unchain"):
        broker = data.get("broker")
        if not isinstance(broker, str) or not 0 < len(broker) <= MAX_BROKER_LENGTH:
            raise ValueError(f"broker must be a broker name of at most {MAX_BROKER_LENGTH} characters, "
                             f"was {shown(broker)}")  # fmt: skip
    if command in ("chain", "unchain"):
        underlying = data.get("underlying")
        if not isinstance(underlying, str) or not 0 < len(underlying) <= MAX_IDENTIFIER_LENGTH:
            raise ValueError(f"{command} needs an underlying symbol of at most {MAX_IDENTIFIER_LENGTH} characters, "
                             f"was {shown(underlying)}")  # fmt: skip
        expiration = data.get("expiration")
        if expiration is not None and not (isinstance(expiration, str) and len(expiration) == 10):
            raise ValueError(f"expiration must be a date such as 2026-12-18, was {shown(expiration)}")
        strikes = data.get("strikes")
        if strikes is not None and (isinstance(strikes, bool) or not isinstance(strikes, int) or not 1 <= strikes <= 500):
            raise ValueError(f"strikes must be a whole number from 1 to 500, was {shown(strikes)}")
    if command in ("subscribe", "unsubscribe"):
        kind = data.get("kind", "quotes")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, was {shown(kind)}")
        symbols = data.get("symbols")
        if not isinstance(symbols, list) or not symbols:
            raise ValueError(f"{command} needs a non-empty list of symbols")
        if len(symbols) > MAX_SYMBOLS:
            raise ValueError(f"at most {MAX_SYMBOLS} symbols per command, was {len(symbols)}")
        for i, symbol in enumerate(symbols):
            if not isinstance(symbol, str):
                raise ValueError(f"symbols[{i}] must be a string, was {shown(symbol)}")
            if len(symbol) > MAX_IDENTIFIER_LENGTH:
                raise ValueError(f"symbols[{i}] is {len(symbol)} characters long; a symbol has at most "
                                 f"{MAX_IDENTIFIER_LENGTH}: {shown(symbol)}")  # fmt: skip
    return data


class ControlClient:
    """Send commands to a running runner and read its status.

    :param url: Redis URL, or a :class:`~livedata_core.redis_io.topology.RedisTopology` (with sentinels: the
        current master); default ``LIVEDATA_REDIS_URL`` or ``redis://localhost:6379/0``.
    :param prefix: the runner's deployment prefix.
    """

    def __init__(self, url: str | RedisTopology | None = None, prefix: str = "", timeout: float = 10.0) -> None:
        self.topology = as_topology(url)
        self.url = self.topology.url
        self.prefix = validate_prefix(prefix)
        self.timeout = timeout
        self._redis = sync_client(self.topology, socket_connect_timeout=5, socket_timeout=timeout + 5)
        # On a cluster, commands and replies go through one node (see redis_topology.sync_pubsub_client).
        self._pubsub_redis = (sync_pubsub_client(self.topology, socket_connect_timeout=5, socket_timeout=timeout + 5)
                              if self.topology.cluster else self._redis)  # fmt: skip

    def __repr__(self) -> str:
        return f"ControlClient({self.topology.describe()!r})"

    def close(self) -> None:
        self._redis.close()
        if self._pubsub_redis is not self._redis:
            self._pubsub_redis.close()

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, command: dict[str, Any]) -> Any:
        request_id = uuid.uuid4().hex
        reply_to = reply_prefix(self.prefix) + request_id
        command = {**command, "id": request_id, "reply_to": reply_to}
        try:
            validate_command(command, self.prefix)
        except ValueError as exc:
            raise ControlError(str(exc)) from None
        raw = orjson.dumps(command)
        if len(raw) > MAX_COMMAND_BYTES:
            raise ControlError(f"the command is {len(raw)} bytes; the runner reads at most {MAX_COMMAND_BYTES}")
        try:
            pubsub = self._pubsub_redis.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(reply_to)
            try:
                listeners = self._pubsub_redis.publish(control_channel(self.prefix), raw)
                if listeners == 0:
                    raise NoRunner(
                        f"no runner is listening on {control_channel(self.prefix)} at {self.topology.describe()}; "
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
        except redis.exceptions.NoPermissionError as exc:
            user = parse_redis_url(self.url).username
            who = f"the Redis user {user!r}" if user else "this Redis user"
            raise ControlError(f"Redis refused the command: {who} may not send control commands (NOPERM {exc}); "
                               "connect as an operator (docs/operations.md#access-control)") from None
        except redis.RedisError as exc:
            raise PublishError(f"cannot reach Redis at {self.topology.describe()}: {exc}") from None

    def subscribe(self, broker: str, symbols: list[str], kind: str = "quotes") -> dict[str, list[str]]:
        """Ask the runner to stream more symbols from the instance named ``broker`` (``"tos_ira"``; the plugin's name
        in a one-instance setup): their quotes, or with ``kind`` their ``"bars"`` or ``"depth"``. Returns
        ``{"added": [...], "already": [...]}``."""
        command: dict[str, Any] = {"command": "subscribe", "broker": broker, "symbols": list(symbols)}
        if kind != "quotes":
            command["kind"] = kind  # left out for quotes: a runner from before kinds takes the command as it was
        return self._request(command)

    def unsubscribe(self, broker: str, symbols: list[str], kind: str = "quotes") -> dict[str, list[str]]:
        """Ask the runner to stop streaming symbols (of ``kind``) from the instance named ``broker``. Returns
        ``{"removed": [...], "not_subscribed": [...]}``."""
        command: dict[str, Any] = {"command": "unsubscribe", "broker": broker, "symbols": list(symbols)}
        if kind != "quotes":
            command["kind"] = kind
        return self._request(command)

    def chain(self, broker: str, underlying: str, expiration: str | None = None, strikes: int | None = None) -> dict[str, Any]:
        """Ask the runner to subscribe the quotes of an option chain of the instance named ``broker``: the contracts of
        ``underlying`` (one ``expiration``, an ISO date, or every one; ``strikes`` around the money). Returns
        ``{"underlying", "contracts": [...], "added": [...], "already": [...]}``."""
        command: dict[str, Any] = {"command": "chain", "broker": broker, "underlying": underlying}
        if expiration is not None:
            command["expiration"] = expiration
        if strikes is not None:
            command["strikes"] = strikes
        return self._request(command)

    def unchain(self, broker: str, underlying: str) -> dict[str, Any]:
        """Ask the runner to unsubscribe an option chain's contracts. Returns ``{"underlying", "removed": [...],
        "not_subscribed": [...]}``."""
        return self._request({"command": "unchain", "broker": broker, "underlying": underlying})

    def status(self) -> dict[str, Any]:
        """The runner's live status (asks the runner; falls back to the last status it stored): ``brokers`` has one
        row per instance, keyed by its name, with its ``plugin``."""
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
            raise PublishError(f"cannot reach Redis at {self.topology.describe()}: {exc}") from None
        return orjson.loads(raw) if raw else None


