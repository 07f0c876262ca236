"""Plugin discovery: entry points in group ``livedata`` plus the built-in default plugins.

Loading is lazy and happens once. A plugin that fails to import, implements a hook that does not exist
(a misspelling), takes arguments a hook does not have, declares capabilities it does not implement, or
registers a broker name that is already taken is recorded in :func:`load_errors` with its error and skipped;
the other plugins keep working.

Environment:

``LIVEDATA_LOAD_PLUGINS``
    Comma-separated distribution names (``livedata-ibkr``, not the broker or plugin name ``ibkr``): load only
    these installed plugins (the built-in ones always load). Set to an empty string to load no installed plugin.
``LIVEDATA_DISABLED_PLUGINS``
    Comma-separated entry-point or distribution names never to load.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import logging
import os
import threading
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .broker import Broker, BrokerInfo
from ..errors import ConfigError, PluginError

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "LoadError",
    "PluginRecord",
    "get_broker",
    "get_brokers",
    "get_plugin_manager",
    "load_errors",
    "plugin_records",
    "register_plugin",
    "reset",
    "unregister_plugin",
]

ENTRY_POINT_GROUP = "livedata"
DEFAULT_PLUGINS = ("livedata_core.default_plugins.demo",)

log = logging.getLogger("livedata.plugins")


@attrs.frozen
class LoadError:
    """A plugin that could not be loaded, and why."""

    name: str
    distribution: str | None
    error: str


@attrs.frozen
class PluginRecord:
    """A loaded plugin, as ``livedata plugins`` shows it."""

    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]
    broker: str | None
    capabilities: tuple[str, ...]
    builtin: bool


class _State:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.loaded = False
        self.brokers: dict[str, Broker] = {}
        self.records: list[PluginRecord] = []
        self.errors: list[LoadError] = []
        self.lock = threading.RLock()


_state = _State()


def _split_env(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def _norm(dist: str) -> str:
    return dist.lower().replace("_", "-")


def _hooks_of(pm: pluggy.PluginManager, plugin: Any) -> tuple[str, ...]:
    return tuple(sorted(caller.name for caller in pm.get_hookcallers(plugin) or ()))


def _impl_of(pm: pluggy.PluginManager, plugin: Any, hook: str):
    caller = getattr(pm.hook, hook, None)
    if caller is None:
        return None
    for impl in caller.get_hookimpls():
        if impl.plugin is plugin:
            return impl
    return None


def _add(plugin: Any, name: str, distribution: str | None, version: str | None, builtin: bool) -> None:
    """Register one plugin with load-time checks; on any failure record it and leave nothing behind."""
    pm = _state.pm
    try:
        pm.register(plugin, name=name)
    except Exception as exc:  # pluggy.PluginValidationError, ValueError for a duplicate name
        _state.errors.append(LoadError(name, distribution, f"{type(exc).__name__}: {exc}"))
        log.error("plugin %s skipped: %s", name, exc)
        return
    try:
        unknown = [c.name for c in pm.get_hookcallers(plugin) or () if not c.has_spec()]
        if unknown:
            raise PluginError(
                f"implements unknown hook(s) {', '.join(sorted(unknown))}; known hooks: "
                + ", ".join(sorted(n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), 'livedata_spec')))
            )
        broker = _make_broker(plugin, name, distribution, version)
        if broker is not None and broker.name in _state.brokers:
            other = _state.brokers[broker.name]
            raise PluginError(
                f"broker name {broker.name!r} is already registered by {other.distribution or 'a built-in plugin'}"
            )
    except Exception as exc:
        pm.unregister(plugin)
        _state.errors.append(LoadError(name, distribution, f"{type(exc).__name__}: {exc}"))
        log.error("plugin %s skipped: %s", name, exc)
        return
    if broker is not None:
        _state.brokers[broker.name] = broker
    _state.records.append(
        PluginRecord(
            name=name,
            distribution=distribution,
            version=version,
            hooks=_hooks_of(pm, plugin),
            broker=broker.name if broker else None,
            capabilities=tuple(sorted(broker.info.capabilities)) if broker else (),
            builtin=builtin,
        )
    )


def _make_broker(plugin: Any, name: str, distribution: str | None, version: str | None) -> Broker | None:
    pm = _state.pm
    impls = {h: _impl_of(pm, plugin, h) for h in hookspecs.BROKER_HOOKS}
    impls = {h: i for h, i in impls.items() if i is not None}
    info_impl = _impl_of(pm, plugin, "broker_info")
    if info_impl is None:
        if impls:
            raise PluginError(f"implements broker hooks {sorted(impls)} but not broker_info")
        return None  # an application plugin (token_store, ...)
    info = info_impl.function()
    if not isinstance(info, BrokerInfo):
        raise PluginError(f"broker_info returned {type(info).__name__}, expected livedata_core.BrokerInfo")
    missing = sorted(c for c in info.capabilities if c not in impls)
    if missing:
        raise PluginError(f"broker {info.name!r} declares {missing} but does not implement those hooks")
    undeclared = sorted(h for h in impls if h not in info.capabilities and h not in hookspecs.OPTIONAL_HOOKS)
    if undeclared:
        raise PluginError(
            f"broker {info.name!r} implements {undeclared} without declaring them in capabilities"
        )
    return Broker(
        info=info,
        plugin=plugin,
        distribution=distribution,
        version=version,
        impls={h: i.function for h, i in impls.items()},
        argnames={h: tuple(i.argnames) + tuple(i.kwargnames) for h, i in impls.items()},
    )


def _load() -> None:
    for modname in DEFAULT_PLUGINS:
        try:
            module = importlib.import_module(modname)
        except Exception as exc:  # pragma: no cover - a broken install of core itself
            _state.errors.append(LoadError(modname, "livedata-core", f"{type(exc).__name__}: {exc}"))
            continue
        _add(module, modname, "livedata-core", _version("livedata-core"), builtin=True)

    only = _split_env("LIVEDATA_LOAD_PLUGINS")
    disabled = {_norm(n) for n in _split_env("LIVEDATA_DISABLED_PLUGINS") or []}
    wanted = {_norm(n) for n in only} if only is not None else None
    seen_dists: set[str] = set()
    dist_of_plugin: dict[str, str] = {}  # entry-point name -> distribution, to help with LIVEDATA_LOAD_PLUGINS=ibkr
    for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        if dist is not None:
            seen_dists.add(_norm(dist))
            dist_of_plugin.setdefault(_norm(ep.name), dist)
        if wanted is not None and (dist is None or _norm(dist) not in wanted):
            continue
        if _norm(ep.name) in disabled or (dist and _norm(dist) in disabled):
            log.info("plugin %s disabled by LIVEDATA_DISABLED_PLUGINS", ep.name)
            continue
        try:
            plugin = ep.load()
        except BaseException as exc:  # an import may raise anything, even SystemExit
            if isinstance(exc, KeyboardInterrupt):
                raise
            _state.errors.append(LoadError(ep.name, dist, f"failed to import: {type(exc).__name__}: {exc}"))
            log.error("plugin %s (%s) failed to import: %s", ep.name, dist, exc)
            continue
        _add(plugin, ep.name, dist, version, builtin=False)
    if wanted:
        for name in sorted(wanted - seen_dists):
            dist = dist_of_plugin.get(name)
            if dist is not None:
                error = (f"not loaded: LIVEDATA_LOAD_PLUGINS takes distribution names, and `{name}` is the plugin "
                         f"of distribution `{_norm(dist)}` (set LIVEDATA_LOAD_PLUGINS={_norm(dist)})")
            else:
                error = ("not installed (named in LIVEDATA_LOAD_PLUGINS, which takes distribution names; installed: "
                         f"{', '.join(sorted(seen_dists)) or 'none'})")
            _state.errors.append(LoadError(name, dist or name, error))
            log.warning("plugin %s named in LIVEDATA_LOAD_PLUGINS: %s", name, error)


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _ensure_loaded() -> None:
    if _state.loaded:
        return
    with _state.lock:
        if not _state.loaded:
            _load()
            _state.loaded = True


def get_plugin_manager() -> pluggy.PluginManager:
    """The pluggy manager with every plugin loaded."""
    _ensure_loaded()
    return _state.pm


def get_brokers() -> dict[str, Broker]:
    """Every loaded broker by name."""
    _ensure_loaded()
    return dict(_state.brokers)


def get_broker(name: str) -> Broker:
    """The broker called ``name``; ``ConfigError`` listing the installed ones if there is none."""
    brokers = get_brokers()
    try:
        return brokers[name]
    except KeyError:
        hint = ""
        failed = [e for e in _state.errors if e.name == name]
        if failed:
            hint = f" (plugin {name!r} failed to load: {failed[0].error})"
        raise ConfigError(
            f"unknown broker {name!r}{hint}; installed brokers: {', '.join(sorted(brokers)) or 'none'}. "
            "A broker is added by installing its plugin, for example `pip install -e plugins/livedata_schwab` from a "
            "clone of the livedata repository; `livedata plugins` lists what is installed."
        ) from None


def plugin_records() -> list[PluginRecord]:
    """Every loaded plugin."""
    _ensure_loaded()
    return list(_state.records)


def load_errors() -> list[LoadError]:
    """Every plugin that failed to load, with its error."""
    _ensure_loaded()
    return list(_state.errors)


def register_plugin(plugin: Any, name: str | None = None) -> Broker | None:
    """Register a plugin object at run time (tests, applications); raises ``PluginError`` if it is refused."""
    _ensure_loaded()
    name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    with _state.lock:
        before = len(_state.errors)
        _add(plugin, name, None, None, builtin=False)
        if len(_state.errors) > before:
            raise PluginError(f"plugin {name!r} refused: {_state.errors.pop().error}")
        for broker in _state.brokers.values():
            if broker.plugin is plugin:
                return broker
    return None


def unregister_plugin(plugin: Any) -> None:
    """Remove a plugin registered with :func:`register_plugin`."""
    with _state.lock:
        name = _state.pm.get_name(plugin)
        if name is None:
            return
        _state.pm.unregister(plugin)
        _state.brokers = {n: b for n, b in _state.brokers.items() if b.plugin is not plugin}
        _state.records = [r for r in _state.records if r.name != name]


def reset() -> None:
    """Forget every loaded plugin; the next call loads again (tests that change the environment)."""
    global _state
    _state = _State()
