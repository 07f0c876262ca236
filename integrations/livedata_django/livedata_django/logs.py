"""livedata's logging inside Django: Django's ``LOGGING`` decides where records go; secrets are masked anyway."""

from __future__ import annotations

import logging

from livedata_core.logs import SecretFilter

__all__ = ["mask_secrets_in_handlers"]


def mask_secrets_in_handlers() -> None:
    """Put livedata's :class:`~livedata_core.logs.SecretFilter` on every handler of the root and ``livedata``
    loggers (the ones Django's ``LOGGING`` configured), so a token in a message never reaches them."""
    for logger in (logging.getLogger(), logging.getLogger("livedata")):
        for handler in logger.handlers:
            if not any(isinstance(f, SecretFilter) for f in handler.filters):
                handler.addFilter(SecretFilter())
