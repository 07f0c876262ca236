"""Which Redis: one server, a Sentinel-watched master, or a Redis Cluster, and the redis-py clients for each.

A :class:`RedisTopology` carries what a URL cannot: the sentinels and the service they watch, or that the URL's
server is one node of a cluster. Every part of livedata that takes a Redis URL also takes a topology (the runner
builds one from ``[redis]``, see docs/scaling.md)::

    RedisTopology("redis://:secret@master/0", sentinels=("10.0.0.1:26379", "10.0.0.2:26379"), service="mymaster")
    RedisTopology("redis://10.0.0.5:7000/0", cluster=True, nodes=("10.0.0.6:7000",), sharded=True)

With sentinels, the URL gives the credentials, database and TLS of the master and its replicas; its host and port
are not used (the sentinels say where the master is). Each sentinel is ``host:port`` or a ``redis://`` /
``rediss://`` URL of its own (for a sentinel with a password: ``redis://:pw@host:26379``); passwords are masked
wherever a topology is shown. With ``cluster``, the URL's server and ``nodes`` are the seed nodes.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs

from ..errors import ConfigError
from .url import mask_url, parse_redis_url, redis_url_from_env

__all__ = [
    "DEFAULT_WAIT_TIMEOUT", "MAX_WAIT_TIMEOUT", "RedisTopology", "as_topology", "async_client", "async_pubsub_client",
    "master_address", "sync_client", "sync_pubsub_client", "with_address",
]  # fmt: skip

DEFAULT_WAIT_TIMEOUT = 0.5
MAX_WAIT_TIMEOUT = 5.0
"""The longest WAIT: the publisher gives up on a reply after 10 s, and a WAIT holds the connection that long."""


@attrs.frozen(repr=False)
class RedisTopology:
    """Where Redis is and how it is laid out.

    :ivar url: the Redis URL (credentials, database, TLS; the server itself unless ``sentinels`` are given).
    :ivar sentinels: ``host:port`` or URLs of the sentinels; with ``service``, the master is asked of them.
    :ivar service: the name the sentinels know the master by (``mymaster``).
    :ivar cluster: the URL's server (and ``nodes``) are nodes of a Redis Cluster.
    :ivar nodes: more seed nodes of the cluster, ``host:port``.
    :ivar sharded: publish with ``SPUBLISH`` and subscribe with ``SSUBSCRIBE`` (Redis 7 sharded pub/sub).
    :ivar wait_replicas: account events count as published once this many replicas have them (``WAIT``); 0: off.
    :ivar wait_timeout: seconds one ``WAIT`` may take before the events are asked about again.
    """

    url: str
    sentinels: tuple[str, ...] = ()
    service: str | None = None
    cluster: bool = False
    nodes: tuple[str, ...] = ()
    sharded: bool = False
    wait_replicas: int = 0
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT

    def __attrs_post_init__(self) -> None:
        target = parse_redis_url(self.url)
        if self.sentinels and self.cluster:
            raise ConfigError("redis: sentinels and cluster cannot be used together (a cluster fails over by itself)")
        for entry in self.sentinels:
            _address(entry, "redis.sentinels")
        for entry in self.nodes:
            _address(entry, "redis.nodes")
        if bool(self.sentinels) != bool(self.service):
            raise ConfigError("redis: sentinels and service go together: name the sentinels and the service they watch")
        if self.service is not None and (not isinstance(self.service, str) or not self.service.strip()):
            raise ConfigError(f"redis.service must be the name of the master the sentinels watch, was {self.service!r}")
        if self.nodes and not self.cluster:
            raise ConfigError("redis.nodes names cluster seed nodes: set cluster = true too")
        if self.sharded and not self.cluster:
            raise ConfigError("redis.sharded (SPUBLISH/SSUBSCRIBE) is for a cluster: set cluster = true too")
        if self.cluster and self.wait_replicas:
            raise ConfigError("redis.wait_replicas is for one server or sentinels; a cluster does not support it here")
        if (self.sentinels or self.cluster) and target.unix_path:
            raise ConfigError("redis.url: a unix:// socket cannot be used with sentinels or a cluster")
        if self.cluster and target.db:
            raise ConfigError(f"redis.url {mask_url(self.url)!r}: a cluster has only database 0")
        if isinstance(self.wait_replicas, bool) or not isinstance(self.wait_replicas, int) or not 0 <= self.wait_replicas <= 100:
            raise ConfigError(f"redis.wait_replicas must be a whole number from 0 to 100, was {self.wait_replicas!r}")
        if not 0.001 <= self.wait_timeout <= MAX_WAIT_TIMEOUT:
            raise ConfigError(f"redis.wait_timeout must be from 0.001 to {MAX_WAIT_TIMEOUT:g} seconds, "
                              f"was {self.wait_timeout!r}")  # fmt: skip

    @property
    def kind(self) -> str:
        """``single``, ``sentinel`` or ``cluster``."""
        return "sentinel" if self.sentinels else "cluster" if self.cluster else "single"

    def describe(self) -> str:
        """A one-line description for logs and status, passwords masked."""
        if self.sentinels:
            shown = ", ".join(mask_url(s) for s in self.sentinels)
            return f"sentinel service {self.service!r} via {shown} ({mask_url(self.url)})"
        if self.cluster:
            seeds = ", ".join([_host_port(self.url), *self.nodes])
            mode = "sharded pub/sub" if self.sharded else "pub/sub"
            return f"cluster via {seeds} ({mask_url(self.url)}, {mode})"
        return mask_url(self.url)

    def __repr__(self) -> str:
        return f"RedisTopology({self.describe()!r})"

    def seeds(self) -> list[tuple[str, int]]:
        """The cluster's seed nodes as ``(host, port)``: the URL's server, then ``nodes``."""
        target = parse_redis_url(self.url)
        return [(target.host, target.port), *(_address(n, "redis.nodes") for n in self.nodes)]

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [_address(s, "redis.sentinels") for s in self.sentinels]

    def sentinel_kwargs(self) -> dict[str, Any]:
        """redis-py keyword arguments for the sentinels: the first sentinel URL's password and TLS (sentinels of
        one service share their settings)."""
        first = self.sentinels[0]
        if "://" not in first:
            return {}
        kwargs = _redis_py_kwargs(first)
        for name in ("host", "port", "db"):
            kwargs.pop(name, None)
        return kwargs


def as_topology(url: "str | RedisTopology | None") -> RedisTopology:
    """``url`` as a topology: a topology as it is, a URL as one server, ``None`` as ``LIVEDATA_REDIS_URL``."""
    if isinstance(url, RedisTopology):
        return url
    return RedisTopology(url or redis_url_from_env()[0])


def with_address(url: str, host: str, port: int) -> str:
    """``url`` pointed at ``host:port``, keeping its credentials, database and query."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    shown_host = f"[{host}]" if ":" in host else host
    netloc = f"{userinfo}@{shown_host}:{port}" if userinfo else f"{shown_host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _host_port(url: str) -> str:
    target = parse_redis_url(url)
    return f"{target.host}:{target.port}"


