"""No tables: only the permission the endpoints require by default (``livedata_django.use_livedata``)."""

from __future__ import annotations

from django.db import models


class LivedataAccess(models.Model):
    """Carries the ``use_livedata`` permission; it has no table."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("use_livedata", "Can use the livedata endpoints (Schwab login and data, feed control)")]
