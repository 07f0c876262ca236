"""The endpoints of the seed design. Every one needs a logged-in user with ``LIVEDATA["PERMISSION"]``; POSTs need
Django's CSRF token; errors are JSON ``{"error", "code"}`` (the OAuth callback, which the browser shows, answers
with pages)."""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import time
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import reverse

from livedata_core.channels import MAX_IDENTIFIER_LENGTH, validate_identifier
from livedata_core.redis_io.control import MAX_SYMBOLS, ControlClient, ControlError, NoRunner
from livedata_core.errors import (
    AuthError, BrokerError, ConfigError, InvalidIdentifier, LivedataError, LoginRequired, PublishError, RateLimited,
)
from livedata_schwab.tokens import TOKEN_KEY, TokenRefused

from . import conf, schwab
from .http import endpoint, json_error, page
from .tokens import ModelTokenStore

log = logging.getLogger("livedata.django.views")

SESSION_KEY = "livedata_schwab_oauth"
START_AGAIN = "Start the Schwab login again from Thor."


# -- Schwab OAuth in the browser -----------------------------------------------------------------------------


def _callback_url(request: HttpRequest) -> str:
    configured = conf.get("OAUTH_CALLBACK_URL")
    if configured:
        return configured
    namespace = request.resolver_match.namespace if request.resolver_match else "livedata"
    return request.build_absolute_uri(reverse(f"{namespace}:schwab-oauth-callback" if namespace else "schwab-oauth-callback"))


def _wants_page(request: HttpRequest) -> bool:
    accept = request.headers.get("Accept", "")
    return "text/html" in accept and "application/json" not in accept


@endpoint("POST")
def oauth_start(request: HttpRequest) -> HttpResponse:
    """Begin the login: remember a fresh ``state`` in this user's session and send the browser to Schwab.

    A form post (``Accept: text/html``) is redirected (303); anything else gets ``{"authorize_url": ...}``.
    """
    try:
        settings = schwab.schwab_settings()
    except ConfigError as exc:
        return json_error(500, f"livedata is not configured for Schwab: {exc}", "config")
    state = secrets.token_urlsafe(32)
    redirect_uri = _callback_url(request)
    request.session[SESSION_KEY] = {"state": state, "redirect_uri": redirect_uri, "started": time.time()}
    url = schwab.authorize_url(settings, state, redirect_uri)
    if _wants_page(request):
        return HttpResponseRedirect(url, status=303)
    return JsonResponse({"authorize_url": url})


@endpoint("GET", html=True)
def oauth_callback(request: HttpRequest) -> HttpResponse:
    """Schwab sends the browser back here: check the state against this session, trade the code for tokens at
    once and save them in the logged-in user's row. Every failure is a page saying what to do."""
    pending = request.session.pop(SESSION_KEY, None)  # one use only
    if not isinstance(pending, dict):
        return page(400, "No Schwab login in progress",
                    f"This browser session started no Schwab login, or its answer was already used. {START_AGAIN}")
    if time.time() - float(pending.get("started", 0)) > float(conf.get("OAUTH_MAX_AGE")):
        return page(400, "Schwab login expired", f"The login was started too long ago. {START_AGAIN}")
    query = request.GET
    if "error" in query:
        detail = query.get("error", "")[:100] + (f": {query.get('error_description', '')[:200]}" if query.get("error_description") else "")
        return page(400, "Schwab did not grant access", f"Schwab answered: {detail}. {START_AGAIN}")
    if not hmac.compare_digest(query.get("state", ""), str(pending.get("state", ""))):
        log.warning("Schwab OAuth callback for %s with a state that is not this session's", request.user.get_username())
        return page(403, "Schwab login refused",
                    f"This answer belongs to another login attempt (the state does not match). {START_AGAIN}")
    code = query.get("code", "")
    if not code:
        return page(400, "No authorization code", f"Schwab's answer carries no code. {START_AGAIN}")
    try:
        settings = schwab.schwab_settings()
        record = schwab.exchange_code(settings, code, pending["redirect_uri"])
    except ConfigError as exc:
        return page(500, "livedata is not configured for Schwab", str(exc))
    except TokenRefused as exc:
        hint = ("Check the app key and secret, and that the app is 'Ready For Use' at developer.schwab.com."
                if exc.error == "invalid_client" else
                "Codes work once and expire about 30 seconds after the redirect, and the callback URL must match "
                "the one registered for the app exactly.")  # fmt: skip
        return page(502, "Schwab refused the login", f"{exc}. {hint} {START_AGAIN}")
    except (BrokerError, RateLimited) as exc:
        return page(502, "Schwab could not be reached", f"{exc}. {START_AGAIN}")
    ModelTokenStore(user=request.user).save(TOKEN_KEY, record.to_dict())
    log.info("Schwab login saved for %s", request.user.get_username())
    done = conf.get("OAUTH_DONE_URL")
    if done:
        return HttpResponseRedirect(done)
    return page(200, "Schwab login complete",
                f"The Schwab tokens of {request.user.get_username()} are saved; a running livedata_run uses them "
                "at its next token refresh. You can close this window.")


