import logging

import pytest

pytest_plugins = ["livedata_core.testing"]

_LOGGERS = ("", "httpx", "httpcore", "websockets", "asyncio")


@pytest.fixture(autouse=True)
def _restore_logging():
    # `livedata` commands run in-process (cli.main) configure logging for the whole process; undo that after
    # each test so one test's CLI call cannot change what another test's log capture sees.
    saved = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers)) for name in _LOGGERS}
    yield
    for name, (level, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers
