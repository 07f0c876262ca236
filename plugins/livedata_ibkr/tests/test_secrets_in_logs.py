"""The tickle session value (the websocket credential) never reaches the logs, even with everything at DEBUG."""

import asyncio
import logging

import pytest

from livedata_core.models import Quote
from livedata_ibkr.testing import SESSION_TOKEN, FakeGateway


class _Everything(logging.Handler):
    """Keeps every record of every logger, formatted the way a log file would show it (with tracebacks)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.fixture
def all_logs_at_debug():
    # Root at DEBUG, and the loggers involved turned up explicitly too (as `-vvv` or a logging config could).
    loggers = [logging.getLogger(name) for name in ("", "websockets", "httpcore", "httpx", "livedata.broker.ibkr.websocket")]
    old_levels = [lg.level for lg in loggers]
    handler = _Everything()
    loggers[0].addHandler(handler)
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        loggers[0].removeHandler(handler)
        for lg, level in zip(loggers, old_levels):
            lg.setLevel(level)


@pytest.mark.parametrize("cookie_auth", [True, False], ids=["cookie", "session-frame"])
def test_session_value_is_in_no_log_record_at_debug(authenticated, streaming, all_logs_at_debug, cookie_auth):
    async def main():
        async with FakeGateway(hb_interval=0.05) as gw:
            gw.cookie_auth = cookie_auth  # False: the gateway ignores the cookie and says "waiting for session"
            async with (authenticated(gw, echo_interval=0.05) as ctx,
                        streaming(ctx, ["AAPL"]) as (stream, reader)):
                await gw.wait_for(lambda: gw.subscribed(265598))
                await gw.push_quote(265598, {"31": "1.00"})
                await gw.wait_for(lambda: reader.of(Quote))
                await gw.wait_for(lambda: "ech+hb" in gw.clients[0].sent)
            if not cookie_auth:
                assert gw.session_frames == 1, "the session went as the first frame"

    asyncio.run(main())
    lines = all_logs_at_debug.lines
    assert any(line.startswith("httpcore") for line in lines), "the capture really saw DEBUG records"
    leaked = [line for line in lines if SESSION_TOKEN in line]
    assert leaked == [], leaked[:3]
