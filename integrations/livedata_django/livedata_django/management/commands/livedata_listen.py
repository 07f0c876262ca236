"""``manage.py livedata_listen``: dispatch what livedata publishes to the handlers of your apps' ``livedata_handlers``."""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Any

from django.core.cache import caches
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import conf
from ...listen import HANDLER_MODULE, Listener, autodiscover
from ...logs import mask_secrets_in_handlers


class Command(BaseCommand):
    help = (f"Subscribe to the channels the @on(...) handlers in your apps' {HANDLER_MODULE}.py modules name, call "
            "them for every message, reconnect after a Redis restart and catch up on what was missed.")  # fmt: skip

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("specs", nargs="*", metavar="SPEC",
                            help="only these channel specs (e.g. positions:*); default: every registered one")  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        mask_secrets_in_handlers()
        registry = autodiscover()
        redis = conf.runner_config().redis
        alias = conf.get("LISTEN_CHECKPOINTS")
        try:
            self.listener = Listener(registry, redis.url, redis.prefix, specs=options["specs"] or None,
                                     checkpoints=caches[alias] if alias else None)  # fmt: skip
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(f"livedata_listen: {', '.join(self.listener.specs)} -> "
                          f"{len(registry.handlers)} handler(s); Ctrl-C to stop")  # fmt: skip
        try:
            asyncio.run(self._run())
        except Exception as exc:  # the first connection failed: say where, no traceback
            if "redis" in type(exc).__module__:
                raise CommandError(f"cannot listen on Redis: {exc}") from None
            raise
        self.stderr.write(f"livedata_listen: stopped ({self.listener.handled} handled, {self.listener.failed} failed)")

    async def _run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.loop.add_signal_handler(sig, self.stop)
        try:
            await self.listener.run()
        except asyncio.CancelledError:
            pass

    def stop(self) -> None:
        """Stop listening (from a signal handler or any thread)."""
        self.loop.call_soon_threadsafe(self.task.cancel)
