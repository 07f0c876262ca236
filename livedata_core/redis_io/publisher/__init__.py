"""Publishing to Redis: :mod:`.sync` for scripts (``live_data_redis``), :class:`AsyncPublisher` for the runner
(one server, or a Sentinel-watched master), :class:`~.cluster.ClusterPublisher` for a Redis Cluster."""

from typing import Any

from ..topology import RedisTopology, as_topology
from .aio import AsyncPublisher, PublisherStats

__all__ = ["AsyncPublisher", "PublisherStats", "make_publisher"]


def make_publisher(redis: "str | RedisTopology | None" = None, **options: Any) -> Any:
    """The publisher for ``redis`` (a URL or a topology): a :class:`~.cluster.ClusterPublisher` for a cluster, else
    an :class:`AsyncPublisher`; ``options`` as theirs (``prefix``, ``latest``...)."""
    topology = as_topology(redis)
    if topology.cluster:
        from .cluster import ClusterPublisher

        return ClusterPublisher(topology, **options)
    return AsyncPublisher(topology, **options)
