"""The seed's endpoints in the test project: Schwab's OAuth in the browser against the fake Schwab, the account
endpoints publishing to Redis, and who may call them."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

from SchwabLiveData.models import SchwabToken

from thor_browser import CALLBACK, START, browser, follow_schwab, web_login


def test_oauth_start_and_callback_store_the_tokens_in_the_users_row(make_user, fake_schwab, schwab_config):
    thor = make_user("thor")
    client = browser(thor)
    started = client.post(START, HTTP_ACCEPT="application/json")
    url = started.json()["authorize_url"]
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(fake_schwab.base + "/v1/oauth/authorize?")
    assert query["client_id"] == [schwab_config["app_key"]] and query["response_type"] == ["code"]
    assert query["redirect_uri"] == ["http://testserver" + CALLBACK]

    back = follow_schwab(fake_schwab, url)
    assert back["state"] == query["state"][0] and back["code"].endswith("@")
    done = client.get(CALLBACK, back)
    assert done.status_code == 200 and b"Schwab login complete" in done.content

    row = SchwabToken.objects.get(user=thor)
    assert row.access_token in fake_schwab.access_tokens and row.refresh_token == fake_schwab.refresh_token
    assert abs(row.access_expires_at.timestamp() - (time.time() + 1800)) < 60
    [exchange] = [r for r in fake_schwab.requests if r["path"] == "/v1/oauth/token"]
    assert exchange["form"]["redirect_uri"] == "http://testserver" + CALLBACK  # the same as in the login URL

    again = client.get(CALLBACK, back)  # the answer works once
    assert again.status_code == 400 and b"No Schwab login in progress" in again.content


def test_a_form_post_is_sent_on_to_schwab(make_user, fake_schwab, schwab_config):
    client = browser(make_user("thor"))
    answer = client.post(START, HTTP_ACCEPT="text/html,application/xhtml+xml")
    assert answer.status_code == 303 and answer["Location"].startswith(fake_schwab.base + "/v1/oauth/authorize?")


def test_every_failed_callback_is_a_clear_page_and_saves_nothing(make_user, fake_schwab, schwab_config):
    thor = make_user("thor")
    client = browser(thor)

    assert b"started no Schwab login" in client.get(CALLBACK, {"code": "x", "state": "y"}).content

    client.post(START, HTTP_ACCEPT="application/json")
    forged = client.get(CALLBACK, {"code": "C0.forged@", "state": "someone-elses"})
    assert forged.status_code == 403 and b"belongs to another login attempt" in forged.content

    client.post(START, HTTP_ACCEPT="application/json")
    state = client.session["livedata_schwab_oauth"]["state"]
    denied = client.get(CALLBACK, {"error": "access_denied", "error_description": "user cancelled", "state": state})
    assert denied.status_code == 400 and b"access_denied: user cancelled" in denied.content

    client.post(START, HTTP_ACCEPT="application/json")
    state = client.session["livedata_schwab_oauth"]["state"]
    refused = client.get(CALLBACK, {"code": "C0.expired-code@", "state": state})
    assert refused.status_code == 502 and b"Schwab refused the login" in refused.content
    assert b"invalid_grant" in refused.content and b"C0.expired-code" not in refused.content

    other = make_user("other")
    stolen = browser(other)  # someone else's session cannot use thor's login answer
    client.post(START, HTTP_ACCEPT="application/json")
    back = follow_schwab(fake_schwab, _authorize_url(client))
    assert stolen.get(CALLBACK, back).status_code == 400
    assert not SchwabToken.objects.exists()


def _authorize_url(client: Client) -> str:
    from livedata_django import schwab

    pending = client.session["livedata_schwab_oauth"]
    return schwab.authorize_url(schwab.schwab_settings(), pending["state"], pending["redirect_uri"])


def test_the_account_endpoints_fetch_publish_and_return_json(make_user, fake_schwab, schwab_config, published):
    thor = make_user("thor")
    client = browser(thor)
    assert client.get("/api/schwab/accounts/").json()["code"] == "schwab_login_required"  # no login yet: 409
    web_login(client, fake_schwab)

    accounts = client.get("/api/schwab/accounts/")
    assert accounts.status_code == 200
    assert {a["account_id"] for a in accounts.json()["accounts"]} == {"12345678", "87654321"}

    positions = client.get("/api/schwab/accounts/12345678/positions/")
    assert positions.status_code == 200
    body = positions.json()
    assert body["account_id"] == "12345678" and body["published"] == 2
    assert {(p["symbol"], p["quantity"]) for p in body["positions"]} == {("AAPL", 10.0), ("TSLA", -5.0)}
    [aapl] = published.wait_for("positions", "12345678", where=lambda p: p.symbol == "AAPL")
    assert aapl.quantity == 10.0

    balances = client.get("/api/schwab/accounts/87654321/balances/")
    assert balances.status_code == 200 and balances.json()["balances"][0]["account_id"] == "87654321"
    assert published.wait_for("balances", "87654321")

    unknown = client.get("/api/schwab/accounts/99999999/positions/")
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_account"
    assert "99999999" in unknown.json()["error"]
    bad = client.get("/api/schwab/accounts/a*b/positions/")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"


ENDPOINTS = [
    ("post", START),
    ("get", CALLBACK),
    ("get", "/api/schwab/accounts/"),
    ("get", "/api/schwab/accounts/12345678/positions/"),
    ("get", "/api/schwab/accounts/12345678/balances/"),
    ("get", "/api/feed/tos/status/"),
    ("post", "/api/feed/tos/subscribe/"),
    ("post", "/api/feed/tos/unsubscribe/"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_unauthenticated_unpermitted_and_cross_site_requests_are_refused(make_user, schwab_config, method, path):
    anonymous = getattr(Client(), method)(path)
    assert anonymous.status_code == 401
    unpermitted = getattr(browser(make_user("guest", permitted=False)), method)(path)
    assert unpermitted.status_code == 403
    if path != CALLBACK:
        assert anonymous.json()["code"] == "not_authenticated" and unpermitted.json()["code"] == "permission_denied"
    if method == "post":
        no_token = Client(enforce_csrf_checks=True)
        no_token.force_login(make_user("thor"))
        refused = no_token.post(path, {"symbols": "AAPL"})
        assert refused.status_code == 403 and refused.json()["code"] == "csrf"
        assert getattr(browser(make_user("thor2")), "get")(path).status_code == 405


def test_the_permission_is_a_setting(make_user, settings, schwab_config, fake_schwab):
    settings.LIVEDATA = {**settings.LIVEDATA, "PERMISSION": None}  # any logged-in user
    client = browser(make_user("guest", permitted=False))
    assert client.post(START, HTTP_ACCEPT="application/json").status_code == 200
