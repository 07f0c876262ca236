"""Operating a runner: Prometheus metrics, health endpoints, market hours and per-symbol staleness.

* :mod:`~livedata_core.runner.ops.market_hours`: sessions per symbol class and US exchange holidays, computed by rule;
* :mod:`~livedata_core.runner.ops.staleness`: which subscribed symbols have gone silent while their market is open;
* :mod:`~livedata_core.runner.ops.metrics`: the runner's state as Prometheus metrics;
* :mod:`~livedata_core.runner.ops.health`: the opt-in HTTP server for ``/metrics``, ``/healthz`` and ``/readyz``.

See docs/operations.md.
"""

REFRESH_TOKEN_EXPIRES_AT = "refresh_token_expires_at"
"""The ``ctx.status`` key by which a plugin reports when its login's refresh token expires (seconds since the epoch,
a number). The runner exports the days left as ``livedata_refresh_token_days_left``; ``livedata status`` shows it."""
