"""What `livedata run` and `livedata replay` share: the ``--event-loop`` option, and the configuration their flags,
the environment and the file make together."""

from __future__ import annotations

import argparse
import os
from typing import Any

__all__ = ["add_event_loop_option", "load_runner_config"]


def add_event_loop_option(parser: argparse.ArgumentParser) -> None:
    """``--event-loop`` (:mod:`livedata_core.runner.event_loop`)."""
    from ..runner.event_loop import EVENT_LOOPS

    parser.add_argument("--event-loop", choices=EVENT_LOOPS, help="the asyncio event loop: auto (uvloop when it is "
                        "installed, as by pip install 'livedata-core[uvloop]'), asyncio or uvloop (default: "
                        "LIVEDATA_EVENT_LOOP, else event_loop of the configuration, else auto)")


def load_runner_config(args: argparse.Namespace) -> Any:
    """The :class:`~livedata_core.runner.RunnerConfig` of ``--config``, with ``--redis-url``, ``--prefix`` and
    ``--event-loop`` winning over their environment variables, which win over the file.

    :raises ConfigError: naming the key and what is wrong.
    """
    from ..runner import load_config_file

    env = dict(os.environ)
    if args.redis_url:
        env["LIVEDATA_REDIS_URL"] = args.redis_url
    if args.prefix is not None:
        env["LIVEDATA_PREFIX"] = args.prefix
    if args.event_loop:
        env["LIVEDATA_EVENT_LOOP"] = args.event_loop
    return load_config_file(args.config, env=env)
