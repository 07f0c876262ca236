"""ACCT_ACTIVITY: order events from the streamer, turned into :class:`~livedata_core.models.Order`.

Every message becomes an order event, even one we cannot read completely: it is then published with what is
known, ``status="unknown"``, the message type in ``broker_status``, and counted in the stream's skip counters.
A message without a readable order id gets ``order_id="unknown-<digest>"``, a short hash of the message, so
two different unreadable messages are two different order events (the runner publishes each order state once).
The same message delivered twice (Schwab repeats ``seq`` after a reconnect) is published once: a repeat is a
message whose whole content (``seq``, account, type and data) equals one of the last ``remember`` messages.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from typing import Any

import orjson

from livedata_core.channels import validate_identifier
from livedata_core.errors import InvalidIdentifier
from livedata_core.models import Order
from livedata_core.plugin_kit.streaming import StreamStats
from livedata_schwab.parsers import order_status as schwab_order_status

__all__ = ["ActivityParser", "EVENTS", "SCHWAB_STATUSES", "decode_number", "message_digest", "status_for_word"]

# message type -> (event name, the Schwab order status it implies, or None when the message alone does not say).
# The implied word goes through the same mapping as a "Status" word in the data (see status_for_word).
EVENTS: dict[str, tuple[str, str | None]] = {
    "OrderEntryRequest": ("entry_requested", "NEW"),
    "OrderCreated": ("created", "NEW"),
    "OrderAccepted": ("accepted", "ACCEPTED"),  # accepted by Schwab, not yet working: pending, as in REST
    "OrderMonitorCreated": ("monitor_created", None),
    "OrderMonitorUpdated": ("monitor_updated", None),
    "OrderMonitorCompleted": ("monitor_completed", None),
    "ExecutionRequested": ("execution_requested", None),
    "ExecutionRequestCreated": ("execution_request_created", None),
    "ExecutionRequestCompleted": ("execution_request_completed", None),
    "ExecutionCreated": ("execution_created", None),
    "OrderFillCompleted": ("fill", None),  # filled or partially filled: decided by LeavesQuantity
    "CancelAccepted": ("cancel_accepted", "PENDING_CANCEL"),
    "OrderUROutCompleted": ("canceled", "CANCELED"),  # "UR out": the cancel is confirmed
}

# Schwab's order status enum (Trader API ``Order.status``). The stream's "Status" words are mapped with the
# Schwab REST plugin's own mapping (livedata_schwab.parsers.order_status), so both brokers publish the same
# status for the same Schwab word on orders:<account>.
SCHWAB_STATUSES = (
    "AWAITING_PARENT_ORDER", "AWAITING_CONDITION", "AWAITING_STOP_CONDITION", "AWAITING_MANUAL_REVIEW",
    "ACCEPTED", "AWAITING_UR_OUT", "PENDING_ACTIVATION", "QUEUED", "WORKING", "REJECTED", "PENDING_CANCEL",
    "CANCELED", "PENDING_REPLACE", "REPLACED", "FILLED", "EXPIRED", "NEW", "AWAITING_RELEASE_TIME",
    "PENDING_ACKNOWLEDGEMENT", "PENDING_RECALL", "UNKNOWN",
)  # fmt: skip
# Words seen only on the streamer (Schwabdev's OrderAccepted capture has "Status": "Open"), and a spelling.
STREAM_STATUSES = {"OPEN": "open", "CANCELLED": "canceled"}


def _squash(word: str) -> str:
    """``Pending Replace``, ``PendingReplace`` and ``PENDING_REPLACE`` alike: upper-case letters only."""
    return "".join(c for c in word.upper() if "A" <= c <= "Z")


_SCHWAB_BY_SQUASHED = {_squash(w): w for w in SCHWAB_STATUSES}


def status_for_word(word: Any, filled_quantity: float | None = None) -> str | None:
    """The :data:`~livedata_core.models.ORDER_STATUSES` value of a Schwab status word, ``None`` if unknown.

    Schwab's enum words (in any case, with spaces or CamelCase) map exactly as the Schwab REST plugin maps
    them, ``open`` with a filled quantity becoming ``partially_filled``; ``Open`` (stream only) is ``open``.
    """
    if type(word) is not str:
        return None
    key = _squash(word)
    schwab = _SCHWAB_BY_SQUASHED.get(key)
    if schwab is not None:
        return schwab_order_status(schwab, filled_quantity)
    status = STREAM_STATUSES.get(key)
    if status == "open" and filled_quantity:
        return "partially_filled"
    return status


# Keys looked up anywhere in the message data (first occurrence wins); the nesting differs per event type.
_WANTED = frozenset(
    {
        "SchwabOrderID", "AccountNumber", "Symbol", "BuySellCode", "OrderTypeCode", "OrderType", "LimitPrice",
        "StopPrice", "Quantity", "CumulativeQuantity", "LeavesQuantity", "AveragePrice", "ExecutionPrice",
        "Status", "TimeInForce", "DateTimeString", "ExecutionID",
    }
)  # fmt: skip
_MAX_DEPTH = 12
_MAX_SCALE = 64


def decode_number(value: Any) -> float | None:
    """Decode Schwab's ``{"lo": "220470000", "signScale": 12}`` numbers (220.47), or plain numbers.

    The value is ``int(lo) / 10 ** (signScale // 2)``, negative when ``signScale`` is odd; a missing ``lo``
    is 0; no ``signScale`` means an integer. Anything that is not a finite float (a ``signScale`` outside
    0..64, a ``lo`` too large for a float, text that is no number) is ``None``.
    """
    try:
        if type(value) is float or type(value) is int:
            number = float(value)
        elif isinstance(value, dict):
            lo = value.get("lo", 0)
            if type(lo) is not str and type(lo) is not int and type(lo) is not float:
                return None
            lo = int(lo)
            scale = value.get("signScale")
            if scale is None:
                number = float(lo)
            else:
                if type(scale) is not int and type(scale) is not str:
                    return None
                scale = int(scale)
                if not 0 <= scale <= _MAX_SCALE:
                    return None
                number = lo / 10 ** (scale // 2)
                if scale % 2:
                    number = -number
        elif isinstance(value, str):
            number = float(value)
        else:
            return None
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _collect(node: Any, found: dict[str, Any], depth: int = 0) -> None:
    if depth > _MAX_DEPTH:
        return
    if isinstance(node, dict):
        for k, v in node.items():
            if k in _WANTED and k not in found:
                found[k] = v
            if isinstance(v, (dict, list)):
                _collect(v, found, depth + 1)
    elif isinstance(node, list):
        for v in node:
            _collect(v, found, depth + 1)


def message_digest(item: Any) -> str:
    """A short stable hash of one ACCT_ACTIVITY item: its whole content except ``key`` (the subscription key
    we chose, which may change between sessions). Identical messages have identical digests."""
    if isinstance(item, dict):
        item = {k: v for k, v in item.items() if k != "key"}
    try:
        blob = orjson.dumps(item, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:  # JSONEncodeError: not JSON-able (never from the wire; from a caller's own dicts)
        try:
            blob = repr(item).encode("utf-8", "backslashreplace")
        except Exception:
            blob = type(item).__name__.encode()
    return hashlib.blake2b(blob, digest_size=8).hexdigest()


def _text(value: Any) -> str | None:
    if type(value) is str:
        return value or None
    if type(value) is int:
        try:
            return str(value)
        except ValueError:  # more digits than Python converts
            return None
    return None


def _account(*candidates: Any) -> str | None:
    """The first candidate that is a valid account identifier (field 1, then the data's AccountNumber)."""
    for value in candidates:
        text = _text(value)
        if text is None:
            continue
        try:
            validate_identifier(text)
        except InvalidIdentifier:
            continue
        return text
    return None


class ActivityParser:
    """Turns ACCT_ACTIVITY content into orders; remembers recent messages to drop repeats after a reconnect.

    One parser should live as long as the broker session, shared by every stream it creates.
    """

    def __init__(self, broker: str, remember: int = 10_000) -> None:
        self.broker = broker
        self._seen: set[str] = set()
        self._order: deque[str] = deque()
        self._remember = remember

    def _is_repeat(self, key: str) -> bool:
        if key in self._seen:
            return True
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > self._remember:
            self._seen.discard(self._order.popleft())
        return False

    # {"data":[{"service":"ACCT_ACTIVITY","timestamp":0,"command":"SUBS","content":[
    #  {"seq":1,"key":"Account Activity","1":"12345678","2":"OrderCreated",
    #   "3":"{\"SchwabOrderID\":\"1000000001\",\"AccountNumber\":\"12345678\",\"BaseEvent\":{\"EventType\":
    #        \"OrderCreated\",\"OrderCreatedEventEquityOrder\":{...\"LimitPrice\":{\"lo\":\"220470000\",
    #        \"signScale\":12},\"OrderLegs\":[{\"Quantity\":{\"lo\":\"1000000\",\"signScale\":12},
    #        \"BuySellCode\":\"Buy\",\"Security\":{\"Symbol\":\"AMD\"}}]}}}"}]}]}
    def apply(self, content: Any, envelope_ts: Any, received_at: int, stats: StreamStats) -> list[Order]:
        """Turn one ``data`` entry's ``content`` into orders. Never drops a message it can recognise as one."""
        if content is None:
            stats.skip("account activity data without content", None)
            return []
        if type(content) is not list:
            content = [content]
        ts = envelope_ts if type(envelope_ts) is int and envelope_ts > 0 else None
        out: list[Order] = []
        for item in content:
            try:
                order = self._one(item, ts, received_at, stats)
            except Exception as exc:  # never lose the event, nor the other items of the frame
                stats.skip("account activity item could not be parsed (published as unknown)",
                           f"{type(exc).__name__}: {exc}")  # fmt: skip
                order = self._unreadable(item, ts, received_at)
            if order is not None:
                out.append(order)
        return out

    def _unreadable(self, item: Any, ts: int | None, received_at: int) -> Order:
        """The order event for an item we could not read at all: ``unknown`` with the raw message."""
        account = mtype = None
        if isinstance(item, dict):
            account = _account(item.get("1"))
            mtype = _text(item.get("2"))
        try:
            raw = repr(item)[:2000]
        except Exception:
            raw = type(item).__name__
        return Order(broker=self.broker, account_id=account or "unknown", order_id=f"unknown-{message_digest(item)}",
                     status="unknown", broker_status=mtype, timestamp=ts, received_at=received_at,
                     extra={"raw": raw})  # fmt: skip

    def _one(self, item: Any, ts: int | None, received_at: int, stats: StreamStats) -> Order | None:
        if not isinstance(item, dict):
            # Still an account event we were sent: publish it as unknown rather than lose it.
            stats.skip("account activity item is not an object (published as unknown)", item)
            return self._unreadable(item, ts, received_at)
        seq = item.get("seq")
        digest = message_digest(item)
        if seq is not None and self._is_repeat(digest):
            stats.skip("account activity repeated (same message after reconnect)", (seq, item.get("2")))
            return None
        mtype = _text(item.get("2"))
        raw = item.get("3")
        complete = True
        data: Any = None
        if isinstance(raw, str) and raw.strip():
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                complete = False
        elif isinstance(raw, dict):
            data = raw
        elif mtype != "OrderEntryRequest":
            complete = False
        found: dict[str, Any] = {}
        if data is not None:
            _collect(data, found)

        account = _account(item.get("1"), found.get("AccountNumber"))
        if account is None:
            account = "unknown"
            complete = False
        order_id = _text(found.get("SchwabOrderID"))
        if order_id is None:
            order_id = f"unknown-{digest}"
            if mtype != "OrderEntryRequest":
                complete = False

        event, implied = EVENTS.get(mtype or "", (None, None))
        if mtype not in EVENTS:
            complete = False
        filled = decode_number(found.get("CumulativeQuantity"))
        remaining = decode_number(found.get("LeavesQuantity")) if "LeavesQuantity" in found else None
        word = found.get("Status")
        status = status_for_word(word, filled)
        if status is None:
            if mtype == "OrderFillCompleted" and remaining is not None:
                status = "filled" if remaining == 0 else "partially_filled"
            elif implied is not None:
                status = status_for_word(implied, filled)
        if status is None:
            status = "unknown"

        side = found.get("BuySellCode")
        order_type = found.get("OrderTypeCode") or found.get("OrderType")
        extra: dict[str, Any] = {}
        if type(seq) is int or type(seq) is str:
            extra["seq"] = seq
        if isinstance(word, str):
            extra["schwab_status"] = word
        if isinstance(found.get("DateTimeString"), str):
            extra["execution_time"] = found["DateTimeString"]
        if not complete:
            extra["raw"] = (raw if isinstance(raw, str) else repr(raw))[:2000]
            stats.skip("account activity incomplete (published as unknown)", (mtype, seq))
            status = "unknown"
        return Order(
            broker=self.broker,
            account_id=account,
            order_id=order_id,
            symbol=_text(found.get("Symbol")),
            side=side.lower() if isinstance(side, str) else None,
            order_type=order_type.lower() if isinstance(order_type, str) else None,
            status=status,
            broker_status=mtype,
            event=event,
            event_id=digest,
            quantity=decode_number(found.get("Quantity")),
            filled_quantity=filled,
            remaining_quantity=remaining,
            price=decode_number(found.get("LimitPrice")),
            stop_price=decode_number(found.get("StopPrice")),
            average_fill_price=decode_number(found.get("AveragePrice")),
            time_in_force=_text(found.get("TimeInForce")),
            timestamp=ts,
            received_at=received_at,
            extra=extra or None,
        )
