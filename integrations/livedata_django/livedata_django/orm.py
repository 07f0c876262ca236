"""Calling Django's ORM from code that may be running inside an event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import connections

__all__ = ["call_blocking"]

T = TypeVar("T")


def call_blocking(func: Callable[..., T], *args: Any) -> T:
    """``func(*args)``, in a worker thread when this thread runs an event loop, and wait for it.

    livedata's token stores are synchronous, and the runner calls them from inside its event loop, where Django
    refuses ORM calls (``SynchronousOnlyOperation``). Outside a loop the call is made here, on this thread's
    connection. Inside one it is made on a short-lived thread whose database connections are closed when it
    ends, so a long-running runner leaves no connection behind. The loop waits for it: token reads and writes are
    rare and take milliseconds.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return func(*args)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = func(*args)
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc
        finally:
            connections.close_all()  # only this thread's connections

    worker = threading.Thread(target=work, name="livedata-django-orm", daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
