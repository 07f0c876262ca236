"""Hot standby: runners of one Redis and prefix elect one leader through a lease (``[ha]``, docs/operations.md).

A standby connects to no broker, polls nothing and publishes nothing until it holds the lease; the leader renews
it and stops at once when it cannot (:class:`~livedata_core.runner.ha.lease.Lease`). Fencing: a former leader's
writes are *refused by itself* (its publisher checks the lease on its own monotonic clock before every batch)
and *recognisable* in the orders and transactions streams (each entry carries the ``epoch`` of the lease it was
written under).
"""

from .lease import HOLD_FRACTION, RENEW_FRACTION, Lease, ha_keys, read_runners

__all__ = ["HOLD_FRACTION", "RENEW_FRACTION", "Lease", "ha_keys", "read_runners"]