# -- Schwab accounts, positions, balances -------------------------------------------------------------------


def _fetch(request: HttpRequest, kind: str, account_id: str | None = None) -> HttpResponse:
    if account_id is not None:
        try:
            validate_identifier(account_id)
        except InvalidIdentifier as exc:
            return json_error(400, f"account id: {exc}", "invalid")
    try:
        items = schwab.fetch(kind, ModelTokenStore(user=request.user), account_id)
    except LivedataError as exc:
        return _broker_error(exc)
    body: dict[str, Any] = {kind: items}
    if account_id is not None:
        body = {"account_id": account_id, **body, "published": len(items)}
    return JsonResponse(body)


def _broker_error(exc: LivedataError) -> JsonResponse:
    if isinstance(exc, schwab.UnknownAccount):
        return json_error(404, str(exc), "unknown_account")
    if isinstance(exc, LoginRequired):
        return json_error(409, f"{exc}; or log in through POST schwab/oauth/start/", "schwab_login_required")
    if isinstance(exc, RateLimited):
        response = json_error(429, str(exc), "rate_limited")
        if exc.retry_after:
            response["Retry-After"] = str(int(exc.retry_after + 0.999))
        return response
    if isinstance(exc, AuthError):
        return json_error(502, str(exc), "schwab_auth")
    if isinstance(exc, PublishError):
        return json_error(503, f"fetched, but not published: {exc}", "redis")
    if isinstance(exc, ConfigError):
        return json_error(500, f"livedata is not configured for Schwab: {exc}", "config")
    return json_error(502, str(exc), "broker_error")


@endpoint("GET")
def accounts(request: HttpRequest) -> HttpResponse:
    """``{"accounts": [...]}``: the accounts the user's Schwab login can see."""
    return _fetch(request, "accounts")


@endpoint("GET")
def positions(request: HttpRequest, account_id: str) -> HttpResponse:
    """Fetch one account's positions, publish them to Redis, return ``{"account_id", "positions", "published"}``."""
    return _fetch(request, "positions", account_id)


@endpoint("GET")
def balances(request: HttpRequest, account_id: str) -> HttpResponse:
    """Fetch one account's balances, publish them to Redis, return ``{"account_id", "balances", "published"}``."""
    return _fetch(request, "balances", account_id)


# -- the running runner's feed ------------------------------------------------------------------------------


def _control() -> ControlClient:
    redis = conf.runner_config().redis
    return ControlClient(redis.url, redis.prefix, timeout=float(conf.get("CONTROL_TIMEOUT")))


def _feed_broker(broker: str) -> JsonResponse | None:
    allowed = tuple(conf.get("FEED_BROKERS"))
    if broker not in allowed:
        return json_error(404, f"no feed {broker!r} here; feeds: {', '.join(allowed) or 'none'}", "unknown_feed")
    return None