def _address(entry: Any, where: str) -> tuple[str, int]:
    if not isinstance(entry, str) or not entry.strip():
        raise ConfigError(f"{where}: each entry must be 'host:port' or a redis:// URL, was {entry!r}")
    if "://" in entry:
        target = parse_redis_url(entry)
        if target.unix_path:
            raise ConfigError(f"{where}: {mask_url(entry)!r} must be a TCP address, not a unix socket")
        return target.host, target.port
    host, colon, port = entry.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: {entry!r} must be 'host:port' (for example '10.0.0.1:26379') or a redis:// URL")
    return host.strip("[]"), int(port)


def _redis_py_kwargs(url: str) -> dict[str, Any]:
    """The connection keyword arguments redis-py's ``from_url`` would take from ``url`` (TLS class included)."""
    from redis.connection import SSLConnection, parse_url

    kwargs = parse_url(url)
    if kwargs.pop("connection_class", None) is SSLConnection:
        kwargs["ssl"] = True
    return kwargs


def sync_client(topology: "str | RedisTopology | None", **options: Any) -> Any:
    """A redis-py client for the topology: ``redis.Redis`` (for sentinels: one that follows the master) or
    ``redis.cluster.RedisCluster``. ``options`` are redis-py's (``socket_timeout``...)."""
    import redis
    from redis.cluster import ClusterNode, RedisCluster
    from redis.sentinel import Sentinel

    return _client(as_topology(topology), options, redis.Redis, Sentinel, RedisCluster, ClusterNode)


