import logging

import pytest

pytest_plugins = ["livedata_core.testing"]

_LOGGERS = ("", "httpx", "httpcore", "websockets", "asyncio")


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
