"""Runner configuration: a TOML file, environment variables and flags, checked before anything starts.

Example ``livedata.toml``::

    [redis]
    url = "redis://localhost:6379/0"   # or LIVEDATA_REDIS_URL; a password in it is never printed
    prefix = ""                        # several deployments on one Redis: "prod" -> prod:live_data:...
    latest = true                      # keep live_data:latest:<type>:<id> and live_data:book:<type>:<account>
    streams = true                     # append orders and transactions to live_data:stream:<type>:<id>
    stream_maxlen = 10000              # 1 to 1,000,000
    bars_maxlen = 10000                # bars kept per symbol in live_data:stream:bars:<symbol>
    # sentinels = ["10.0.0.1:26379", "10.0.0.2:26379"]; service = "mymaster"   (docs/scaling.md)
    # cluster = true; nodes = ["10.0.0.6:7000"]; sharded = true                (docs/scaling.md)

    [backoff]
    initial = 0.5                      # seconds before the first reconnect
    max = 30.0
    login_retry = 60.0                 # how often to retry when a person must log in again

    [brokers.demo]                     # an instance; its plugin is the table's name...
    symbols = ["AAPL", "MSFT"]         # quotes
    bars = ["AAPL"]                    # 1-minute bars, for a broker that streams them (BrokerInfo.kinds)
    depth = ["AAPL"]                   # order books, top depth_levels levels (default 10)
    max_symbols = 5000                 # cap on symbols streamed at once; default: the broker's own limit
    accounts = ["DEMO-1"]              # default: every account the broker reports
    poll = { positions = 5, balances = 5, orders = 2, transactions = 10 }   # seconds; 0 turns one off
    stale_after = 300                  # seconds silent in session before resubscribe, then stale (0: off)
    market_hours = { "BTC*" = "always" }   # symbol glob = session class (docs/operations.md)
    quotes_per_second = 20             # any other key is the broker's own setting

    [brokers.demo_b]                   # ...unless it names one: a second instance of the demo plugin
    plugin = "demo"

    [metrics]                          # opt in: /metrics, /healthz, /readyz (docs/operations.md)
    port = 9464

    [record]                           # opt in: record every instance's frames and REST answers (docs/recording.md)
    dir = "recordings"                 # or livedata run --record DIR

    [ha]                               # opt in: hot standby, one leader per prefix (docs/operations.md)
    lease = 5                          # seconds; 0.5 to 300

Every error names the key (``brokers.demo.poll.orders``) and says what is wrong. Every number is bounded by
what consumes it (see :mod:`livedata_core.plugin_kit.limits`): a value out of range is refused, never cut short.

A broker's own setting may also come from the environment, ``LIVEDATA_<INSTANCE>_<SETTING>`` (upper-case:
``LIVEDATA_DEMO_QUOTES_PER_SECOND=50``), which overrides the file (see :func:`instance_env`).
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Any

import attrs

from ..plugin_kit.broker import RUNNER_KEYS, name_problem
from ..channels import validate_identifier, validate_prefix
from ..errors import ConfigError, InvalidIdentifier
from .event_loop import EVENT_LOOPS
from .ops.market_hours import parse_classes, parse_patterns
from ..plugin_kit.limits import (
    MAX_INTERVAL, MAX_STREAM_MAXLEN, MAX_SYMBOLS_CAP, MAX_TIMEOUT, MAX_WAIT, Between, between, seconds,
)
from ..redis_io.topology import DEFAULT_WAIT_TIMEOUT, MAX_WAIT_TIMEOUT, RedisTopology
from ..redis_io.url import DEFAULT_REDIS_URL, parse_redis_url

__all__ = [
    "DEFAULT_DEMO_SYMBOLS",
    "BackoffConfig",
    "BrokerConfig",
    "HaConfig",
    "MetricsConfig",
    "PollIntervals",
    "RedisConfig",
    "RunnerConfig",
    "instance_env",
    "load_config",
    "load_config_file",
]

DEFAULT_DEMO_SYMBOLS = ("AAPL", "MSFT", "SPY", "BRK.B", "/ESZ24", "$SPX")
MAX_DEPTH_LEVELS = 1000
DEFAULT_DEPTH_LEVELS = 10
DEFAULT_STALE_AFTER = 300.0
"""Seconds a subscribed symbol may be silent while its market is open before it is resubscribed and reported stale."""
POLL_KINDS = ("positions", "balances", "orders", "transactions")
CORE_ENV = frozenset({
    "LIVEDATA_REDIS_URL", "LIVEDATA_PREFIX", "LIVEDATA_TOKEN_STORE", "LIVEDATA_TOKEN_DIR", "LIVEDATA_LOG_FORMAT",
    "LIVEDATA_LOAD_PLUGINS", "LIVEDATA_DISABLED_PLUGINS", "LIVEDATA_COMMAND", "LIVEDATA_REDIS_SERVER",
})
"""Core's own environment variables: never a broker's setting, whatever its instance is called."""

# What each core number may be (see livedata_core.plugin_kit.limits for why).
_BOUNDS = {
    "redis.stream_maxlen": between(1, MAX_STREAM_MAXLEN),
    "depth_levels": between(1, MAX_DEPTH_LEVELS),
    "backoff": seconds(0.001, MAX_WAIT),
    "status_interval": seconds(0.05, MAX_WAIT),
    "shutdown_timeout": seconds(0.1, MAX_TIMEOUT),
    "poll": seconds(0, MAX_INTERVAL),
    "max_symbols": between(1, MAX_SYMBOLS_CAP),
    "stale_after": seconds(0, MAX_INTERVAL),
    "metrics.port": between(0, 65535),
    "ha.lease": seconds(2, 300),  # a leader stepping down has 0.4 lease to drop its broker connections
}


@attrs.frozen
class PollIntervals:
    """Seconds between polls of each kind of account data; ``0`` turns that poll off."""

    positions: float = 10.0
    balances: float = 10.0
    orders: float = 5.0
    transactions: float = 30.0


@attrs.frozen
class BrokerConfig:
    """One ``[brokers.NAME]`` table: one *instance* of a plugin (one login). ``settings`` is the rest of the table,
    checked by the plugin's settings class."""

    name: str
    """The instance name: the table's name, used to address it (CLI, control, status) and as its token key."""
    plugin: str = attrs.field(default=attrs.Factory(lambda self: self.name, takes_self=True))
    """The plugin it is an instance of: its ``plugin`` key, by default the table's name."""
    symbols: tuple[str, ...] = ()
    """Symbols to stream quotes of."""
    bars: tuple[str, ...] = ()
    """Symbols to stream 1-minute bars of (a broker whose ``BrokerInfo.kinds`` has ``"bars"``)."""
    depth: tuple[str, ...] = ()
    """Symbols to stream order books of (a broker whose ``BrokerInfo.kinds`` has ``"depth"``)."""
    depth_levels: int = DEFAULT_DEPTH_LEVELS
    """The most price levels of each side of a book published (the best ones)."""
    accounts: tuple[str, ...] | None = None
    poll: PollIntervals = PollIntervals()
    max_symbols: int | None = None
    """The cap on symbols streamed at once; ``None``: the broker's own (``BrokerInfo.max_symbols``)."""
    stale_after: float = DEFAULT_STALE_AFTER
    """Seconds a symbol may be silent while its market is open before it is resubscribed and reported stale (0: never)."""
    market_hours: tuple[tuple[str, str], ...] = ()
    """Symbol glob pattern -> session class, tried in order (see :mod:`livedata_core.runner.ops.market_hours`)."""
    # The raw table may hold secrets (an app secret): its repr names the keys only.
    settings: dict[str, Any] = attrs.field(factory=dict, repr=lambda s: f"<keys: {', '.join(sorted(s)) or 'none'}>")
    env: dict[str, str] = attrs.field(factory=dict, repr=lambda e: f"<names: {', '.join(sorted(e)) or 'none'}>")
    """This instance's ``LIVEDATA_<INSTANCE>_*`` environment variables, prefix removed (``{"APP_KEY": ...}``): they
    override the table's settings (see :func:`instance_env`) and give ``ctx.credentials()`` its values."""


