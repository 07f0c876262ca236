"""Old module paths of core, still importable: ``import livedata_core.streaming`` gives the module now at
``livedata_core.plugin_kit.streaming`` (the same object, so its names are the same objects too).

Core was grouped into packages (plugin_kit, redis_io, runner, cli); code and guides written against the flat
layout keep working. One finder serves every old path, first on ``sys.meta_path`` so an old name never loads a
second copy of a module; it imports nothing until an old path is asked for.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

MOVED = {
    "livedata_core.broker": "livedata_core.plugin_kit.broker",
    "livedata_core.hookspecs": "livedata_core.plugin_kit.hookspecs",
    "livedata_core.limits": "livedata_core.plugin_kit.limits",
    "livedata_core.merge": "livedata_core.plugin_kit.merge",
    "livedata_core.plugins": "livedata_core.plugin_kit.plugins",
    "livedata_core.retry_after": "livedata_core.plugin_kit.retry_after",
    "livedata_core.streaming": "livedata_core.plugin_kit.streaming",
    "livedata_core.tokens": "livedata_core.plugin_kit.tokens",
    "livedata_core.urls": "livedata_core.plugin_kit.urls",
    "livedata_core.websocket_stream": "livedata_core.plugin_kit.websocket_stream",
    "livedata_core.control": "livedata_core.redis_io.control",
    "livedata_core.publisher": "livedata_core.redis_io.publisher",
    "livedata_core.redis_server": "livedata_core.redis_io.server",
    "livedata_core.redis_tls": "livedata_core.redis_io.tls",
    "livedata_core.redis_topology": "livedata_core.redis_io.topology",
    "livedata_core.redis_url": "livedata_core.redis_io.url",
    "livedata_core.subscriber": "livedata_core.redis_io.subscriber",
    "livedata_core.ops": "livedata_core.runner.ops",
    "livedata_core.scaffold": "livedata_core.cli.scaffold",
    "livedata_core.tables": "livedata_core.cli.tables",
}
"""Old module path -> where the module is now. An old package's submodules follow it."""


def new_name(fullname: str) -> str | None:
    """Where the module once importable as ``fullname`` is now, or ``None`` if it did not move."""
    for old, new in MOVED.items():
        if fullname == old or fullname.startswith(old + "."):
            return new + fullname[len(old):]
    return None


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        pass  # already executed under its new name


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Resolves an old module path of core to the module at its new path."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        new = new_name(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
