"""What core knows about one broker: its declaration, its context, and a caller scoped to its plugin."""

from __future__ import annotations

import collections.abc
import inspect
import json
import logging
import re
import types
import typing
from collections.abc import Callable
from typing import Any

import attrs
import cattrs

from ..errors import ConfigError, NotSupported, PluginError
from .limits import MAX_SYMBOLS_CAP, EachValue, bounds_of, number_problem
from ..models import describe_validation_error
from .merge import MergeBook
from .token_stores import Credential, Credentials, TokenStore, as_credentials, load_credentials

__all__ = ["DEFAULT_MAX_SYMBOLS", "KINDS", "NAME_RULE", "Broker", "BrokerContext", "BrokerInfo", "name_problem", "structure_settings"]

DEFAULT_MAX_SYMBOLS = 1000
"""The cap on streamed symbols of a broker that declares none (:attr:`BrokerInfo.max_symbols`)."""

NAME_RULE = re.compile(r"[a-z][a-z0-9_]{0,31}")
"""What a plugin's name and an instance's name (``[brokers.NAME]``) may be: it is a key, a logger name and a
token-store key."""


def name_problem(name: Any) -> str | None:
    """``None`` if ``name`` follows :data:`NAME_RULE`, else what is wrong with it, for an error message."""
    if isinstance(name, str) and NAME_RULE.fullmatch(name):
        return None
    return (f"{name!r} is not allowed: use lower-case letters, digits and '_', starting with a letter, "
            "at most 32 characters")


CAPABILITIES = frozenset(
    {"authenticate", "login", "stream", "fetch_accounts", "fetch_positions", "fetch_balances", "fetch_orders", "fetch_transactions",
     "fetch_bars", "option_chain"}
)
"""What a broker may declare in :attr:`BrokerInfo.capabilities`; each needs the hook of the same name
(:mod:`~livedata_core.plugin_kit.hookspecs`)."""

KINDS = ("quotes", "bars", "depth")
"""The kinds of market data a stream may carry (:attr:`BrokerInfo.kinds`): each is subscribed per symbol, configured
under ``[brokers.NAME]`` by the key of the same name (``symbols`` for quotes) and published on its channel type."""


@attrs.frozen
class BrokerInfo:
    """A broker's declaration, returned by its ``broker_info`` hook.

    :param name: short lower-case name used in configuration, the CLI and payloads (``"schwab"``).
    :param capabilities: the hooks this broker implements and core may call (see
        :data:`CAPABILITIES`).
    :param settings_cls: an attrs class for the broker's own settings (the ``[brokers.NAME]`` table less the
        runner's keys); ``None`` when the broker takes none.
    :param description: one line for ``livedata plugins``.
    :param max_symbols: the most symbols the broker streams at once on one connection (Schwab's streamer
        about 500 per service, IBKR 100 market-data lines); the default of ``[brokers.NAME] max_symbols``,
        which a user with a larger allowance may raise. Default :data:`DEFAULT_MAX_SYMBOLS`.
    :param max_instances: how many instances (``[brokers.*]`` tables naming this plugin) may run in one
        configuration; ``1`` for a broker that allows one login per machine. Default ``None``: any number.
    :param login_plugin: the plugin whose login this broker uses (tos streams with a Schwab login: ``"schwab"``).
        The setting of that name may then be a string naming an instance of that plugin (``schwab =
        "schwab_ira"``); without it, the instance named like that plugin is used if there is one. Core checks the
        link and gives the hooks that instance's context as :attr:`BrokerContext.login` (and to the settings'
        ``check_config(login=...)``, see :func:`structure_settings`).
    :param kinds: the kinds of market data the broker's stream carries, from :data:`KINDS`: ``"quotes"`` (top of book
        of every asset class it streams), ``"bars"`` (:class:`~livedata_core.models.Bar`), ``"depth"``
        (:class:`~livedata_core.models.Depth`). Default ``("quotes",)``. Configuration and ``livedata subscribe`` may
        ask a broker only for the kinds it declares (``bars = [...]``, ``--bars``).
    :param credentials: what an API-key broker needs stored (:class:`~livedata_core.plugin_kit.tokens.Credential`, or a plain
        name for a secret): ``livedata auth <instance>`` asks for each and saves them in the instance's token record,
        and the hooks read them with :meth:`BrokerContext.credentials`. Default: none.
    """

    name: str
    capabilities: frozenset[str] = attrs.field(converter=frozenset)
    settings_cls: type | None = None
    description: str = ""
    max_symbols: int = DEFAULT_MAX_SYMBOLS
    max_instances: int | None = None
    login_plugin: str | None = None
    credentials: tuple[Credential, ...] = attrs.field(default=(), converter=as_credentials)
    kinds: tuple[str, ...] = attrs.field(default=("quotes",), converter=tuple)

    def __attrs_post_init__(self) -> None:
        problem = name_problem(self.name)
        if problem:
            raise PluginError(f"broker name {problem}")
        most = self.max_instances
        if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 1):
            raise PluginError(f"broker {self.name!r} declares max_instances={most!r}; expected None or a whole number from 1")
        if self.login_plugin is not None and name_problem(self.login_plugin):
            raise PluginError(f"broker {self.name!r} declares login_plugin={self.login_plugin!r}: {name_problem(self.login_plugin)}")
        cap = self.max_symbols
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= MAX_SYMBOLS_CAP:
            raise PluginError(
                f"broker {self.name!r} declares max_symbols={cap!r}; "
                f"expected a whole number from 1 to {MAX_SYMBOLS_CAP}"
            )
        odd = [k for k in self.kinds if k not in KINDS]
        if odd or not self.kinds or len(set(self.kinds)) != len(self.kinds):
            raise PluginError(f"broker {self.name!r} declares kinds={self.kinds!r}; expected distinct names from "
                              f"{', '.join(KINDS)}")
        unknown = self.capabilities - CAPABILITIES
        if unknown:
            raise PluginError(
                f"broker {self.name!r} declares unknown capabilities {sorted(unknown)}; "
                f"known: {sorted(CAPABILITIES)}"
            )