@attrs.frozen(repr=False)
class RedisConfig:
    """Where and how to publish. ``explicit`` is ``False`` when the URL is only the default."""

    url: str = DEFAULT_REDIS_URL
    explicit: bool = False
    prefix: str = ""
    latest: bool = True
    streams: bool = True
    stream_maxlen: int = 10_000
    bars_maxlen: int = 10_000
    """Approximate cap on each symbol's bars stream (``live_data:stream:bars:<symbol>``)."""
    sentinels: tuple[str, ...] = ()
    """Sentinels (``host:port`` or URLs) watching ``service``: the master is asked of them (docs/scaling.md)."""
    service: str | None = None
    cluster: bool = False
    """``url`` (and ``nodes``) are seed nodes of a Redis Cluster."""
    nodes: tuple[str, ...] = ()
    sharded: bool = False
    """On a cluster: SPUBLISH, and consumers SSUBSCRIBE."""
    wait_replicas: int = 0
    """Account events count as published once this many replicas have them (``WAIT``); 0: off."""
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT
    topology: RedisTopology = attrs.field(init=False, repr=False, eq=False)
    """Where Redis is, as every livedata client takes it: built (and its URL and TLS files checked) once."""

    def __attrs_post_init__(self) -> None:
        topology = RedisTopology(self.url, sentinels=self.sentinels, service=self.service, cluster=self.cluster,
                                 nodes=self.nodes, sharded=self.sharded, wait_replicas=self.wait_replicas,
                                 wait_timeout=self.wait_timeout)  # fmt: skip
        object.__setattr__(self, "topology", topology)

    def __repr__(self) -> str:
        return f"RedisConfig({self.topology.describe()!r}, prefix={self.prefix!r})"


