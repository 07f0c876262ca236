"""Thor's settings, as docs/thor.md tells a Thor developer to write them, plus what the tests need.

SQLite always; PostgreSQL as the alias ``postgres`` when one answers at 127.0.0.1:5432 (trust auth, database
``test``, user ``postgres`` or ``root``). Tests pick the database through :mod:`thor_project.routers`.
"""

import os
import tempfile

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "thor_project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "SchwabLiveData",
    "livedata_django",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

LIVEDATA = {
    "TOKEN_MODEL": "SchwabLiveData.SchwabToken",
}


def _postgres():
    """The settings of a reachable PostgreSQL, or ``(None, reason)``."""
    try:
        import psycopg
    except ImportError:
        return None, "psycopg is not installed"
    problems = []
    for user in ("postgres", "root"):
        try:
            psycopg.connect(host="127.0.0.1", port=5432, dbname="test", user=user, connect_timeout=2).close()
        except Exception as exc:  # any failure means: not this user
            problems.append(f"{user}: {type(exc).__name__}: {str(exc).strip()[:120]}")
            continue
        return {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "127.0.0.1",
            "PORT": "5432",
            "NAME": "test",
            "USER": user,
            # Per process: several test runs may share one PostgreSQL.
            "TEST": {"NAME": f"test_livedata_django_{os.getpid()}"},
        }, None
    return None, "no PostgreSQL answers at 127.0.0.1:5432 (" + "; ".join(problems) + ")"


DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("THOR_TEST_SQLITE", ":memory:"),
        # A file, as in a deployment: threads (the runner's token store, livedata_listen's handlers) then wait for
        # each other's locks instead of failing at once as in SQLite's shared in-memory cache.
        "TEST": {"NAME": os.path.join(tempfile.gettempdir(), f"livedata_django_test_{os.getpid()}.sqlite3")},
    },
}
if os.environ.get("THOR_TEST_POSTGRES", "1") == "1":
    POSTGRES, POSTGRES_SKIP_REASON = _postgres()
else:
    POSTGRES, POSTGRES_SKIP_REASON = None, "THOR_TEST_POSTGRES=0"
if POSTGRES is not None:
    DATABASES["postgres"] = POSTGRES
DATABASE_ROUTERS = ["thor_project.routers.OneDatabase"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"livedata": {"handlers": ["console"], "level": "INFO"}},
}