@attrs.define
class BrokerContext:
    """Everything a broker's hooks get from core. One per instance (``[brokers.NAME]`` table) per process: a plugin
    keeps per-login state here (``session``), never at module level, as several instances may run at once.

    :ivar broker: the plugin's name (``"schwab"``), as models carry it in their ``broker`` field.
    :ivar settings: an instance of the broker's ``settings_cls`` (or ``None``).
    :ivar tokens: the token store to load and save this instance's tokens in.
    :ivar log: a logger named ``livedata.broker.<instance>``; never log tokens.
    :ivar session: free for the plugin: whatever ``authenticate`` builds for the other hooks (it may replace it).
    :ivar state: free for the plugin, and never replaced: what it must remember between polls and across
        re-authentication and reconnects (open orders it has seen, the last cursor of a feed). It lives as long as
        the process (not saved); core never reads, clears or logs it.
    :ivar env: the environment this instance was configured with (``load_config(env=...)``); ``None``: the
        process's. :meth:`credentials` reads ``LIVEDATA_<INSTANCE>_<NAME>`` from it.
    :ivar status: extra lines for ``livedata status`` (for example a token that expires soon).
    :ivar instance: the instance's name (``"schwab_ira"``); by default the plugin's name.
    :ivar token_key: the key of this instance's tokens in ``tokens``: the instance's name. Load and save under it,
        never under a fixed key, so that two logins of one plugin keep their own tokens.
    :ivar login: for a plugin that logs in with another plugin's login (:attr:`BrokerInfo.login_plugin`): the
        context of the linked instance (its ``settings``, ``tokens``, ``token_key``); ``None`` when none is linked.
    :ivar quotes: this instance's merge book (:class:`~livedata_core.plugin_kit.merge.MergeBook`): partial quote updates
        merged per symbol. Created once per context, so it outlives every connection: hand it to each stream
        (a quote published after a reconnect is then never less complete than the last one before it).
    """

    broker: str
    settings: Any = None
    tokens: TokenStore | None = None
    log: logging.Logger = attrs.field(default=None)
    session: Any = None
    state: dict[str, Any] = attrs.field(factory=dict, repr=False)
    env: dict[str, str] | None = attrs.field(default=None, repr=False)
    declared_credentials: tuple[Credential, ...] = attrs.field(default=(), repr=False)
    status: dict[str, Any] = attrs.field(factory=dict)
    instance: str = attrs.field(default=None)
    token_key: str = attrs.field(default=None)
    login: BrokerContext | None = attrs.field(default=None, repr=lambda c: "None" if c is None else repr(c.instance))
    quotes: MergeBook = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.instance is None:
            self.instance = self.broker
        if self.token_key is None:
            self.token_key = self.instance
        if self.log is None:
            self.log = logging.getLogger(f"livedata.broker.{self.instance}")
        if self.quotes is None:
            self.quotes = MergeBook(self.broker)

    def credentials(self) -> Credentials:
        """The credentials the broker declares (:attr:`BrokerInfo.credentials`), each from
        ``LIVEDATA_<INSTANCE>_<NAME>`` in the environment if set, else as ``livedata auth <instance>`` saved them in
        ``tokens`` under ``token_key``. Read them in ``authenticate`` (or when connecting); never log them.

        :raises LoginRequired: one is missing; the message names ``livedata auth <instance>`` and the variables.
        """
        return load_credentials(self.declared_credentials, self.tokens, self.token_key, self.instance, self.env)


