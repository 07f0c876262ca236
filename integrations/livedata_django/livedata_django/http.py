"""What every endpoint shares: JSON errors, Django authentication, the permission, allowed methods and CSRF."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.html import format_html
from django.views.decorators.csrf import csrf_exempt

from . import conf

__all__ = ["endpoint", "json_error", "page"]


def json_error(status: int, message: str, code: str, **extra: Any) -> JsonResponse:
    """``{"error": message, "code": code, ...}`` with HTTP ``status``."""
    return JsonResponse({"error": message, "code": code, **extra}, status=status)


def page(status: int, title: str, text: str) -> HttpResponse:
    """A small HTML page for the browser steps of the OAuth login (``text`` is escaped)."""
    body = format_html(
        "<!doctype html><html><head><meta charset='utf-8'><title>{}</title></head>"
        "<body style='font-family:sans-serif'><h2>{}</h2><p>{}</p></body></html>",
        title, title, text,
    )
    return HttpResponse(body, status=status, content_type="text/html; charset=utf-8")


class _JsonCsrf(CsrfViewMiddleware):
    """Django's own CSRF check, answering a refusal in JSON (or the caller's page format)."""

    def __init__(self, refuse: Callable[[str], HttpResponse]) -> None:
        super().__init__(lambda request: HttpResponse())
        self._refuse = refuse

    def _reject(self, request: HttpRequest, reason: str) -> HttpResponse:
        return self._refuse(reason)


def endpoint(*methods: str, html: bool = False) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Allow only ``methods``; require a logged-in user holding ``LIVEDATA["PERMISSION"]``; check CSRF on POST.

    Refusals are JSON (``html=True``: pages, for the steps a browser shows): 405, 401 (not logged in), 403 (no
    permission, or the CSRF check failed).
    """

    def refuse(status: int, message: str, code: str) -> HttpResponse:
        return page(status, "Refused", message) if html else json_error(status, message, code)

    def wrap(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @csrf_exempt  # checked below with Django's own middleware, so that a refusal can be JSON
        @functools.wraps(view)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                response = refuse(405, f"{request.method} is not allowed here; use {' or '.join(methods)}", "method")
                response["Allow"] = ", ".join(methods)
                return response
            user = getattr(request, "user", None)
            if user is None or not user.is_authenticated:
                return refuse(401, "log in first: this endpoint needs an authenticated user", "not_authenticated")
            permission = conf.get("PERMISSION")
            if permission and not user.has_perm(permission):
                return refuse(403, f"you need the permission {permission!r}", "permission_denied")
            if request.method not in ("GET", "HEAD", "OPTIONS", "TRACE"):
                csrf = _JsonCsrf(lambda reason: refuse(403, f"CSRF check failed: {reason}", "csrf"))
                csrf.process_request(request)  # reads the CSRF cookie, also where the middleware is not installed
                refused = csrf.process_view(request, None, (), {})
                if refused is not None:
                    return refused
            return view(request, *args, **kwargs)

        return checked

    return wrap
