"""The streamer's wire format: request frames, response codes, and the livedata error each code means.

Every client frame is ``{"requests": [...]}``; every request names a ``service``, a ``command``, a unique
``requestid`` and the two ids from ``streamerInfo``. The server answers each request with a ``response``
carrying ``content.code`` (0 is success). Codes 3, 12, 20 and 30 mean the server is ending the connection.
"""

from __future__ import annotations

from typing import Any

from livedata_core.errors import AuthError, BrokerError, ConnectionLimit, StreamError

__all__ = [
    "CODE_NAMES",
    "SEVERING_CODES",
    "StreamerInfo",
    "error_for_code",
    "request",
]

CODE_NAMES = {
    0: "SUCCESS",
    3: "LOGIN_DENIED",
    9: "UNKNOWN_FAILURE",
    11: "SERVICE_NOT_AVAILABLE",
    12: "CLOSE_CONNECTION",
    19: "REACHED_SYMBOL_LIMIT",
    20: "STREAM_CONN_NOT_FOUND",
    21: "BAD_COMMAND_FORMAT",
    22: "FAILED_COMMAND_SUBS",
    23: "FAILED_COMMAND_UNSUBS",
    24: "FAILED_COMMAND_ADD",
    25: "FAILED_COMMAND_VIEW",
    26: "SUCCEEDED_COMMAND_SUBS",
    27: "SUCCEEDED_COMMAND_UNSUBS",
    28: "SUCCEEDED_COMMAND_ADD",
    29: "SUCCEEDED_COMMAND_VIEW",
    30: "STOP_STREAMING",
}
SUCCESS_CODES = frozenset({0, 26, 27, 28, 29})
SEVERING_CODES = frozenset({3, 12, 20, 30})
"""Codes after which the server closes the connection."""

CONNECTION_LIMIT_MESSAGE = (
    "another streamer is already connected for this Schwab login (Schwab allows one streamer connection per "
    "user: stop the other livedata, thinkorswim API script or schwab-py/Schwabdev program using it)"
)


class StreamerInfo:
    """The login identity from ``GET /userPreference`` (``streamerInfo[0]``). Holds no secret."""

    __slots__ = ("url", "customer_id", "correl_id", "channel", "function_id")

    def __init__(self, url: str, customer_id: str, correl_id: str, channel: str, function_id: str) -> None:
        self.url = url
        self.customer_id = customer_id
        self.correl_id = correl_id
        self.channel = channel
        self.function_id = function_id

    @classmethod
    def from_preference(cls, preference: dict[str, Any]) -> "StreamerInfo":
        """Read ``streamerInfo`` from a ``/userPreference`` answer (a one-element list, or a bare object).

        :raises BrokerError: the answer has no usable ``streamerInfo``.
        """
        info = preference.get("streamerInfo") if isinstance(preference, dict) else None
        if isinstance(info, list):
            info = info[0] if info else None
        if not isinstance(info, dict):
            raise BrokerError("Schwab /userPreference has no streamerInfo: is the app enabled for market data?")
        try:
            return cls(
                url=str(info["streamerSocketUrl"]),
                customer_id=str(info["schwabClientCustomerId"]),
                correl_id=str(info["schwabClientCorrelId"]),
                channel=str(info["schwabClientChannel"]),
                function_id=str(info["schwabClientFunctionId"]),
            )
        except KeyError as exc:
            raise BrokerError(f"Schwab /userPreference streamerInfo lacks {exc.args[0]!r}") from None

    def __repr__(self) -> str:
        return f"StreamerInfo(url={self.url!r}, channel={self.channel!r}, function_id={self.function_id!r})"


# {"requests":[{"requestid":"1","service":"ADMIN","command":"LOGIN",
#   "SchwabClientCustomerId":"<customerId>","SchwabClientCorrelId":"<correlId>",
#   "parameters":{"Authorization":"<token>","SchwabClientChannel":"N9","SchwabClientFunctionId":"APIAPP"}}]}
def request(info: StreamerInfo, requestid: str, service: str, command: str, parameters: dict[str, Any]) -> dict:
    """One client frame carrying one request."""
    return {
        "requests": [
            {
                "service": service,
                "command": command,
                "requestid": requestid,
                "SchwabClientCustomerId": info.customer_id,
                "SchwabClientCorrelId": info.correl_id,
                "parameters": parameters,
            }
        ]
    }


def error_for_code(
    code: Any, msg: Any, service: str, command: str, *, connection_limit_retry: float = 60.0
) -> Exception | None:
    """The error a response code means, or ``None`` for success.

    LOGIN_DENIED is an :class:`AuthError` (the runner re-authenticates, which refreshes the token);
    CLOSE_CONNECTION is :class:`ConnectionLimit`; the other connection-ending codes are :class:`StreamError`;
    a failed command on a live connection is a :class:`BrokerError`.
    """
    if type(code) is not int:
        code = None  # a malformed code (a list, text) is an unknown failure, never a crash
    if code in SUCCESS_CODES:
        return None
    text = str(msg)[:200] if msg is not None else ""
    name = CODE_NAMES.get(code, "UNKNOWN_CODE") if code is not None else "UNKNOWN_CODE"
    what = f"{service} {command}"
    if code == 3:
        return AuthError(f"the Schwab streamer denied the login ({text or 'no reason given'})")
    if code == 12:
        return ConnectionLimit(CONNECTION_LIMIT_MESSAGE, retry_after=connection_limit_retry)
    if code == 30:
        return StreamError(f"the Schwab streamer stopped streaming: {text or 'no reason given'}")
    if code == 20 or (service == "ADMIN" and command == "LOGIN"):
        return StreamError(f"{what} failed with code {code} ({name}): {text}")
    error = BrokerError(f"{what} failed with code {code} ({name}): {text}")
    error.code = code  # type: ignore[attr-defined]  # the stream asks a refused multi-symbol ADD again in halves
    return error