def async_client(topology: "str | RedisTopology | None", **options: Any) -> Any:
    """The asyncio version of :func:`sync_client`."""
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.sentinel import Sentinel

    return _client(as_topology(topology), options, aioredis.Redis, Sentinel, RedisCluster, ClusterNode)


def _client(topology: "RedisTopology", options: dict[str, Any], redis_cls: Any, sentinel_cls: Any, cluster_cls: Any,
            node_cls: Any) -> Any:
    # One recipe for redis-py's sync and asyncio classes, which take the same arguments.
    if topology.sentinels:
        kwargs = {**_node_kwargs(topology.url), **options}
        sentinel_kwargs = {**_timeouts(options), **topology.sentinel_kwargs()}
        manager = sentinel_cls(topology.sentinel_addresses(), sentinel_kwargs=sentinel_kwargs, **kwargs)
        return manager.master_for(topology.service, **kwargs)
    if topology.cluster:
        kwargs = {**_node_kwargs(topology.url), **options}
        kwargs.pop("db", None)
        kwargs.pop("retry", None)  # the cluster client keeps its own retries for MOVED/ASK
        return cluster_cls(startup_nodes=[node_cls(h, p) for h, p in topology.seeds()], **kwargs)
    return redis_cls.from_url(topology.url, **options)


def sync_pubsub_client(topology: "str | RedisTopology | None", **options: Any) -> Any:
    """The client to ``SUBSCRIBE``/``PSUBSCRIBE`` and ``PUBLISH`` with: :func:`sync_client`, except on a cluster,
    where it is a plain client of the URL's node (plain ``PUBLISH`` is broadcast to every node, and ``PUBLISH``
    counts only the subscribers of the node it was sent to: publisher and listener of a reply meet there)."""
    import redis

    topology = as_topology(topology)
    if topology.cluster:
        return redis.Redis.from_url(topology.url, **options)
    return sync_client(topology, **options)


def async_pubsub_client(topology: "str | RedisTopology | None", **options: Any) -> Any:
    """The asyncio version of :func:`sync_pubsub_client`."""
    import redis.asyncio as aioredis

    topology = as_topology(topology)
    if topology.cluster:
        return aioredis.Redis.from_url(topology.url, **options)
    return async_client(topology, **options)


def _node_kwargs(url: str) -> dict[str, Any]:
    kwargs = _redis_py_kwargs(url)
    kwargs.pop("host", None)
    kwargs.pop("port", None)
    return kwargs


def _timeouts(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")}


async def master_address(topology: RedisTopology, timeout: float = 2.0) -> tuple[str, int]:
    """Ask the sentinels where the master of ``topology.service`` is now.

    :raises PublishError: no sentinel answered, or none knows a master in a usable state.
    """
    from redis.asyncio.sentinel import Sentinel
    from redis.exceptions import RedisError

    from ..errors import PublishError

    sentinel_kwargs = {"socket_timeout": timeout, "socket_connect_timeout": timeout, **topology.sentinel_kwargs()}
    manager = Sentinel(topology.sentinel_addresses(), sentinel_kwargs=sentinel_kwargs)
    try:
        host, port = await manager.discover_master(topology.service)
    except (RedisError, OSError) as exc:
        raise PublishError(f"no master for {topology.describe()}: {exc}") from None
    finally:
        for sentinel in manager.sentinels:
            await sentinel.aclose()
    return host, int(port)
