"""``manage.py livedata_auth BROKER``: a broker's terminal login (as ``livedata auth``), saving into the model."""

from __future__ import annotations

import asyncio
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from livedata_core.errors import LivedataError

from ... import conf
from ...logs import mask_secrets_in_handlers
from ...tokens import ModelTokenStore


class Command(BaseCommand):
    help = "Log in to a broker from this terminal; the tokens go into the row of --user in LIVEDATA['TOKEN_MODEL']."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("broker", help="the broker (instance) to log in to, e.g. schwab")
        parser.add_argument("--user", help="whose row gets the tokens (default: LIVEDATA['TOKEN_USERS'][BROKER])")
        parser.add_argument("--manual", action="store_true",
                            help="print the login URL and read the redirect URL pasted here (no callback server)")  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        from livedata_core.plugin_kit.plugins import get_broker

        mask_secrets_in_handlers()
        name = options["broker"]
        try:
            broker = get_broker(name)
            if not broker.has("login"):
                raise CommandError(f"broker {name!r} has no terminal login")
            config = conf.runner_config()
            table = dict(config.brokers[name].settings) if name in config.brokers else {}
            store = ModelTokenStore(user=options["user"]) if options["user"] else ModelTokenStore()
            user = store.check(name)
            ctx = broker.make_context(table, store)
        except LivedataError as exc:
            raise CommandError(str(exc)) from None
        finally:
            connections.close_all()

        async def go() -> None:
            try:
                await broker.call("login", ctx=ctx, manual=options["manual"])
            finally:
                if broker.has_hook("shutdown"):
                    await broker.call("shutdown", ctx=ctx)

        try:
            asyncio.run(go())
        except LivedataError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{name}: login complete; tokens saved for {user!r} in {store.model._meta.label}")
