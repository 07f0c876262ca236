"""System checks (``manage.py check``): the ``LIVEDATA`` setting and the token model it names."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from . import conf


@checks.register()
def check_livedata_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from django.db import models

    from .tokens import REQUIRED_FIELDS, TIME_FIELDS, token_model

    try:
        conf.get("TOKEN_MODEL")
        if not conf.get("TOKEN_MODEL"):
            return [checks.Error("settings.LIVEDATA['TOKEN_MODEL'] is not set",
                                 hint="Name the model holding the Schwab tokens, e.g. 'SchwabLiveData.SchwabToken'.",
                                 id="livedata_django.E001")]  # fmt: skip
        model = token_model()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="livedata_django.E001")]
    errors: list[checks.CheckMessage] = []
    label = model._meta.label
    for name in REQUIRED_FIELDS:
        try:
            model._meta.get_field(name)
        except Exception:
            errors.append(checks.Error(f"{label} has no {name!r} field", obj=model, id="livedata_django.E002",
                                       hint=f"A token model needs {', '.join(REQUIRED_FIELDS)}."))  # fmt: skip
    if errors:
        return errors
    user = model._meta.get_field("user")
    if not (user.one_to_one or getattr(user, "unique", False)):
        errors.append(checks.Error(f"{label}.user must be a OneToOneField (one token row per user)", obj=model,
                                   id="livedata_django.E003"))  # fmt: skip
    for name in TIME_FIELDS:
        try:
            field = model._meta.get_field(name)
        except Exception:
            continue
        if not isinstance(field, (models.DateTimeField, models.IntegerField)):
            errors.append(checks.Error(
                f"{label}.{name} must be a DateTimeField or an integer field of milliseconds since the epoch",
                obj=model, id="livedata_django.E004"))  # fmt: skip
    try:
        model._meta.get_field("refresh_issued_at")
    except Exception:
        errors.append(checks.Warning(
            f"{label} has no refresh_issued_at field: livedata cannot warn before the 7-day Schwab refresh token "
            "expires, and learns it only when Schwab refuses a refresh",
            hint="Add `refresh_issued_at = models.DateTimeField(null=True)` to the model.",
            obj=model, id="livedata_django.W001"))  # fmt: skip
    users = conf.get("TOKEN_USERS")
    if not isinstance(users, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in users.items()):
        errors.append(checks.Error("settings.LIVEDATA['TOKEN_USERS'] must map token keys to usernames, "
                                   "e.g. {'schwab': 'thor'}", id="livedata_django.E005"))  # fmt: skip
    return errors
