"""Tokens in Thor's own table: the seed's SchwabToken model, from sync code and from inside the runner's loop."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from django.core import checks
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connections

from livedata_core.errors import ConfigError
from livedata_django import tokens
from livedata_django.tokens import ModelTokenStore
from livedata_schwab.tokens import TokenRecord
from SchwabLiveData.models import SchwabToken, SchwabTokenWithIssueTime
from thor_project.settings import POSTGRES_SKIP_REASON

NOW_MS = int(time.time() * 1000)


def record(access="AT-1", refresh="RT-1", expires_in_s=1800, issued_days_ago=0.0, **extra):
    return TokenRecord(access_token=access, refresh_token=refresh, access_expires_at=NOW_MS + int(expires_in_s * 1000),
                       refresh_issued_at=NOW_MS - int(issued_days_ago * 86_400_000), **extra).to_dict()  # fmt: skip


def test_the_seed_model_holds_a_record_and_says_what_it_cannot_know(make_user, caplog):
    thor = make_user("thor")
    store = ModelTokenStore("SchwabLiveData.SchwabToken", users={"schwab": "thor"})
    saved = record(issued_days_ago=2)
    store.save("schwab", saved)

    row = SchwabToken.objects.get(user=thor)
    assert (row.access_token, row.refresh_token) == ("AT-1", "RT-1")
    assert int(row.access_expires_at.timestamp() * 1000) == saved["access_expires_at"]

    tokens._WARNED_ISSUE_TIME.clear()
    with caplog.at_level(logging.WARNING, logger="livedata.django.tokens"):
        loaded = store.load("schwab")
        store.load("schwab")
        ModelTokenStore("SchwabLiveData.SchwabToken", users={"schwab": "thor"}).load("schwab")
    # What the Schwab plugin reads from it: no KeyError('refresh_issued_at') any more.
    parsed = TokenRecord.from_dict(loaded)
    assert (parsed.access_token, parsed.refresh_token, parsed.access_expires_at) == ("AT-1", "RT-1", saved["access_expires_at"])
    assert parsed.refresh_issued_at is None  # unknown, and said so: not an invented time
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings  # once a process
    assert "has no refresh_issued_at column" in warnings[0] and "cannot know when the refresh token" in warnings[0]
    assert "AT-1" not in warnings[0] and "RT-1" not in warnings[0]


def test_optional_columns_keep_the_refresh_tokens_issue_time(make_user, caplog):
    thor = make_user("thor")
    store = ModelTokenStore(SchwabTokenWithIssueTime, users={"schwab": "thor"})
    saved = record(issued_days_ago=6, scope="api")
    with caplog.at_level(logging.WARNING, logger="livedata.django.tokens"):
        store.save("schwab", saved)
        assert store.load("schwab") == saved
    assert caplog.records == []
    row = SchwabTokenWithIssueTime.objects.get(user=thor)
    assert row.access_expires_at == saved["access_expires_at"]  # an integer column holds milliseconds
    assert int(row.refresh_issued_at.timestamp() * 1000) == saved["refresh_issued_at"]


def test_the_store_works_inside_an_event_loop_where_the_orm_refuses(make_user):
    make_user("thor")
    store = ModelTokenStore(users={"schwab": "thor"})

    async def inside_the_runner():
        with pytest.raises(SynchronousOnlyOperation):  # what a plain ORM store runs into here
            SchwabToken.objects.count()
        store.save("schwab", record(access="AT-loop"))
        return store.load("schwab")

    assert asyncio.run(inside_the_runner())["access_token"] == "AT-loop"
    assert store.load("schwab")["access_token"] == "AT-loop"  # and from sync code


def test_each_token_key_is_the_row_of_the_user_the_setting_names(make_user, settings):
    thor, ira = make_user("thor"), make_user("ira")
    settings.LIVEDATA = {**settings.LIVEDATA, "TOKEN_USERS": {"schwab": "thor", "schwab_ira": "ira"}}
    store = ModelTokenStore()
    store.save("schwab", record(access="AT-thor"))
    store.save("schwab_ira", record(access="AT-ira"))
    assert SchwabToken.objects.get(user=thor).access_token == "AT-thor"
    assert SchwabToken.objects.get(user=ira).access_token == "AT-ira"
    assert store.load("schwab")["access_token"] == "AT-thor"
    assert store.load("schwab_ira")["access_token"] == "AT-ira"
    assert ModelTokenStore(user=ira).load("schwab")["access_token"] == "AT-ira"  # a store bound to one user
    store.delete("schwab_ira")
    assert store.load("schwab_ira") is None and store.load("schwab")["access_token"] == "AT-thor"


def test_without_a_mapping_the_only_row_serves_and_several_rows_are_refused(make_user, settings):
    thor, ira = make_user("thor"), make_user("ira")
    store = ModelTokenStore()
    assert store.load("schwab") is None  # no row yet: nobody logged in
    with pytest.raises(ConfigError, match=r"LIVEDATA\['TOKEN_USERS'\] names no user for the token key 'schwab'"):
        store.save("schwab", record())  # whose row would it be?
    ModelTokenStore(user=thor).save("schwab", record(access="AT-thor"))
    assert store.load("schwab")["access_token"] == "AT-thor"
    assert store.check("schwab") == "thor"
    ModelTokenStore(user="ira").save("schwab", record(access="AT-ira"))
    with pytest.raises(ConfigError, match=r"has several rows: add \{'schwab': '<username>'\} to LIVEDATA\['TOKEN_USERS'\]"):
        store.load("schwab")
    settings.LIVEDATA = {**settings.LIVEDATA, "TOKEN_USERS": {"schwab": "nobody"}}
    with pytest.raises(ConfigError, match="maps the token key 'schwab' to the user 'nobody', who does not exist"):
        ModelTokenStore().load("schwab")


def test_a_row_without_tokens_means_no_login(make_user):
    thor = make_user("thor")
    SchwabToken.objects.create(user=thor, access_token="", refresh_token="", access_expires_at="2026-01-01T00:00Z")
    assert ModelTokenStore().load("schwab") is None


def test_the_schwab_client_refreshes_into_the_row_from_inside_its_loop(make_user, fake_schwab, schwab_config):
    from livedata_schwab.client import SchwabClient
    from livedata_schwab.settings import SchwabSettings

    thor = make_user("thor")
    store = ModelTokenStore(user=thor)
    store.save("schwab", {**record(access="AT-expired", refresh=fake_schwab.refresh_token, expires_in_s=-1),
                          "refresh_issued_at": NOW_MS - 86_400_000})  # fmt: skip

    async def go():
        client = SchwabClient(SchwabSettings(**schwab_config), store)
        try:
            return await client.access_token()
        finally:
            await client.aclose()

    token = asyncio.run(go())
    assert token.startswith("AT-secret-access-") and fake_schwab.refreshes == 1
    assert SchwabToken.objects.get(user=thor).access_token == token


@pytest.mark.skipif(POSTGRES_SKIP_REASON is not None, reason=str(POSTGRES_SKIP_REASON))
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_calls_from_the_loop_leave_no_database_connection_open(make_user):
    make_user("thor")
    store = ModelTokenStore(user="thor")
    store.save("schwab", record())
    count = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"

    def connections_now():
        with connections["postgres"].cursor() as cursor:
            cursor.execute(count)
            return cursor.fetchone()[0]

    before = connections_now()

    async def many():
        for _ in range(20):
            store.load("schwab")

    asyncio.run(many())
    # A closed connection's server process ends a moment after the client closed it.
    deadline = time.monotonic() + 5
    while connections_now() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert connections_now() == before


def test_the_system_check_names_what_the_seed_model_lacks(settings):
    messages = [m for m in checks.run_checks() if m.id and m.id.startswith("livedata_django")]
    assert [m.id for m in messages] == ["livedata_django.W001"]
    assert "SchwabLiveData.SchwabToken has no refresh_issued_at field" in messages[0].msg
    settings.LIVEDATA = {"TOKEN_MODEL": "SchwabLiveData.Missing"}
    [error] = [m for m in checks.run_checks() if m.id and m.id.startswith("livedata_django")]
    assert error.id == "livedata_django.E001" and "SchwabLiveData.Missing" in error.msg
