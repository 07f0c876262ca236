"""The streamer's websocket logger never passes a frame on (the LOGIN frame carries the access token), also after
an application's logging configuration (Django's LOGGING naming "livedata") resets every existing logger's level."""

import logging
import logging.config

from livedata_tos import stream


def test_the_streamers_frame_logger_drops_debug_records_after_a_logging_config_reset():
    livedata = logging.getLogger("livedata")
    saved = (livedata.level, livedata.handlers[:], livedata.propagate)
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                               "loggers": {"livedata": {"level": "DEBUG"}}})  # fmt: skip
    livedata.addHandler(Keep(logging.DEBUG))
    try:
        stream._WS_LOG.debug("> TEXT '{\"service\":\"ADMIN\",\"command\":\"LOGIN\",\"Authorization\":\"AT-secret\"}'")
        stream._WS_LOG.info("connection open")
    finally:
        livedata.setLevel(saved[0])
        livedata.handlers[:] = saved[1]
        livedata.propagate = saved[2]
    assert seen == ["connection open"]