_strict = cattrs.Converter(forbid_extra_keys=True)

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SEQUENCES = (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.MutableSequence,
              collections.abc.Set, collections.abc.MutableSet, collections.abc.Iterable, collections.abc.Collection)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


RUNNER_KEYS = frozenset({"enabled", "plugin", "symbols", "accounts", "poll", "max_symbols", "stale_after", "market_hours",
                         "bars", "depth", "depth_levels"})
"""Keys of a ``[brokers.NAME]`` table that the runner reads itself; no plugin setting may take one of these names."""


def _child(key: str, name: Any) -> str:
    name = str(name)
    return f"{key}.{name}" if _BARE_KEY.fullmatch(name) else f"{key}.{json.dumps(name)}"


def _expected(tp: Any) -> str:
    """What a value of type ``tp`` looks like in TOML, for error messages."""
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "a whole number"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(a) for a in typing.get_args(tp) if a is not type(None))
    if tp in _SEQUENCES or origin in _SEQUENCES:
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if len(set(args)) == 1 and args[0] in (bool, int, float, str):
            return {bool: "a list of true/false", int: "a list of whole numbers", float: "a list of numbers",
                    str: "a list of strings"}[args[0]]
        return "a list"
    if tp in _MAPPINGS or origin in _MAPPINGS or attrs.has(tp):
        return "a table"
    return getattr(tp, "__name__", str(tp))


def _wrong(tp: Any, value: Any, key: str) -> ConfigError:
    return ConfigError(f"{key} must be {_expected(tp)}, was {value!r}")


def _check_value(tp: Any, value: Any, key: str) -> None:
    """Refuse ``value`` unless it already is a ``tp``: no coercion of "false" to True or 1.5 to 1.

    Types this does not know (enums, dates, ...) are left to cattrs.
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object or isinstance(tp, (str, typing.ForwardRef, typing.TypeVar)):
        return
    if tp is bool:
        if not isinstance(value, bool):
            raise _wrong(tp, value, key)
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong(tp, value, key)
        _check_number(value, key, whole=True)
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # NaN
            raise _wrong(tp, value, key)
        _check_number(value, key, whole=False)
    elif tp is str:
        if not isinstance(value, str):
            raise _wrong(tp, value, key)
    elif origin is typing.Literal:
        if not any(type(value) is type(a) and value == a for a in args):
            raise _wrong(tp, value, key)
    elif origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        arms = [a for a in args if a is not type(None)]
        if len(arms) == 1:
            _check_value(arms[0], value, key)
            return
        for arm in arms:
            try:
                _check_value(arm, value, key)
                return
            except ConfigError:
                pass
        raise _wrong(tp, value, key)
    elif tp in _SEQUENCES or origin in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            raise _wrong(tp, value, key)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key} must be a list of {len(args)} items, was {value!r}")
            items = list(zip(args, value))
        else:
            items = [(args[0], v) for v in value] if args else []
        for i, (item_tp, item) in enumerate(items):
            _check_value(item_tp, item, f"{key}[{i}]")
    elif tp in _MAPPINGS or origin in _MAPPINGS:
        if not isinstance(value, dict):
            raise _wrong(tp, value, key)
        if len(args) == 2:
            for k, v in value.items():
                _check_value(args[0], k, f"{key} key {k!r}")
                _check_value(args[1], v, _child(key, k))
    elif attrs.has(origin or tp) and not isinstance(value, (origin or tp)):
        if not isinstance(value, dict):
            raise _wrong(tp, value, key)
        _check_table(origin or tp, value, key, f"[{key}]")


def _check_number(value: Any, key: str, whole: bool) -> None:
    problem = number_problem(value, whole)
    if problem:
        raise ConfigError(f"{key} {problem}")


def _check_bounds(validator: Any, value: Any, key: str) -> None:
    """The field's declared bounds (:func:`livedata_core.plugin_kit.limits.between`), checked here to name the whole key."""
    for bounds in bounds_of(validator):
        if isinstance(bounds, EachValue):
            items = value.items() if isinstance(value, dict) else ()
            checks = [(bounds.bounds, item, _child(key, k)) for k, item in items]
        else:
            checks = [(bounds, value, key)]
        for check, item, where in checks:
            problem = check.problem(item)
            if problem:
                raise ConfigError(f"{where} {problem}")


