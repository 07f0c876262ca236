"""What core knows about one broker: its declaration, its context, and a caller scoped to its plugin."""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable
from typing import Any

import attrs
import cattrs

from .errors import ConfigError, NotSupported, PluginError
from .hookspecs import CAPABILITIES
from .models import describe_validation_error
from .tokens import TokenStore

__all__ = ["Broker", "BrokerContext", "BrokerInfo", "structure_settings"]

_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


@attrs.frozen
class BrokerInfo:
    """A broker's declaration, returned by its ``broker_info`` hook.

    :param name: short lower-case name used in configuration, the CLI and payloads (``"schwab"``).
    :param capabilities: the hooks this broker implements and core may call (see
        :data:`~livedata_core.hookspecs.CAPABILITIES`).
    :param settings_cls: an attrs class for the broker's own settings (the ``[brokers.NAME]`` table less the
        runner's keys); ``None`` when the broker takes none.
    :param description: one line for ``livedata plugins``.
    """

    name: str
    capabilities: frozenset[str] = attrs.field(converter=frozenset)
    settings_cls: type | None = None
    description: str = ""

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise PluginError(
                f"broker name {self.name!r} is not allowed: use lower-case letters, digits and '_', "
                "starting with a letter, at most 32 characters"
            )
        unknown = self.capabilities - CAPABILITIES
        if unknown:
            raise PluginError(
                f"broker {self.name!r} declares unknown capabilities {sorted(unknown)}; "
                f"known: {sorted(CAPABILITIES)}"
            )


@attrs.define
class BrokerContext:
    """Everything a broker's hooks get from core. One per broker per process.

    :ivar broker: the broker's name.
    :ivar settings: an instance of the broker's ``settings_cls`` (or ``None``).
    :ivar tokens: the token store to load and save this broker's tokens in.
    :ivar log: a logger named ``livedata.broker.<name>``; never log tokens.
    :ivar session: free for the plugin: whatever ``authenticate`` builds for the other hooks.
    :ivar status: extra lines for ``livedata status`` (for example a token that expires soon).
    """

    broker: str
    settings: Any = None
    tokens: TokenStore | None = None
    log: logging.Logger = attrs.field(default=None)
    session: Any = None
    status: dict[str, Any] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if self.log is None:
            self.log = logging.getLogger(f"livedata.broker.{self.broker}")


_strict = cattrs.Converter(forbid_extra_keys=True)


def structure_settings(cls: type | None, data: dict[str, Any], where: str) -> Any:
    """Build a broker's settings object from a config table, or raise ``ConfigError`` naming the key.

    :param where: how the user finds the table, for example ``[brokers.schwab]``.
    """
    if cls is None:
        if data:
            raise ConfigError(f"{where}: unknown keys {sorted(data)}; this broker takes no settings")
        return None
    try:
        return _strict.structure(data, cls)
    except cattrs.BaseValidationError as exc:
        raise ConfigError(f"{where}: " + "; ".join(describe_validation_error(exc))) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


@attrs.define(eq=False)
class Broker:
    """A loaded broker plugin. Calls go to this plugin's implementation only."""

    info: BrokerInfo
    plugin: Any
    distribution: str | None
    version: str | None
    impls: dict[str, Callable[..., Any]]
    argnames: dict[str, tuple[str, ...]]

    @property
    def name(self) -> str:
        return self.info.name

    def has(self, capability: str) -> bool:
        """Whether the broker declared ``capability``."""
        return capability in self.info.capabilities

    def has_hook(self, hook: str) -> bool:
        return hook in self.impls

    def make_context(self, settings: dict[str, Any] | None = None, tokens: TokenStore | None = None) -> BrokerContext:
        """A context for this broker, with ``settings`` checked against its settings class."""
        structured = structure_settings(self.info.settings_cls, dict(settings or {}), f"[brokers.{self.name}]")
        if structured is None and self.info.settings_cls is not None:
            structured = self.info.settings_cls()
        return BrokerContext(broker=self.name, settings=structured, tokens=tokens)

    def call_sync(self, hook: str, **kwargs: Any) -> Any:
        """Call this broker's implementation of ``hook`` and return what it returned (maybe an awaitable)."""
        if hook in CAPABILITIES and hook not in self.info.capabilities:
            raise NotSupported(f"broker {self.name!r} does not support {hook!r}")
        func = self.impls.get(hook)
        if func is None:
            raise NotSupported(f"broker {self.name!r} does not implement {hook!r}")
        names = self.argnames[hook]
        return func(**{k: v for k, v in kwargs.items() if k in names})

    async def call(self, hook: str, **kwargs: Any) -> Any:
        """Call this broker's implementation of ``hook``, awaiting it if it is async.

        :raises NotSupported: the broker did not declare the capability.
        """
        result = self.call_sync(hook, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    def normalize_symbol(self, symbol: str) -> str:
        """The broker's form of ``symbol``, checked for channel safety."""
        from .channels import validate_identifier

        if not isinstance(symbol, str):
            raise ConfigError(f"symbol must be a string, was {type(symbol).__name__}")
        if "normalize_symbol" in self.impls:
            symbol = self.call_sync("normalize_symbol", symbol=symbol)
        return validate_identifier(symbol)
