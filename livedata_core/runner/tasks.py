"""Small asyncio helpers the runner's long-lived tasks share."""

from __future__ import annotations

import asyncio


def reraise_if_cancelling() -> None:
    """Raise ``CancelledError`` if the current task is being cancelled.

    Some libraries turn a cancellation into an ordinary exception (a connection error, say). A loop that
    catches ``Exception`` to keep running would then swallow the cancellation and never stop; every such
    ``except Exception`` in the runner calls this first.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