def _check_table(cls: type, data: dict[str, Any], key: str, where: str, extra: frozenset[str] = frozenset()) -> None:
    try:
        attrs.resolve_types(cls)
    except Exception:  # noqa: BLE001 - an annotation that cannot be resolved is left to cattrs
        pass
    fields = {a.name: a for a in attrs.fields(cls) if a.init}
    unknown = sorted(set(data) - set(fields) - extra)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s): {', '.join(unknown)}; allowed: {', '.join(sorted({*fields, *extra}))}"
        )
    for name, value in data.items():
        if name in fields and fields[name].type is not None:
            _check_value(fields[name].type, value, _child(key, name))
        if name in fields:
            _check_bounds(fields[name].validator, value, _child(key, name))


def structure_settings(
    cls: type | None, data: dict[str, Any], where: str, *, login: BrokerContext | None = None,
    env: dict[str, str] | None = None, check_config: bool = True,
) -> Any:
    """Build a broker's settings object from a config table, or raise ``ConfigError`` naming the key.

    Values must already have the field's type, as TOML gives them: a ``bool`` field takes only ``true`` /
    ``false``, an ``int`` field only a whole number, a ``float`` field a whole or decimal number, a ``str``
    field only a string; nothing is converted (``"false"`` is not false). Unknown keys are refused with the
    list of allowed ones (the settings class's fields and the runner's own keys).

    If the structured settings object has a ``check_config()`` method it is called next: checks that apply
    to the broker's own table only (not to the class built directly or embedded in another broker's settings),
    such as credentials that may come from the environment. A ``check_config`` that takes a ``login`` argument
    is given the context of the instance whose login this one uses (:attr:`BrokerInfo.login_plugin`), or
    ``None``: a tos instance linked to a Schwab instance needs no Schwab credentials of its own.

    Settings given in ``env`` (``{"SEED": "7"}``: the ``LIVEDATA_<INSTANCE>_`` variables of this instance, see
    :func:`~livedata_core.runner.config.instance_env`) override the table's: each names a field upper-cased and is
    converted to its type (a whole number, a number, ``true``/``false``/``1``/``0``, a string, a comma-separated
    list of strings); a variable naming no field is not this broker's and is left alone. An error names the variable.

    :param where: how the user finds the table, for example ``[brokers.schwab]``.
    :param login: the linked login's context, for ``check_config``.
    :param env: this instance's environment variables, without their ``LIVEDATA_<INSTANCE>_`` prefix.
    :param check_config: ``False`` skips ``check_config()`` (a replay logs in nowhere: no credentials needed).
    """
    runner_keys = RUNNER_KEYS
    key = where.strip("[]")
    if env and cls is not None and attrs.has(cls):
        data = {**data, **_settings_from_env(cls, env, key.removeprefix("brokers."), runner_keys)}
    if cls is None:
        own = sorted(set(data) - runner_keys)
        if own:
            raise ConfigError(
                f"{where}: unknown key(s): {', '.join(own)}; allowed: {', '.join(sorted(runner_keys))} "
                "(this broker takes no settings of its own)"
            )
        return None
    if attrs.has(cls):
        _check_table(cls, data, key, where, extra=runner_keys)
    try:
        settings = _strict.structure(data, cls)
    except cattrs.BaseValidationError as exc:
        raise ConfigError(f"{where}: " + "; ".join(describe_validation_error(exc))) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    check = getattr(settings, "check_config", None) if check_config else None
    if callable(check):
        if "login" in inspect.signature(check).parameters:
            check(login=login)
        else:
            check()
    return settings


