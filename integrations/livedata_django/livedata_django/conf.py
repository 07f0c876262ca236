"""The ``LIVEDATA`` setting: what each key means, its default, and the checked values the rest of the app reads.

Settings are read on every use (never cached), so ``override_settings`` and a changed ``settings.py`` apply at once::

    LIVEDATA = {
        "TOKEN_MODEL": "SchwabLiveData.SchwabToken",   # required: the model holding one user's Schwab tokens
        "TOKEN_USERS": {"schwab": "thor"},             # token key (broker instance) -> username, for the runner
        "CONFIG": BASE_DIR / "livedata.toml",          # the runner's configuration (a path or a dict)
    }
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

__all__ = ["DEFAULTS", "get", "runner_config", "schwab_table"]

DEFAULTS: dict[str, Any] = {
    "TOKEN_MODEL": None,
    "TOKEN_USERS": {},
    "TOKEN_DATABASE": None,
    "CONFIG": None,
    "PERMISSION": "livedata_django.use_livedata",
    "FEED_BROKERS": ("tos",),
    "SCHWAB_BROKER": "schwab",
    "OAUTH_CALLBACK_URL": None,
    "OAUTH_DONE_URL": None,
    "OAUTH_MAX_AGE": 600,
    "CONTROL_TIMEOUT": 5.0,
    "LISTEN_CHECKPOINTS": "default",
}
"""Every key of ``settings.LIVEDATA`` and its default (docs/thor.md describes each)."""


def _all() -> dict[str, Any]:
    raw = getattr(settings, "LIVEDATA", None) or {}
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(f"settings.LIVEDATA must be a dict, was {type(raw).__name__}")
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise ImproperlyConfigured(
            f"settings.LIVEDATA: unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(DEFAULTS))}"
        )
    return {**DEFAULTS, **raw}


def get(name: str) -> Any:
    """``settings.LIVEDATA[name]``, or its default."""
    return _all()[name]


def runner_config() -> Any:
    """The runner's configuration (:class:`livedata_core.runner.RunnerConfig`) from ``LIVEDATA["CONFIG"]``.

    ``CONFIG`` is a path to a TOML file, a dict shaped like one, or ``None`` for ``./livedata.toml`` if it
    exists, else the demo defaults. ``LIVEDATA_REDIS_URL`` and ``LIVEDATA_PREFIX`` override it, as for
    ``livedata run``.
    """
    from livedata_core.runner import load_config, load_config_file

    config = get("CONFIG")
    if config is None or isinstance(config, (str, os.PathLike)):
        return load_config_file(Path(config) if config is not None else None)
    if isinstance(config, Mapping):
        return load_config(dict(config))
    raise ImproperlyConfigured(f"settings.LIVEDATA['CONFIG'] must be a path or a dict, was {type(config).__name__}")


def schwab_table(config: Any) -> dict[str, Any]:
    """The Schwab app's settings for the web login and the account endpoints: the ``[brokers.<SCHWAB_BROKER>]``
    table, else the ``schwab`` table inside ``[brokers.tos]``, else none (the app key and secret then come from
    ``LIVEDATA_SCHWAB_APP_KEY`` / ``LIVEDATA_SCHWAB_APP_SECRET``)."""
    name = get("SCHWAB_BROKER")
    if name in config.brokers:
        return dict(config.brokers[name].settings)
    tos = config.brokers.get("tos")
    if tos is not None and isinstance(tos.settings.get("schwab"), Mapping):
        return dict(tos.settings["schwab"])
    return {}
