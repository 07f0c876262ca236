"""A Thor user's browser in the tests: logged in, sending Django's CSRF token, and logging in at the fake Schwab."""

from __future__ import annotations

import ssl
from urllib.parse import parse_qs, urlsplit

import httpx
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client

START = "/api/schwab/oauth/start/"
CALLBACK = "/api/schwab/oauth/callback/"


def browser(user) -> Client:
    """A logged-in browser that sends Django's CSRF token the way a page's JavaScript does."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    token = _get_new_csrf_string()
    client.cookies["csrftoken"] = token
    client.defaults["HTTP_X_CSRFTOKEN"] = token
    return client


def follow_schwab(fake_schwab, authorize_url: str) -> dict[str, str]:
    """What the user's browser does at Schwab: log in, and be sent back with ``code`` and ``state``."""
    with httpx.Client(verify=ssl.create_default_context(cafile=fake_schwab.ca_file)) as http:
        answer = http.get(authorize_url)
    assert answer.status_code == 302
    return {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["Location"]).query).items()}


def web_login(client: Client, fake_schwab) -> tuple[dict, object]:
    started = client.post(START, HTTP_ACCEPT="application/json")
    assert started.status_code == 200, started.content
    back = follow_schwab(fake_schwab, started.json()["authorize_url"])
    return back, client.get(CALLBACK, back)