_TRUE = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def _settings_from_env(cls: type, env: dict[str, str], instance: str, runner_keys: frozenset[str]) -> dict[str, Any]:
    """The settings ``env`` gives (see :func:`structure_settings`), converted to their fields' types and checked,
    each error naming its variable."""
    try:
        attrs.resolve_types(cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: such a field is refused below
        pass
    fields = {a.name: a for a in attrs.fields(cls) if a.init and a.name not in runner_keys}
    out: dict[str, Any] = {}
    for suffix, raw in sorted(env.items()):
        field = fields.get(suffix.lower())
        if field is None:
            continue
        var = f"LIVEDATA_{instance.upper()}_{suffix}"
        value = _from_text(field.type, raw, var)
        _check_value(field.type, value, var)
        _check_bounds(field.validator, value, var)
        out[field.name] = value
    return out


def _from_text(tp: Any, raw: str, var: str) -> Any:
    """``raw``, the text of an environment variable, as a value of type ``tp``; ``ConfigError`` naming ``var``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in args if a is not type(None)]
        if len(arms) == 1:
            return _from_text(arms[0], raw, var)
    text = raw.strip()
    if tp is str or (origin is typing.Literal and all(isinstance(a, str) for a in args)):
        return raw
    if tp is bool:
        if text.lower() not in _TRUE:
            raise ConfigError(f"{var} must be true or false (or 1/0), was {text!r}")
        return _TRUE[text.lower()]
    if tp in (int, float):
        try:
            return int(text) if tp is int else float(text)
        except ValueError:
            raise ConfigError(f"{var} must be {_expected(tp)}, was {text!r}") from None
    if (tp in _SEQUENCES or origin in _SEQUENCES) and all(a in (str, Ellipsis) for a in args):
        items = [item.strip() for item in raw.split(",") if item.strip()]
        return tuple(items) if origin is tuple or tp is tuple else items
    raise ConfigError(f"{var}: this setting ({_expected(tp)}) cannot be given in the environment; set it in the "
                      "configuration file")


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

    def make_context(
        self,
        settings: dict[str, Any] | None = None,
        tokens: TokenStore | None = None,
        *,
        instance: str | None = None,
        login: BrokerContext | None = None,
        env: dict[str, str] | None = None,
        check_config: bool = True,
    ) -> BrokerContext:
        """A context for an instance of this broker (by default the one named like it), with ``settings`` (its
        table) checked against the settings class; errors name ``[brokers.<instance>]``.

        :param env: the instance's environment (``BrokerConfig.env``: its ``LIVEDATA_<INSTANCE>_*`` variables,
            prefix removed), applied over ``settings`` and kept for :meth:`BrokerContext.credentials`; ``None``: no
            settings from the environment, and credentials from the process's.
        """
        instance = instance or self.name
        structured = structure_settings(
            self.info.settings_cls, dict(settings or {}), f"[brokers.{instance}]", login=login, env=env,
            check_config=check_config,
        )
        if structured is None and self.info.settings_cls is not None:
            structured = self.info.settings_cls()
        full_env = None if env is None else {f"LIVEDATA_{instance.upper()}_{k}": v for k, v in env.items()}
        return BrokerContext(broker=self.name, settings=structured, tokens=tokens, instance=instance, login=login,
                             env=full_env, declared_credentials=self.info.credentials)  # fmt: skip

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
        from ..channels import validate_identifier

        if not isinstance(symbol, str):
            raise ConfigError(f"symbol must be a string, was {type(symbol).__name__}")
        if "normalize_symbol" in self.impls:
            symbol = self.call_sync("normalize_symbol", symbol=symbol)
        return validate_identifier(symbol)
