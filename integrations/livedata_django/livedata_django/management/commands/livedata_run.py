"""``manage.py livedata_run``: the livedata runner inside the Django project, with tokens in its model."""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from livedata_core.errors import ConfigError, LivedataError

from ... import conf
from ...logs import mask_secrets_in_handlers
from ...tokens import ModelTokenStore

def schwab_token_keys(runner: Any) -> list[str]:
    """The token-store keys of the Schwab logins the runner's instances use: each ``schwab`` instance's own (its
    instance name), the Schwab instance a ``tos`` instance is linked to, or ``schwab`` for an unlinked ``tos``."""
    keys = []
    for runtime in runner.runtimes.values():
        ctx = runtime.ctx
        if ctx.login is not None:
            keys.append(ctx.login.token_key)
        elif ctx.broker == "schwab":
            keys.append(ctx.token_key)
        elif ctx.broker == "tos":
            keys.append("schwab")
    return list(dict.fromkeys(keys))


class Command(BaseCommand):
    help = ("Run livedata's runner with the configuration of LIVEDATA['CONFIG'] and the Schwab tokens of "
            "LIVEDATA['TOKEN_MODEL']; Ctrl-C or SIGTERM stops it cleanly.")  # fmt: skip

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--config", "-c", metavar="FILE", help="a TOML configuration instead of LIVEDATA['CONFIG']")
        parser.add_argument("--broker", "-b", action="append", metavar="NAME",
                            help="run only this configured broker (repeatable)")  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        import attrs

        from livedata_core.runner import Runner, event_loop, load_config_file

        mask_secrets_in_handlers()
        try:
            config = load_config_file(options["config"]) if options["config"] else conf.runner_config()
            if options["broker"]:
                missing = [b for b in options["broker"] if b not in config.brokers]
                if missing:
                    raise ConfigError(f"--broker {', '.join(missing)}: not configured; configured: "
                                      f"{', '.join(sorted(config.brokers))}")  # fmt: skip
                config = attrs.evolve(config, brokers={b: config.brokers[b] for b in options["broker"]})
            loop_factory, _ = event_loop.loop_factory(config.event_loop)  # event_loop = "auto": uvloop if installed
            store = self.store = ModelTokenStore()
            self.runner = Runner(config, token_store=store)
            for key in schwab_token_keys(self.runner):  # before anything starts: whose row serves each login
                user = store.check(key)
                self.stderr.write(f"livedata_run: Schwab tokens of {key!r}: {user!r}'s row in {store.model._meta.label}")
        except LivedataError as exc:
            raise CommandError(str(exc)) from None
        finally:
            connections.close_all()  # the store opens its own when it needs one; none idles for the whole run
        try:
            event_loop.run(self._run(), loop_factory)
        except LivedataError as exc:
            raise CommandError(str(exc)) from None

    async def _run(self) -> None:
        # With [ha], a runner that lost its lease returns from run(): a fresh one waits as a standby again.
        while True:
            await self._run_once()
            if getattr(self.runner, "lost_lease", None) is None:
                return
            self.stderr.write(f"livedata_run: lost the lease ({self.runner.lost_lease}); standing by again")
            self.runner = type(self.runner)(self.runner.config, token_store=self.store)

    async def _run_once(self) -> None:
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.runner.stop)
        self.loop = loop
        task = asyncio.create_task(self.runner.run())
        await asyncio.wait({task, asyncio.create_task(self.runner.ready.wait())}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            brokers = ", ".join(sorted(self.runner.runtimes))
            self.stderr.write(f"livedata_run: running {brokers}; Ctrl-C to stop")
        await task
        self.stderr.write("livedata_run: stopped")

    def stop(self) -> None:
        """Stop the runner from another thread (tests, an embedding process)."""
        self.loop.call_soon_threadsafe(self.runner.stop)
