"""The Django app."""

from __future__ import annotations

from django.apps import AppConfig


class LivedataConfig(AppConfig):
    name = "livedata_django"
    label = "livedata_django"
    verbose_name = "livedata"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
