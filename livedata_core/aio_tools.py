"""Small asyncio helpers for long-lived tasks that must stop when told and never hang."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


def reraise_if_cancelling() -> None:
    """Raise ``CancelledError`` if the current task is being cancelled.

    Some libraries turn a cancellation into an ordinary exception (a connection error, say). A loop that
    catches ``Exception`` to keep running would then swallow the cancellation and never stop; every such
    ``except Exception`` in a long-lived task calls this first.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def within(awaitable: Awaitable[T], seconds: float | None) -> T:
    """``await awaitable``, raising ``TimeoutError`` after ``seconds``.

    Use this, not ``asyncio.wait_for``: on Python 3.11, ``wait_for`` returns the result and drops a
    cancellation that arrives just as the awaitable finishes, so a task being stopped carries on (seen here:
    a stream subscribing at the moment of SIGTERM kept streaming for seconds). ``asyncio.timeout`` does not.
    """
    async with asyncio.timeout(seconds):
        return await awaitable
