"""The test project (``thor_project`` and the seed's ``SchwabLiveData`` app) and the fixtures the tests share.

Django is configured here, when pytest collects these tests, and never through ``DJANGO_SETTINGS_MODULE``: the
rest of the suite runs in the same session and must see no difference (pytest-django only acts once settings
are configured).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

if not settings.configured:
    from thor_project import settings as _project

    settings.configure(**{name: getattr(_project, name) for name in dir(_project) if name.isupper()})
    django.setup()

from thor_project import routers  # noqa: E402
from thor_project.settings import POSTGRES_SKIP_REASON  # noqa: E402

REPO = HERE.parents[2]
SCHWAB_FAKE = REPO / "plugins" / "livedata_schwab" / "tests" / "conftest.py"


def _load_schwab_fake():
    """The fake Schwab of the Schwab plugin's tests (HTTPS, OAuth and the Trader API), loaded from its file."""
    if not SCHWAB_FAKE.exists():
        return None
    spec = importlib.util.spec_from_file_location("livedata_django_tests_fake_schwab", SCHWAB_FAKE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


schwab_fake = _load_schwab_fake()
if schwab_fake is not None:
    ca = schwab_fake.ca
    fake_schwab = schwab_fake.fake_schwab
else:  # pragma: no cover - only outside a clone of the repository

    @pytest.fixture
    def fake_schwab():
        pytest.skip(f"the fake Schwab ({SCHWAB_FAKE}) is part of the repository's Schwab plugin tests")


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_collection_modifyitems(items):
    """Keep the session's test order. pytest-django sorts every collected test as Django's runner does (database
    tests first) once settings are configured, which this conftest does for the whole session; the rest of the
    suite must run as it does without these tests. Innermost wrapper: outer ones (``--lf``/``--ff``) still apply."""
    position = {id(item): index for index, item in enumerate(items)}
    yield
    items[:] = sorted(items, key=lambda item: position.get(id(item), len(position)))


DATABASES = [
    pytest.param("default", id="sqlite", marks=pytest.mark.django_db(transaction=True)),
    pytest.param(
        "postgres",
        id="postgres",
        marks=[
            pytest.mark.django_db(transaction=True, databases=["default", "postgres"]),
            pytest.mark.skipif(POSTGRES_SKIP_REASON is not None, reason=str(POSTGRES_SKIP_REASON)),
        ],
    ),
]


@pytest.fixture(params=DATABASES)
def database(request):
    """Run the test on SQLite, and again on PostgreSQL when one is reachable: every query goes there."""
    routers.TARGET = request.param
    yield request.param
    routers.TARGET = "default"


@pytest.fixture
def make_user(database):
    """``make_user(name, permitted=True)``: a user, holding ``livedata_django.use_livedata`` if permitted."""
    from django.contrib.auth.models import Permission, User

    def make(name: str = "thor", permitted: bool = True) -> User:
        user = User.objects.create_user(name, password="pw")
        if permitted:
            user.user_permissions.add(Permission.objects.get(codename="use_livedata"))
        return User.objects.get(pk=user.pk)  # fresh: permissions are cached per object

    return make


@pytest.fixture
def schwab_config(fake_schwab, redis_server, monkeypatch, tmp_path, settings):
    """``LIVEDATA["CONFIG"]`` pointing at the fake Schwab and the test's Redis; returns the Schwab table."""
    monkeypatch.setenv("LIVEDATA_TOKEN_DIR", str(tmp_path / "token-locks"))  # lock files never in the real home
    table = {
        "app_key": schwab_fake.APP_KEY,
        "app_secret": schwab_fake.APP_SECRET,
        "api_base_url": fake_schwab.base + "/trader/v1",
        "auth_base_url": fake_schwab.base + "/v1/oauth",
        "ca_file": fake_schwab.ca_file,
        "retry_backoff": 0.01,
        "retry_backoff_max": 0.05,
    }
    settings.LIVEDATA = {
        **settings.LIVEDATA,
        "CONFIG": {"redis": {"url": redis_server.url}, "brokers": {"schwab": table}},
    }
    return table
