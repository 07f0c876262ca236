"""A livedata token store in a Django model of the application's own: one row per user.

The model needs a ``user`` (one-to-one with the user model, or a unique foreign key) and ``access_token``,
``refresh_token`` and ``access_expires_at`` (a ``DateTimeField``, or an integer of milliseconds since the
epoch). Optional columns it uses when they exist:

* ``refresh_issued_at`` (same types): when the refresh token was issued. Schwab refuses a refresh token 7 days
  after the login that issued it; with this column livedata warns from day 5 and says when it expires.
  Without it livedata cannot know, and learns only when Schwab refuses a refresh (then logs in again are asked
  for); each store says so once in the log.
* ``token_type`` and ``scope`` (text).

A record is saved under a key, the broker instance's name (``"schwab"``; the ``tos`` broker reads the same
key). Which user's row a key means is ``LIVEDATA["TOKEN_USERS"]`` (``{"schwab": "thor"}``); with no entry for
the key, the only row of the table is used, and with several rows the store refuses, naming the setting. A
store made with ``user=`` reads and writes that user's row for every key (the web login, ``livedata_auth
--user``).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.utils import timezone

from livedata_core.errors import ConfigError

from . import conf
from .orm import call_blocking

__all__ = ["OPTIONAL_FIELDS", "REQUIRED_FIELDS", "ModelTokenStore", "token_model"]

log = logging.getLogger("livedata.django.tokens")

REQUIRED_FIELDS = ("user", "access_token", "refresh_token", "access_expires_at")
OPTIONAL_FIELDS = ("refresh_issued_at", "token_type", "scope")
TIME_FIELDS = ("access_expires_at", "refresh_issued_at")
SETTING = "LIVEDATA['TOKEN_USERS']"
_WARNED_ISSUE_TIME: set[str] = set()  # models whose unknown refresh-token issue time was logged (once a process)


def token_model(label: str | None = None) -> type[models.Model]:
    """The model named by ``label`` or ``LIVEDATA["TOKEN_MODEL"]`` (``"app_label.ModelName"``)."""
    label = label or conf.get("TOKEN_MODEL")
    if not label:
        raise ImproperlyConfigured(
            "settings.LIVEDATA['TOKEN_MODEL'] is not set: name the model holding the Schwab tokens, "
            "for example 'SchwabLiveData.SchwabToken'"
        )
    try:
        return apps.get_model(label)
    except (LookupError, ValueError) as exc:
        raise ImproperlyConfigured(f"settings.LIVEDATA['TOKEN_MODEL'] = {label!r}: {exc}") from None


def _field(model: type[models.Model], name: str) -> models.Field | None:
    try:
        return model._meta.get_field(name)  # type: ignore[return-value]
    except Exception:
        return None


def _to_ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if timezone.is_naive(value):
            value = timezone.make_aware(value)
        return int(value.timestamp() * 1000)
    return int(value)


def _from_ms(field: models.Field, ms: Any) -> Any:
    if ms is None:
        return None
    if isinstance(field, models.DateTimeField):
        value = dt.datetime.fromtimestamp(int(ms) / 1000, tz=dt.timezone.utc)
        return value if timezone.is_aware(timezone.now()) else timezone.make_naive(value)
    return int(ms)


class ModelTokenStore:
    """Load and save livedata token records in a Django model (see the module docstring for the model).

    Safe to call from sync code and from inside an event loop (the runner calls it there): the ORM call then
    runs on a worker thread (:func:`livedata_django.orm.call_blocking`).

    :param model: the model or its ``"app_label.ModelName"``; default ``LIVEDATA["TOKEN_MODEL"]``.
    :param users: token key -> username; default ``LIVEDATA["TOKEN_USERS"]``.
    :param user: read and write this user's row for every key (a user object or a username).
    :param using: the database alias; default ``LIVEDATA["TOKEN_DATABASE"]``, else the router's choice.
    """

    def __init__(self, model: type[models.Model] | str | None = None, *, users: dict[str, str] | None = None,
                 user: Any = None, using: str | None = None) -> None:  # fmt: skip
        self.model = model if isinstance(model, type) else token_model(model)
        self.users = dict(conf.get("TOKEN_USERS") if users is None else users)
        self.user = user
        self.using = using if using is not None else conf.get("TOKEN_DATABASE")
        self.fields = {name: f for name in REQUIRED_FIELDS + OPTIONAL_FIELDS if (f := _field(self.model, name))}
        missing = [name for name in REQUIRED_FIELDS if name not in self.fields]
        if missing:
            raise ImproperlyConfigured(f"{self.model._meta.label} has no {', '.join(missing)} field(s); a token "
                                       f"model needs {', '.join(REQUIRED_FIELDS)}")  # fmt: skip

    def __repr__(self) -> str:
        who = f"user={self._username(self.user)!r}" if self.user is not None else f"users={self.users!r}"
        return f"ModelTokenStore({self.model._meta.label}, {who})"

    @property
    def knows_refresh_issue_time(self) -> bool:
        """Whether the model has a ``refresh_issued_at`` column (for the 7-day expiry warning)."""
        return "refresh_issued_at" in self.fields

    # -- the TokenStore protocol ---------------------------------------------------------------------------

    def load(self, key: str) -> dict[str, Any] | None:
        """The record saved under ``key``, or ``None`` when the user's row is missing or holds no tokens."""
        return call_blocking(self._load, key)

    def save(self, key: str, tokens: dict[str, Any]) -> None:
        """Write ``tokens`` (a token record) into the row of the user ``key`` means, creating the row if needed."""
        call_blocking(self._save, key, dict(tokens))

    def delete(self, key: str) -> None:
        """Delete the row of the user ``key`` means (nothing if there is none)."""
        call_blocking(self._delete, key)

    def check(self, key: str) -> str:
        """The username whose row serves ``key``; ``ConfigError`` saying what to set if none can be chosen."""
        return call_blocking(self._check, key)

    # -- on a thread that may use the ORM --------------------------------------------------------------------

    def _rows(self) -> models.QuerySet:
        manager = self.model._default_manager
        return manager.db_manager(self.using).all() if self.using else manager.all()

    def _username(self, user: Any) -> str:
        return user if isinstance(user, str) else user.get_username()

    def _user_filter(self, key: str, *, creating: bool) -> tuple[dict[str, Any], Any]:
        """The filter selecting ``key``'s row and the user object (``None`` if not needed to find the row)."""
        user_model = get_user_model()
        name = self.user if self.user is not None else self.users.get(key)
        if name is not None and not isinstance(name, str):
            return {"user": name}, name
        if name is None:
            rows = list(self._rows().values_list("pk", flat=True)[:2])
            if len(rows) == 1:
                return {"pk": rows[0]}, None
            if not rows and not creating:
                return {"pk": None}, None
            if rows:
                raise ConfigError(f"{SETTING} names no user for the token key {key!r}, and {self.model._meta.label} "
                                  f"has several rows: add {{{key!r}: '<username>'}} to {SETTING}")  # fmt: skip
            raise ConfigError(
                f"{SETTING} names no user for the token key {key!r}, and {self.model._meta.label} has no row yet: "
                f"log in first (the web login, or `manage.py livedata_auth {key} --user NAME`), or add "
                f"{{{key!r}: '<username>'}} to {SETTING}"
            )
        manager = user_model._default_manager.db_manager(self.using) if self.using else user_model._default_manager
        try:
            user = manager.get_by_natural_key(name)
        except user_model.DoesNotExist:
            raise ConfigError(f"{SETTING} maps the token key {key!r} to the user {name!r}, who does not exist"
                              if self.user is None else f"there is no user {name!r}") from None
        return {"user": user}, user

    def _check(self, key: str) -> str:
        where, user = self._user_filter(key, creating=True)
        if user is not None:
            return self._username(user)
        row = self._rows().select_related("user").get(**where)
        return row.user.get_username()

    def _load(self, key: str) -> dict[str, Any] | None:
        where, _ = self._user_filter(key, creating=False)
        if where == {"pk": None}:
            return None
        row = self._rows().filter(**where).first()
        if row is None or not row.access_token or not row.refresh_token:
            return None
        record: dict[str, Any] = {
            "access_token": row.access_token,
            "refresh_token": row.refresh_token,
            "access_expires_at": _to_ms(row.access_expires_at),
            "refresh_issued_at": None,
            "token_type": getattr(row, "token_type", None) or "Bearer",
            "scope": getattr(row, "scope", None),
        }
        issued = _to_ms(getattr(row, "refresh_issued_at", None))
        if issued is None:
            self._warn_issue_time_unknown(key)  # the record says None: unknown, and livedata status says so
        record["refresh_issued_at"] = issued
        return record

    def _warn_issue_time_unknown(self, key: str) -> None:
        if self.model._meta.label in _WARNED_ISSUE_TIME:
            return
        _WARNED_ISSUE_TIME.add(self.model._meta.label)
        reason = ("has no refresh_issued_at column" if not self.knows_refresh_issue_time
                  else "holds no refresh_issued_at for this row (saved before the column existed)")  # fmt: skip
        log.warning(
            "%s %s: livedata cannot know when the refresh token of %r expires (7 days after its login), so it "
            "cannot warn before then and learns it only when Schwab refuses a refresh. Add "
            "`refresh_issued_at = models.DateTimeField(null=True)` to the model to get the warning",
            self.model._meta.label, reason, key,
        )

    def _save(self, key: str, tokens: dict[str, Any]) -> None:
        where, _ = self._user_filter(key, creating=True)
        values: dict[str, Any] = {}
        for name, field in self.fields.items():
            if name == "user" or name not in tokens:
                continue
            values[name] = _from_ms(field, tokens[name]) if name in TIME_FIELDS else tokens[name]
        if "user" in where:
            self._rows().update_or_create(defaults=values, **where)  # a row lock while it updates
        else:
            self._rows().filter(**where).update(**values)

    def _delete(self, key: str) -> None:
        where, _ = self._user_filter(key, creating=False)
        if where != {"pk": None}:
            self._rows().filter(**where).delete()