@attrs.frozen
class BackoffConfig:
    """Reconnect timing: exponential from ``initial`` to ``max`` seconds, with jitter."""

    initial: float = 0.5
    max: float = 30.0
    login_retry: float = 60.0


@attrs.frozen
class MetricsConfig:
    """The ``[metrics]`` table: where the HTTP server of ``/metrics``, ``/healthz`` and ``/readyz`` listens."""

    port: int = 9464
    """TCP port; 0 picks a free one (the runner logs it)."""
    host: str = "127.0.0.1"
    """Address to listen on: ``127.0.0.1`` (this machine only) unless set, e.g. ``0.0.0.0`` for a remote Prometheus."""


@attrs.frozen
class HaConfig:
    """The ``[ha]`` table: runners of one Redis and prefix elect one leader through a lease (hot standby)."""

    lease: float = 5.0
    """Seconds a leader's lease lasts in Redis without renewal. It renews every ``lease / 6`` s and stops streaming
    and polling ``0.6 * lease`` after its last confirmed renewal; a standby takes over within about ``1.2 * lease``
    of the leader's death (at once after a clean stop)."""


@attrs.frozen
class RunnerConfig:
    """Everything ``livedata run`` needs."""

    redis: RedisConfig = RedisConfig()
    brokers: dict[str, BrokerConfig] = attrs.field(factory=dict)
    backoff: BackoffConfig = BackoffConfig()
    status_interval: float = 1.0
    shutdown_timeout: float = 5.0
    metrics: MetricsConfig | None = None
    """The metrics and health server; ``None`` (no ``[metrics]`` table, no ``--metrics-port``): none runs."""
    record_dir: str | None = None
    """Where ``livedata run`` records every instance's frames and REST answers (``[record] dir``, ``--record``);
    ``None``: no recording (docs/recording.md)."""
    market_hours: dict[str, Any] = attrs.field(factory=dict)
    """Session classes by name (:class:`~livedata_core.runner.ops.market_hours.SessionClass`): the built-in ones as changed
    by ``[market_hours.<name>]`` tables; empty means the built-in ones."""
    ha: HaConfig | None = None
    """Hot standby (the ``[ha]`` table); ``None``: this runner leads alone, as before."""
    event_loop: str = "auto"
    """``auto`` (uvloop when it is installed), ``asyncio`` or ``uvloop``
    (:mod:`livedata_core.runner.event_loop`); ``LIVEDATA_EVENT_LOOP`` wins over the file."""


