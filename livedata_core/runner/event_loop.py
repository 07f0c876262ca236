"""Which asyncio event loop ``livedata run`` and ``livedata replay`` run on: the standard library's, or uvloop's.

uvloop (``pip install 'livedata-core[uvloop]'``, Linux and macOS) runs the loop's own work and the sockets'
reads and writes in C. At a steady rate a frame's fixed costs are a large part of the runner's time, and there it
took 2-16% off the CPU a quote (docs/operations.md#speed-one-runner-one-core).
``event_loop = "auto"`` (the default) takes it when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..errors import ConfigError

__all__ = ["EVENT_LOOPS", "add_event_loop_option", "loop_factory", "run", "running_loop_name"]

EVENT_LOOPS = ("auto", "asyncio", "uvloop")
"""The values of the ``event_loop`` setting (``LIVEDATA_EVENT_LOOP``, ``--event-loop``)."""

T = TypeVar("T")


def loop_factory(choice: str) -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    """``(factory, name)`` for ``choice``: the factory for :class:`asyncio.Runner` (``None``: the standard
    library's loop) and the loop's name, ``"uvloop"`` or ``"asyncio"``.

    :raises ConfigError: ``choice`` is not one of :data:`EVENT_LOOPS`, or is ``"uvloop"`` where uvloop cannot be
        imported.
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
        where = " (it does not support Windows)" if sys.platform == "win32" else ""
        raise ConfigError(f"event_loop is \"uvloop\" but uvloop cannot be imported{where}: {exc}. Install it with "
                          "pip install 'livedata-core[uvloop]', or set event_loop = \"auto\" or \"asyncio\"") from None
    return uvloop.new_event_loop, "uvloop"


def run(main: Coroutine[Any, Any, T], factory: Callable[[], asyncio.AbstractEventLoop] | None) -> T:
    """``asyncio.run(main)`` on a loop from ``factory`` (the first item :func:`loop_factory` returns)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """``"uvloop"`` or ``"asyncio"``: the event loop this is called from (``livedata status`` shows it)."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"


def add_event_loop_option(parser: argparse.ArgumentParser) -> None:
    """``--event-loop`` of ``livedata run`` and ``livedata replay``."""
    parser.add_argument("--event-loop", choices=EVENT_LOOPS, help="the asyncio event loop: auto (uvloop when it is "
                        "installed, as by pip install 'livedata-core[uvloop]'), asyncio or uvloop (default: "
                        "LIVEDATA_EVENT_LOOP, else event_loop of the configuration, else auto)")
