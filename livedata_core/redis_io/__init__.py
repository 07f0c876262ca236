"""The Redis side: where Redis is, and publishing to it, consuming from it and controlling a runner through it.

- :mod:`.url`, :mod:`.tls`, :mod:`.topology`: one Redis URL (with its TLS files), or Sentinel or Cluster, and the
  redis-py clients for each.
- :mod:`.publisher`: ``live_data_redis`` (sync, redis-py) and the runner's batched ``AsyncPublisher`` (and its
  Cluster variant).
- :mod:`.subscriber`: consuming published data; :mod:`.control`: the client side of live control.
- :mod:`.server`: a private ``redis-server`` for tests, benchmarks and the demo.

Channel and key names are shared vocabulary: :mod:`livedata_core.channels`. Importing this package imports none of
its modules.
"""