def _no_runner(exc: Exception) -> JsonResponse:
    return json_error(503, f"no livedata runner answers: {exc}. Start it with `manage.py livedata_run`", "no_runner")


@endpoint("GET")
def feed_status(request: HttpRequest, broker: str) -> HttpResponse:
    """The running runner's status of the feed: ``{"broker", "status": {...}}``; 503 when no runner answers."""
    if (refused := _feed_broker(broker)) is not None:
        return refused
    try:
        with _control() as control:
            status = control.status()
    except NoRunner as exc:
        return _no_runner(exc)
    except (PublishError, ControlError, ConfigError) as exc:
        return json_error(503, str(exc), "redis" if isinstance(exc, PublishError) else "no_runner")
    snapshot = (status.get("brokers") or {}).get(broker)
    if status.get("stale"):
        return json_error(503, f"no livedata runner answers; its last status was written at {status.get('now')}",
                          "no_runner", last_status=snapshot)  # fmt: skip
    if snapshot is None:
        running = ", ".join(sorted(status.get("brokers") or {})) or "none"
        return json_error(409, f"the runner does not run {broker!r}; it runs: {running}", "feed_not_running")
    return JsonResponse({"broker": broker, "pid": status.get("pid"), "status": snapshot})


def _symbols(request: HttpRequest) -> list[str]:
    """The ``symbols`` of a JSON body (a list, or a comma-separated string) or of a form; ``ValueError`` if bad."""
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"null")
        except ValueError:
            raise ValueError("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ValueError('the body must be a JSON object like {"symbols": ["AAPL"]}')
        raw = data.get("symbols")
    else:
        raw = ",".join(request.POST.getlist("symbols"))
    if isinstance(raw, str):
        raw = [s.strip() for s in raw.split(",") if s.strip()]
    if not isinstance(raw, list) or not raw:
        raise ValueError('name the symbols: {"symbols": ["AAPL", "MSFT"]} (or a form field symbols=AAPL,MSFT)')
    if len(raw) > MAX_SYMBOLS:
        raise ValueError(f"at most {MAX_SYMBOLS} symbols at once, got {len(raw)}")
    for i, symbol in enumerate(raw):
        if not isinstance(symbol, str) or not symbol.strip():
            raise ValueError(f"symbols[{i}] must be a non-empty string")
        if len(symbol) > MAX_IDENTIFIER_LENGTH:
            raise ValueError(f"symbols[{i}] is longer than {MAX_IDENTIFIER_LENGTH} characters")
    return [s.strip() for s in raw]


def _change(request: HttpRequest, broker: str, command: str) -> HttpResponse:
    if (refused := _feed_broker(broker)) is not None:
        return refused
    try:
        symbols = _symbols(request)
    except ValueError as exc:
        return json_error(400, str(exc), "invalid")
    try:
        with _control() as control:
            result = getattr(control, command)(broker, symbols)
    except NoRunner as exc:
        return _no_runner(exc)
    except ControlError as exc:
        return json_error(400, f"the runner refused: {exc}", "refused")
    except PublishError as exc:
        return json_error(503, str(exc), "redis")
    log.info("%s %s %s for %s", command, broker, ",".join(symbols)[:200], request.user.get_username())
    return JsonResponse({"broker": broker, **result})


@endpoint("POST")
def feed_subscribe(request: HttpRequest, broker: str) -> HttpResponse:
    """Stream more symbols: ``{"symbols": [...]}`` -> ``{"broker", "added", "already"}``."""
    return _change(request, broker, "subscribe")


@endpoint("POST")
def feed_unsubscribe(request: HttpRequest, broker: str) -> HttpResponse:
    """Stop streaming symbols: ``{"symbols": [...]}`` -> ``{"broker", "removed", "not_subscribed"}``."""
    return _change(request, broker, "unsubscribe")
