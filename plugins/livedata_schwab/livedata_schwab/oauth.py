"""``livedata auth <instance>``: the OAuth authorization-code login of one Schwab instance.

The browser flow serves the registered callback URL (https on 127.0.0.1, with a throw-away self-signed
certificate; the browser warns about it once), opens the Schwab login page, and takes the code from the
redirect. ``--manual`` prints the login URL and reads the whole redirect URL pasted on standard input.
Either way the ``state`` is checked, the code URL-decoded (it ends in ``@``, sent as ``%40``) and exchanged
at once: codes expire within about 30 seconds. The tokens are saved under the instance's token key (its
name), so each Schwab login of a configuration keeps its own.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import secrets
import ssl
import sys
import tempfile
import webbrowser
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO
from urllib.parse import parse_qs, urlencode, urlsplit

from livedata_core.errors import AuthError, ConfigError
from livedata_core.plugin_kit.tokens import TokenStore

from .client import make_http
from .settings import SchwabSettings
from .tokens import TOKEN_KEY, TokenRecord, TokenRefused, request_tokens

__all__ = ["CallbackServer", "authorize_url", "login", "parse_redirect", "self_signed_certificate"]



def _again(key: str) -> str:
    return f"run `livedata auth {key}` again"


def authorize_url(settings: SchwabSettings, state: str, redirect_uri: str | None = None) -> str:
    """The Schwab login page for this app, coming back to ``redirect_uri`` (default ``callback_url``, the server
    ``livedata auth`` runs on this machine; a web application passes its own callback) with ``state``."""
    key, _ = settings.credentials()
    query = urlencode({"response_type": "code", "client_id": key, "redirect_uri": redirect_uri or settings.callback_url,
                       "state": state})  # fmt: skip
    return f"{settings.auth_base_url.rstrip('/')}/authorize?{query}"


def parse_redirect(url: str, state: str, key: str = TOKEN_KEY) -> str:
    """The authorization code in the URL Schwab redirected to, URL-decoded. ``key`` names the instance in
    the messages.

    :raises AuthError: the URL is not a redirect with a code, carries an error, or a different ``state``.
    """
    url = url.strip()
    query = parse_qs(urlsplit(url).query)  # parse_qs decodes: "...%40" becomes "...@"
    if "error" in query:
        error = query["error"][0]
        description = query.get("error_description", [""])[0]
        raise AuthError(f"Schwab did not grant access ({error}{': ' + description if description else ''}); {_again(key)}")
    codes = query.get("code")
    if not codes or not codes[0]:
        raise AuthError(
            "that is not the redirect URL: paste the whole address your browser shows after logging in, "
            f"starting with your callback URL and containing '?code='; {_again(key)}"
        )
    if query.get("state", [None])[0] != state:
        raise AuthError(f"the redirect belongs to another login attempt (state does not match); {_again(key)} and use its URL")
    return codes[0]


def self_signed_certificate(host: str, directory: Path) -> tuple[Path, Path]:
    """Write a one-day self-signed certificate and key for ``host`` into ``directory``; return their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"livedata login callback {host}")])
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "callback.crt", directory / "callback.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>livedata</title></head><body style='font-family:sans-serif'>"
    "<h2>{title}</h2><p>{text}</p></body></html>"
)