def _table(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table, was {type(data).__name__}")
    return data


def _unknown(data: dict[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    extra = sorted(set(data) - set(allowed))
    if extra:
        raise ConfigError(f"{where}: unknown key(s): {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}")


def _number(value: Any, where: str, bounds: Between) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a number, was {value!r}")
    _within(value, where, bounds)
    return float(value)


def _whole(value: Any, where: str, bounds: Between) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where} must be a whole number, was {value!r}")
    _within(value, where, bounds)
    return value


def _within(value: float, where: str, bounds: Between) -> None:
    problem = bounds.problem(value)
    if problem:
        raise ConfigError(f"{where} {problem}")


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, was {value!r}")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings, was {value!r}")
    return tuple(value)


def _redis(data: dict[str, Any], env: dict[str, str]) -> RedisConfig:
    _unknown(data, {"url", "prefix", "latest", "streams", "stream_maxlen", "bars_maxlen", *_TOPOLOGY_KEYS}, "[redis]")
    if "url" in data and not isinstance(data["url"], str):  # checked also while LIVEDATA_REDIS_URL overrides it
        raise ConfigError(f"redis.url must be a string, was {type(data['url']).__name__}")
    url = env.get("LIVEDATA_REDIS_URL") or data.get("url")
    explicit = bool(url)
    url = url or DEFAULT_REDIS_URL
    if not isinstance(url, str):
        raise ConfigError(f"redis.url must be a string, was {type(url).__name__}")
    parse_redis_url(url)
    prefix = env.get("LIVEDATA_PREFIX", data.get("prefix", ""))
    if not isinstance(prefix, str):
        raise ConfigError(f"redis.prefix must be a string, was {prefix!r}")
    try:
        validate_prefix(prefix)
    except InvalidIdentifier as exc:
        raise ConfigError(f"redis.prefix: {exc}") from None
    maxlen = _whole(data.get("stream_maxlen", 10_000), "redis.stream_maxlen", _BOUNDS["redis.stream_maxlen"])
    return RedisConfig(  # which also checks the combination (sentinels with service, sharded with cluster...)
        url=url,
        explicit=explicit,
        prefix=prefix,
        latest=_bool(data.get("latest", True), "redis.latest"),
        streams=_bool(data.get("streams", True), "redis.streams"),
        stream_maxlen=maxlen,
        bars_maxlen=_whole(data.get("bars_maxlen", 10_000), "redis.bars_maxlen", _BOUNDS["redis.stream_maxlen"]),
        **_topology(data),
    )


_TOPOLOGY_KEYS = ("sentinels", "service", "cluster", "nodes", "sharded", "wait_replicas", "wait_timeout")


def _topology(data: dict[str, Any]) -> dict[str, Any]:
    """The ``[redis]`` keys of Sentinel and Cluster (docs/scaling.md), each checked on its own."""
    out: dict[str, Any] = {}
    if "sentinels" in data:
        out["sentinels"] = _strings(data["sentinels"], "redis.sentinels")
        if not out["sentinels"]:
            raise ConfigError("redis.sentinels is empty: name at least one sentinel ('host:port'), or leave it out")
    if "service" in data:
        if not isinstance(data["service"], str) or not data["service"].strip():
            raise ConfigError(f"redis.service must be the name the sentinels know the master by, was {data['service']!r}")
        out["service"] = data["service"]
    for key in ("cluster", "sharded"):
        if key in data:
            out[key] = _bool(data[key], f"redis.{key}")
    if "nodes" in data:
        out["nodes"] = _strings(data["nodes"], "redis.nodes")
    # WAIT is on by default with sentinels: a failover must not lose an account event the old master had alone.
    out["wait_replicas"] = _whole(data.get("wait_replicas", 1 if out.get("sentinels") else 0), "redis.wait_replicas",
                                  between(0, 100))  # fmt: skip
    if "wait_timeout" in data:
        out["wait_timeout"] = _number(data["wait_timeout"], "redis.wait_timeout", seconds(0.001, MAX_WAIT_TIMEOUT))
    return out


def _broker(name: str, data: Any) -> BrokerConfig | None:
    where = f"brokers.{name}"
    problem = name_problem(name)
    if problem:
        raise ConfigError(f"[brokers.{name}]: the instance name {problem}")
    data = dict(_table(data, f"[{where}]"))
    if not _bool(data.pop("enabled", True), f"{where}.enabled"):
        return None
    plugin = data.pop("plugin", name)
    if not isinstance(plugin, str):
        raise ConfigError(f"{where}.plugin must be a string naming a plugin (see `livedata plugins`), was {plugin!r}")
    problem = name_problem(plugin)
    if problem:
        raise ConfigError(f"{where}.plugin: {problem}")
    symbols = _strings(data.pop("symbols", ()), f"{where}.symbols")
    bars = _strings(data.pop("bars", ()), f"{where}.bars")
    depth = _strings(data.pop("depth", ()), f"{where}.depth")
    depth_levels = _whole(data.pop("depth_levels", DEFAULT_DEPTH_LEVELS), f"{where}.depth_levels", _BOUNDS["depth_levels"])
    accounts = data.pop("accounts", None)
    if accounts is not None:
        accounts = _strings(accounts, f"{where}.accounts")
        for account in accounts:
            try:
                validate_identifier(account)
            except InvalidIdentifier as exc:
                raise ConfigError(f"{where}.accounts: {exc}") from None
    poll_data = _table(data.pop("poll", {}), f"[{where}.poll]")
    _unknown(poll_data, set(POLL_KINDS), f"[{where}.poll]")
    poll = PollIntervals(**{k: _number(v, f"{where}.poll.{k}", _BOUNDS["poll"]) for k, v in poll_data.items()})
    max_symbols = data.pop("max_symbols", None)
    if max_symbols is not None:
        max_symbols = _whole(max_symbols, f"{where}.max_symbols", _BOUNDS["max_symbols"])
    stale_after = _number(data.pop("stale_after", DEFAULT_STALE_AFTER), f"{where}.stale_after", _BOUNDS["stale_after"])
    market_hours = parse_patterns(data.pop("market_hours", {}), f"{where}.market_hours")
    return BrokerConfig(
        name=name, plugin=plugin, symbols=symbols, bars=bars, depth=depth, depth_levels=depth_levels, accounts=accounts, poll=poll, max_symbols=max_symbols,
        stale_after=stale_after, market_hours=market_hours, settings=data,
    )


def instance_env(names: Any, env: Any) -> dict[str, dict[str, str]]:
    """The ``LIVEDATA_<INSTANCE>_<SETTING>`` variables of ``env`` by instance (of ``names``), prefix removed.

    A variable belongs to the instance with the longest matching name (``LIVEDATA_SCHWAB_IRA_APP_KEY`` to
    ``schwab_ira`` when both ``schwab`` and ``schwab_ira`` are configured); core's own variables (:data:`CORE_ENV`)
    belong to none. Which of them are settings is for the plugin's settings class to say (a variable naming no
    field is left alone: it may be a credential, or the plugin's own).
    """
    prefixes = sorted(((f"LIVEDATA_{name.upper()}_", name) for name in names), key=lambda p: -len(p[0]))
    out: dict[str, dict[str, str]] = {name: {} for name in names}
    for var, value in env.items():
        if not var.startswith("LIVEDATA_") or var in CORE_ENV:
            continue
        for prefix, name in prefixes:
            if var.startswith(prefix) and len(var) > len(prefix):
                out[name][var[len(prefix):]] = value
                break
    return out


def load_config(data: dict[str, Any] | None = None, *, env: dict[str, str] | None = None) -> RunnerConfig:
    """Check a configuration mapping (as read from TOML) and build a :class:`RunnerConfig`.

    With no ``[brokers]`` table the built-in demo broker runs on :data:`DEFAULT_DEMO_SYMBOLS`.
    Environment (``env``, default ``os.environ``): ``LIVEDATA_REDIS_URL`` and ``LIVEDATA_PREFIX`` override the
    file, and so does ``LIVEDATA_<INSTANCE>_<SETTING>`` a broker's own setting (:attr:`BrokerConfig.env`).

    :raises ConfigError: naming the key and what is wrong.
    """
    data = dict(data or {})
    env = dict(os.environ if env is None else env)
    _unknown(data, {"redis", "brokers", "backoff", "status_interval", "shutdown_timeout", "metrics", "market_hours", "record",
                    "ha", "event_loop"}, "top level")
    redis = _redis(_table(data.get("redis", {}), "[redis]"), env)
    backoff_data = _table(data.get("backoff", {}), "[backoff]")
    _unknown(backoff_data, {"initial", "max", "login_retry"}, "[backoff]")
    backoff = BackoffConfig(**{k: _number(v, f"backoff.{k}", _BOUNDS["backoff"]) for k, v in backoff_data.items()})
    if backoff.initial > backoff.max:
        raise ConfigError(f"backoff.initial ({backoff.initial}) must not exceed backoff.max ({backoff.max})")
    brokers_data = _table(data.get("brokers", {"demo": {"symbols": list(DEFAULT_DEMO_SYMBOLS)}}), "[brokers]")
    brokers: dict[str, BrokerConfig] = {}
    for name, table in brokers_data.items():
        cfg = _broker(name, table)
        if cfg is not None:
            brokers[name] = cfg
    for name, own in instance_env(list(brokers), env).items():
        brokers[name] = attrs.evolve(brokers[name], env=own)
    if not brokers:
        raise ConfigError("[brokers]: no broker is enabled; add a [brokers.NAME] table (for example [brokers.demo])")
    return RunnerConfig(
        redis=redis,
        brokers=brokers,
        backoff=backoff,
        status_interval=_number(data.get("status_interval", 1.0), "status_interval", _BOUNDS["status_interval"]),
        shutdown_timeout=_number(data.get("shutdown_timeout", 5.0), "shutdown_timeout", _BOUNDS["shutdown_timeout"]),
        metrics=_metrics(data["metrics"]) if "metrics" in data else None,
        record_dir=_record(data["record"]) if "record" in data else None,
        market_hours=parse_classes(data.get("market_hours", {})),
        ha=_ha(data["ha"]) if "ha" in data else None,
        event_loop=_event_loop(data.get("event_loop", "auto"), env),
    )


def _event_loop(value: Any, env: dict[str, str]) -> str:
    where = "event_loop"
    if env.get("LIVEDATA_EVENT_LOOP"):
        value, where = env["LIVEDATA_EVENT_LOOP"], "LIVEDATA_EVENT_LOOP"
    if value not in EVENT_LOOPS:
        raise ConfigError(f"{where} must be one of {', '.join(EVENT_LOOPS)}, was {value!r}")
    return value


def _record(data: Any) -> str:
    data = _table(data, "[record]")
    _unknown(data, {"dir"}, "[record]")
    folder = data.get("dir")
    if not isinstance(folder, str) or not folder.strip():
        raise ConfigError(f"record.dir must be the folder to record into, such as \"recordings\", was {folder!r}")
    return folder


def _ha(data: Any) -> HaConfig:
    data = _table(data, "[ha]")
    _unknown(data, {"lease"}, "[ha]")
    return HaConfig(lease=_number(data.get("lease", 5.0), "ha.lease", _BOUNDS["ha.lease"]))


def _metrics(data: Any) -> MetricsConfig:
    data = _table(data, "[metrics]")
    _unknown(data, {"port", "host"}, "[metrics]")
    host = data.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise ConfigError(f"metrics.host must be an address such as \"127.0.0.1\" or \"0.0.0.0\", was {host!r}")
    return MetricsConfig(port=_whole(data.get("port", 9464), "metrics.port", _BOUNDS["metrics.port"]),
                         host=host)


def load_config_file(path: str | os.PathLike[str] | None, *, env: dict[str, str] | None = None) -> RunnerConfig:
    """Read and check a TOML file. ``None`` means ``livedata.toml`` if it exists, else the demo defaults."""
    if path is None:
        default = Path("livedata.toml")
        if not default.exists():
            return load_config({}, env=env)
        path = default
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {p}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}") from None
    try:
        return load_config(data, env=env)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
