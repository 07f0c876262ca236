"""Which asyncio event loop ``livedata run`` and ``livedata replay`` run on: the standard library's, or uvloop's.

uvloop (``pip install 'livedata-core[uvloop]'``, Linux and macOS) runs the loop's own work and the sockets'
reads and writes in C. At a steady rate a frame's fixed costs are a large part of the runner's time, and there it
took about 12% off the CPU a quote at 50k quotes/s; at 10k/s and at saturation the difference was within noise
(docs/operations.md#speed-one-runner-one-core).
``event_loop = "auto"`` (the default) takes it when it is installed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..errors import ConfigError

__all__ = ["EVENT_LOOPS", "loop_factory", "run", "running_loop_name"]

EVENT_LOOPS = ("auto", "asyncio", "uvloop")
"""The values of the ``event_loop`` setting (``LIVEDATA_EVENT_LOOP``, ``--event-loop``)."""

MIN_UVLOOP = (0, 19)  # the extra's floor; older releases fail at shutdown on newer Pythons (uvloop #535, #570)

log = logging.getLogger("livedata.runner.event_loop")

T = TypeVar("T")


def loop_factory(choice: str) -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    """``(factory, name)`` for ``choice``: the factory for :class:`asyncio.Runner` (``None``: the standard
    library's loop) and the loop's name, ``"uvloop"`` or ``"asyncio"``.

    :raises ConfigError: ``choice`` is not one of :data:`EVENT_LOOPS`, or is ``"uvloop"`` where uvloop cannot be
        imported or is older than :data:`MIN_UVLOOP` (``"auto"`` takes the standard loop there, with a warning
        for an old uvloop).
    """
    if choice not in EVENT_LOOPS:
        raise ConfigError(f"event_loop must be one of {', '.join(EVENT_LOOPS)}, was {choice!r}")
    if choice == "asyncio":
        return None, "asyncio"
    try:
        import uvloop
    except ImportError as exc:
        if choice == "auto":
            return None, "asyncio"
        problem = f"uvloop cannot be imported{' (it does not support Windows)' if sys.platform == 'win32' else ''}: {exc}"
    else:
        if _version(uvloop.__version__) >= MIN_UVLOOP:
            return uvloop.new_event_loop, "uvloop"
        problem = f"uvloop {uvloop.__version__} is older than {'.'.join(map(str, MIN_UVLOOP))}, the first this runs on"
        if choice == "auto":
            log.warning("event loop: asyncio, not uvloop: %s", problem)
            return None, "asyncio"
    raise ConfigError(f"the event loop is \"uvloop\" but {problem}. Install it with pip install 'livedata-core[uvloop]', "
                      "or choose \"auto\" or \"asyncio\" (--event-loop, LIVEDATA_EVENT_LOOP or event_loop in the "
                      "configuration file)")


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(itertools.takewhile(str.isdigit, part))
        parts.append(int(digits or 0))
    return tuple(parts)


def run(main: Coroutine[Any, Any, T], factory: Callable[[], asyncio.AbstractEventLoop] | None) -> T:
    """``asyncio.run(main)`` on a loop from ``factory`` (the first item :func:`loop_factory` returns)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """``"uvloop"`` or ``"asyncio"``: the event loop this is called from (``livedata status`` shows it)."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"