class CallbackServer:
    """An HTTPS server on the loopback address of ``callback_url`` that catches Schwab's redirect."""

    def __init__(self, callback_url: str, log: logging.Logger, key: str = TOKEN_KEY) -> None:
        parts = urlsplit(callback_url)
        self.key = key
        self.host = parts.hostname or "127.0.0.1"
        if self.host == "localhost":
            self.host = "127.0.0.1"
        self.port = parts.port or 443
        self.log = log
        self._result: asyncio.Future[str] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    async def start(self) -> None:
        """Listen; ``ConfigError`` saying what to do if the port cannot be used."""
        if not ipaddress.ip_address(self.host).is_loopback:
            raise ConfigError(f"the callback host {self.host} is not this machine's loopback address")
        self._tmp = tempfile.TemporaryDirectory(prefix="livedata-schwab-")
        cert, key = self_signed_certificate(self.host, Path(self._tmp.name))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._result = asyncio.get_running_loop().create_future()
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port, ssl=context)
        except OSError as exc:
            self._cleanup()
            hint = " (ports below 1024 need root: register a callback like https://127.0.0.1:8182)" if self.port < 1024 else ""
            raise ConfigError(
                f"cannot listen on {self.host}:{self.port} for the login callback: {exc.strerror or exc}{hint}; "
                f"stop whatever uses that port, or use `livedata auth {self.key} --manual`"
            ) from None

    async def wait(self, timeout: float) -> str:
        """The full URL the browser was redirected to."""
        assert self._result is not None
        try:
            return await asyncio.wait_for(asyncio.shield(self._result), timeout)
        except TimeoutError:
            raise AuthError(
                f"no login arrived at the callback within {timeout:.0f} s. Check that the callback URL registered "
                "for your app at developer.schwab.com is exactly the callback_url setting, or use "
                f"`livedata auth {self.key} --manual`"
            ) from None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass  # headers are not needed
            parts = request_line.decode("latin-1").split()
            target = parts[1] if len(parts) >= 2 else "/"
            query = parse_qs(urlsplit(target).query)
            if ("code" in query or "error" in query) and self._result is not None and not self._result.done():
                self._result.set_result(f"https://{self.host}:{self.port}{target}")
                title, text, status = "Logged in", "livedata received the login. You can close this window.", "200 OK"
            else:
                title, text, status = "Waiting for Schwab", "This address only receives the Schwab login redirect.", "404 Not Found"
            body = _PAGE.format(title=title, text=text).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            self.log.debug("login callback connection failed: %s", type(exc).__name__)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


async def _read_stdin_line(prompt: str, out: TextIO) -> str:
    print(prompt, end="", file=out, flush=True)
    return await asyncio.to_thread(sys.stdin.readline)


async def login(
    settings: SchwabSettings,
    store: TokenStore,
    log: logging.Logger,
    manual: bool,
    *,
    read_line: Callable[[str, TextIO], Awaitable[str]] = _read_stdin_line,
    open_browser: Callable[[str], object] | None = None,
    out: TextIO | None = None,
    on_listening: Callable[[str], object] | None = None,
    key: str = TOKEN_KEY,
) -> TokenRecord:
    """Log in to Schwab and save the new tokens under ``key`` in ``store``.

    :param manual: print the URL and read the pasted redirect URL instead of serving the callback.
    :param key: the instance's token key (``ctx.token_key``, its name); only this key is written.
    :param on_listening: called with the login URL once the callback server listens (tests play the browser).
    """
    out = out or sys.stderr
    state = secrets.token_urlsafe(24)
    url = authorize_url(settings, state)
    if manual:
        print(
            "Open this URL in a browser and log in to Schwab:\n\n  " + url + "\n\n"
            "After logging in the browser goes to your callback URL (the page may fail to load: that is fine).\n"
            "Copy the whole address from the address bar and paste it here within 30 seconds.",
            file=out,
        )
        redirect = await read_line("Redirect URL> ", out)
    else:
        server = CallbackServer(settings.callback_url, log, key)
        await server.start()
        try:
            print(
                "Log in to Schwab in your browser. If no browser opens, open this URL:\n\n  " + url + "\n\n"
                "Your browser will warn that the certificate of 127.0.0.1 is not trusted: livedata made it for "
                "this login only; accept it to continue.",
                file=out,
            )
            if on_listening is not None:
                on_listening(url)
            if settings.open_browser:
                (open_browser or webbrowser.open)(url)
            redirect = await server.wait(settings.login_timeout)
        finally:
            await server.close()
    code = parse_redirect(redirect, state, key)
    async with make_http(settings) as http:
        try:
            record = await request_tokens(
                http,
                settings,
                {"grant_type": "authorization_code", "code": code, "redirect_uri": settings.callback_url},
            )
        except TokenRefused as exc:
            if exc.error == "invalid_client":
                hint = (
                    "check LIVEDATA_SCHWAB_APP_KEY and LIVEDATA_SCHWAB_APP_SECRET, and that the app's status at "
                    "developer.schwab.com is 'Ready For Use'"
                )
            else:
                hint = (
                    "the code was rejected: codes work once and expire about 30 seconds after the redirect, and "
                    f"callback_url ({settings.callback_url}) must match the app's registered callback exactly. "
                    f"{_again(key)} and finish promptly"
                )
            raise AuthError(f"{exc}. {hint}") from None
    store.save(key, record.to_dict())
    log.info("Schwab login complete (tokens saved under %r); refresh token valid for 7 days", key)
    return record
