"""The instances of a configuration checked against the installed plugins, before anything starts.

An *instance* is one ``[brokers.NAME]`` table: its ``plugin`` key (by default the table's name) says which plugin
it runs, with its own settings, symbols, accounts, tokens and status row. :func:`plan_instances` checks what
only the plugins can tell (an unknown plugin, more instances than a plugin allows, a login link that names no
instance of the right plugin, two logins configured with one account) and :func:`make_contexts` builds each
instance's :class:`~livedata_core.plugin_kit.broker.BrokerContext`, linked to the context of the instance whose login it
uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from ..plugin_kit.broker import Broker, BrokerContext
from ..errors import ConfigError
from ..plugin_kit.plugins import get_broker
from ..plugin_kit.tokens import TokenStore
from .config import BrokerConfig

__all__ = ["Instance", "login_of", "make_contexts", "plan_instances"]


@attrs.frozen
class Instance:
    """One instance ready to run: its plugin, its table (less the login link), and whose login it uses."""

    name: str
    broker: Broker
    config: BrokerConfig
    login: str | None = None
    """The instance whose login this one uses (:attr:`BrokerInfo.login_plugin`), or ``None``."""

    @property
    def login_name(self) -> str:
        """The instance that owns the login this one runs on: the linked one, else itself. Instances of one
        login may report the same accounts (tos streams the order activity of the Schwab accounts it polls)."""
        return self.login or self.name


def _plugin_of(config: BrokerConfig) -> Broker:
    try:
        return get_broker(config.plugin)
    except ConfigError as exc:
        key = f"brokers.{config.name}.plugin" if config.plugin != config.name else f"[brokers.{config.name}]"
        raise ConfigError(f"{key}: {exc}") from None


def plan_instances(brokers: Mapping[str, BrokerConfig]) -> dict[str, Instance]:
    """Check every instance against its plugin and resolve login links; ``ConfigError`` names the key.

    Refused: an unknown plugin; more instances of a plugin than its ``BrokerInfo.max_instances``; a login link
    (``schwab = "schwab_ira"`` in a tos table) naming an instance that is not configured or not of the login
    plugin; two instances on different logins with the same account in their ``accounts``.
    """
    plugins = {name: _plugin_of(config) for name, config in brokers.items()}
    by_plugin: dict[str, list[str]] = {}
    for name, broker in plugins.items():
        by_plugin.setdefault(broker.name, []).append(name)
    for plugin, names in by_plugin.items():
        most = plugins[names[0]].info.max_instances
        if most is not None and len(names) > most:
            raise ConfigError(
                f"[brokers.{names[most]}]: plugin {plugin!r} allows {most} instance{'s' if most != 1 else ''} per "
                f"configuration (one login per machine), and {len(names)} are configured: {', '.join(names)}"
            )
    planned: dict[str, Instance] = {}
    for name, config in brokers.items():
        broker = plugins[name]
        link = None
        settings = config.settings
        login_plugin = broker.info.login_plugin
        if login_plugin is not None:
            named = settings.get(login_plugin)
            if isinstance(named, str):
                settings = {k: v for k, v in settings.items() if k != login_plugin}
                key = f"brokers.{name}.{login_plugin}"
                if named not in brokers:
                    raise ConfigError(
                        f"{key} must be a table, was {named!r}, which names no configured (and enabled) instance; a "
                        f"string there names the {login_plugin} instance whose login {name} uses (configured: "
                        f"{', '.join(brokers)})"
                    )
                if plugins[named].name != login_plugin:
                    raise ConfigError(f"{key} names the instance {named!r}, which is of plugin {plugins[named].name!r}, "
                                      f"not {login_plugin!r}")  # fmt: skip
                link = named
            elif named is None and login_plugin in brokers and plugins[login_plugin].name == login_plugin:
                link = login_plugin  # the default: the instance named like the login plugin
        planned[name] = Instance(name, broker, attrs.evolve(config, settings=settings), link)
    _check_accounts(planned.values())
    return planned


def _check_accounts(instances: Iterable[Instance]) -> None:
    owner: dict[str, Instance] = {}
    for instance in instances:
        for account in instance.config.accounts or ():
            other = owner.setdefault(account, instance)
            if other.login_name != instance.login_name:
                raise ConfigError(
                    f"brokers.{instance.name}.accounts: account {account!r} is also in brokers.{other.name}.accounts; "
                    "an account is published by one login only (its channels are named by the account id alone)"
                )


def login_of(instances: Mapping[str, Instance], name: str) -> list[str]:
    """``name`` and the instance whose login it uses, that one first: what must have a context for it to run."""
    link = instances[name].login
    return [*login_of(instances, link), name] if link and link != name else [name]


def make_contexts(
    instances: Mapping[str, Instance],
    tokens_for: Callable[[Instance], TokenStore | None],
    names: Iterable[str] | None = None,
) -> dict[str, BrokerContext]:
    """A context per instance (``names``, by default all, and the instances whose logins they use), each with
    ``tokens_for(instance)`` as its store and its settings checked; a linked instance's ``login`` is the context
    of the instance it names."""
    wanted = list(names) if names is not None else list(instances)
    order = list(dict.fromkeys(n for name in wanted for n in login_of(instances, name)))
    contexts: dict[str, BrokerContext] = {}
    for name in order:
        instance = instances[name]
        contexts[name] = instance.broker.make_context(
            instance.config.settings, tokens_for(instance), instance=name, env=instance.config.env,
            login=contexts[instance.login] if instance.login else None,
        )
    return contexts

