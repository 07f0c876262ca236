import logging
import signal

import pytest

pytest_plugins = ["livedata_core.testing"]

_LOGGERS = ("", "httpx", "httpcore", "websockets", "asyncio")

# Tests stop `livedata` commands and dev.py with SIGINT, as Ctrl-C would. A shell without job control starts a
# background job (`bash .ci/run &`, nohup) with SIGINT ignored, children inherit that, and Python then installs no
# KeyboardInterrupt handler: those commands would not stop. A handler of ours is reset to the default in children.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _restore_logging():
    # `livedata` commands run in-process (cli.main) configure logging for the whole process; undo that after
    # each test so one test's CLI call cannot change what another test's log capture sees.
    saved = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers)) for name in _LOGGERS}
    # A logging config (Django's LOGGING, a test of it) resets the level of every logger below the ones it names:
    # the frame loggers of the fake servers among them, which would then log every frame of later tests.
    levels = {name: logger.level for name, logger in logging.root.manager.loggerDict.items()
              if isinstance(logger, logging.Logger)}  # fmt: skip
    yield
    for name, (level, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
