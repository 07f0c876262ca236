"""Run a :class:`~livedata_core.runner.Runner` for the length of a block."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["running"]


@contextlib.asynccontextmanager
async def running(runner: Any, stop_timeout: float = 10.0) -> AsyncIterator[Any]:
    """Start ``runner.run()`` in a task, wait until it is publishing, yield the runner; stop it on exit and
    wait (at most ``stop_timeout`` seconds) for it to flush and close, re-raising what ``run()`` raised::

        async with running(Runner(config, token_store=MemoryTokenStore())) as runner:
            await runner.subscribe("acme", ["AAPL"])
    """
    task = asyncio.create_task(runner.run(), name="livedata-test-runner")
    ready = asyncio.ensure_future(runner.ready.wait())
    try:
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # run() failed at start (Redis unreachable...): raise that
        yield runner
    finally:
        ready.cancel()
        runner.stop()
        await asyncio.wait_for(task, stop_timeout)
