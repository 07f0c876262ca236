"""Register a plugin object for the length of a test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..plugin_kit.broker import Broker
from ..plugin_kit.plugins import register_plugin, unregister_plugin

__all__ = ["registered_plugin"]


@contextlib.contextmanager
def registered_plugin(plugin: Any, name: str | None = None) -> Iterator[Broker | None]:
    """Register ``plugin`` (a module, class or object with hookimpls) and unregister it afterwards.

    Yields its :class:`~livedata_core.plugin_kit.broker.Broker` (``None`` for an application plugin such as a
    ``token_store``). Raises :class:`~livedata_core.errors.PluginError` if the plugin is refused, with the
    same message ``livedata plugins`` would show::

        with registered_plugin(MyBroker()) as broker:
            assert broker.name == "mine"
    """
    broker = register_plugin(plugin, name)
    try:
        yield broker
    finally:
        unregister_plugin(plugin)
