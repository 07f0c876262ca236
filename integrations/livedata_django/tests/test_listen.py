"""``livedata_listen`` calls the handlers of Thor's apps (SchwabLiveData/livedata_handlers.py): a published position
updates a row, also after a Redis restart, and a restarted listener catches up on orders from the stream."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.management import call_command

from livedata_core import live_data_redis
from livedata_django.listen import registry
from livedata_django.management.commands.livedata_listen import Command as ListenCommand
from SchwabLiveData import livedata_handlers
from SchwabLiveData.models import OrderEvent, Position

ACCOUNT = "12345678"


@pytest.fixture
def redis_for_listen(private_redis, settings):
    settings.LIVEDATA = {**settings.LIVEDATA, "CONFIG": {"redis": {"url": private_redis.url}}}
    live_data_redis.configure(private_redis.url)
    livedata_handlers.calls.clear()
    yield private_redis
    live_data_redis.configure()


class Listening:
    """``manage.py livedata_listen`` on a thread of its own."""

    def __init__(self):
        self.command = ListenCommand()
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            call_command(self.command)
        except BaseException as exc:
            self.error = exc

    @property
    def listener(self):
        return self.command.listener

    def __enter__(self):
        self.thread.start()
        wait_until(lambda: getattr(self.command, "task", None) is not None and self.listener.subscribed.is_set(),
                   what=lambda: f"the listener to subscribe ({self.error!r})")  # fmt: skip
        return self

    def __exit__(self, *exc):
        self.command.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "livedata_listen did not stop"
        assert self.error is None, self.error


def wait_until(predicate, timeout=10.0, what=lambda: "a condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what()}")


def quantity(symbol):
    row = Position.objects.filter(account_id=ACCOUNT, symbol=symbol).first()
    return None if row is None else row.quantity


def position(symbol, qty):
    live_data_redis.publish_position(ACCOUNT, {"broker": "schwab", "symbol": symbol, "quantity": qty})


def order(order_id, status):
    live_data_redis.publish_order(ACCOUNT, {"broker": "tos", "order_id": order_id, "status": status})


def test_a_handler_updates_a_row_and_survives_a_redis_restart(database, redis_for_listen):
    with Listening() as listening:
        position("AAPL", 10)
        wait_until(lambda: quantity("AAPL") == 10, what=lambda: "the AAPL row")

        redis_for_listen.kill()
        time.sleep(0.3)  # the listener notices and waits to reconnect
        redis_for_listen.start()
        position("MSFT", 3)  # published before the listener is back: it is in the book, and caught up from there
        wait_until(lambda: listening.listener.reconnects >= 1 and listening.listener.subscribed.is_set())
        wait_until(lambda: quantity("MSFT") == 3, what=lambda: "the MSFT row after the restart")

        position("AAPL", 12)
        wait_until(lambda: quantity("AAPL") == 12, what=lambda: "the AAPL row updated after the restart")
        position("AAPL", 0)  # closed: the handler deletes the row
        wait_until(lambda: quantity("AAPL") is None, what=lambda: "the AAPL row deleted")
        assert listening.listener.failed == 0


def test_a_restarted_listener_catches_up_on_orders_from_the_stream(database, redis_for_listen):
    stream = f"live_data:stream:orders:{ACCOUNT}"
    with Listening() as listening:
        order("1001", "open")
        wait_until(lambda: OrderEvent.objects.filter(order_id="1001").exists())
        # The row is written before the checkpoint: stop only once the listener has remembered its place.
        wait_until(lambda: stream in listening.listener._seen, what=lambda: "the checkpoint of the orders stream")
    order("1002", "open")  # while nobody listens
    order("1001", "filled")
    with Listening():
        wait_until(lambda: OrderEvent.objects.count() == 3, what=lambda: f"3 order events, have {OrderEvent.objects.count()}")
        order("1003", "open")
        wait_until(lambda: OrderEvent.objects.count() == 4)
    orders = [what for kind, what in livedata_handlers.calls if kind == "orders"]
    assert orders == ["1001", "1002", "1001", "1003"]  # each once: the checkpoint follows live messages too


def test_a_failing_handler_is_logged_and_the_next_message_is_handled(database, redis_for_listen, caplog):
    def boom(message):
        raise RuntimeError("a bug in a handler")

    registry.on("positions:*")(boom)
    try:
        with Listening() as listening:
            position("AAPL", 5)
            wait_until(lambda: quantity("AAPL") == 5)  # the other handler of the message still ran
            wait_until(lambda: listening.listener.failed == 1)
            position("AAPL", 6)
            wait_until(lambda: quantity("AAPL") == 6)
    finally:
        registry.handlers[:] = [h for h in registry.handlers if h.func is not boom]
    assert listening.listener.failed == 2
    assert "a bug in a handler" in caplog.text and "boom" in caplog.text
