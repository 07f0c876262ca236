"""TLS to Redis: the ``ssl_*`` query arguments of a ``rediss://`` URL, the files they name, and what a failed
handshake means.

The arguments are redis-py's own names, which redis-py's ``from_url`` hands to its connections as they are, so
every redis-py client and the publisher's own connection (:mod:`livedata_core.redis_io.publisher.resp`, through
:meth:`TlsOptions.ssl_context`) read the same URL the same way.
"""

from __future__ import annotations

import os
import ssl
from urllib.parse import parse_qs, urlsplit

import attrs

from ..errors import ConfigError

__all__ = ["TLS_ARGUMENTS", "TlsOptions", "tls_hint", "tls_options"]

TLS_ARGUMENTS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
_CERT_REQS = {"required": True, "optional": True, "none": False}  # a client treats "optional" as "required"
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}  # redis-py's to_bool
_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


@attrs.frozen
class TlsOptions:
    """The TLS arguments of a ``rediss://`` URL (redis-py's names in brackets).

    :ivar ca_certs: (``ssl_ca_certs``) a PEM bundle of CAs to trust besides the system's, for a private CA.
    :ivar certfile: (``ssl_certfile``) the client certificate (PEM), for a server that requires one.
    :ivar keyfile: (``ssl_keyfile``) its private key, unencrypted PEM; not needed if ``certfile`` holds it.
    :ivar verify: ``False`` with ``ssl_cert_reqs=none``: the server's certificate is not checked at all.
    :ivar check_hostname: (``ssl_check_hostname``) the certificate must name the URL's host.
    """

    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    verify: bool = True
    check_hostname: bool = True

    def ssl_context(self) -> ssl.SSLContext:
        """The context redis-py builds from the same arguments: the system's CAs plus ``ca_certs``."""
        context = ssl.create_default_context()
        self._load_into(context)
        return context

    def _load_into(self, context: ssl.SSLContext) -> None:
        context.check_hostname = self.verify and self.check_hostname
        context.verify_mode = ssl.CERT_REQUIRED if self.verify else ssl.CERT_NONE
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile, password=_no_passphrase)
        if self.ca_certs:
            context.load_verify_locations(cafile=self.ca_certs)


class _Encrypted(ssl.SSLError):
    """The key needs a passphrase (an ``OSError``, as every other failure to load a TLS file)."""


def _no_passphrase() -> str:
    # Without a callback OpenSSL asks for the passphrase on the terminal, which an unattended runner cannot answer.
    raise _Encrypted


def tls_options(query: dict[str, str], where: str) -> TlsOptions:
    """The options in a URL's decoded ``query``, its files checked; ``ConfigError`` starting with ``where``."""
    reqs = query.get("ssl_cert_reqs", "required")
    if reqs not in _CERT_REQS:
        raise ConfigError(f"{where}: ssl_cert_reqs must be required or none, was {reqs!r}")
    check = query.get("ssl_check_hostname", "true")
    if check.lower() not in _BOOLEANS:
        raise ConfigError(f"{where}: ssl_check_hostname must be true or false, was {check!r}")
    options = TlsOptions(
        ca_certs=query.get("ssl_ca_certs"), certfile=query.get("ssl_certfile"), keyfile=query.get("ssl_keyfile"),
        verify=_CERT_REQS[reqs], check_hostname=_BOOLEANS[check.lower()],
    )  # fmt: skip
    _check_files(options, where)
    return options


def _check_files(options: TlsOptions, where: str) -> None:
    """Refuse a file that cannot serve, naming its argument: at start, not on the first connect."""
    if options.keyfile and not options.certfile:
        raise ConfigError(f"{where}: ssl_keyfile needs ssl_certfile (the client certificate the key belongs to)")
    if options.ca_certs:
        _read(where, "ssl_ca_certs", options.ca_certs, _CERTIFICATE, "holds no PEM certificate")
    if options.certfile:
        _read(where, "ssl_certfile", options.certfile, _CERTIFICATE, "holds no PEM certificate")
        if options.keyfile:
            key_name, key_path, missing = "ssl_keyfile", options.keyfile, "holds no PEM private key"
        else:
            key_name, key_path, missing = "ssl_certfile", options.certfile, "holds no private key (add ssl_keyfile)"
        key = _read(where, key_name, key_path, b"PRIVATE KEY-----", missing)
        if b"ENCRYPTED" in key:
            raise ConfigError(_encrypted(where, key_name, key_path))
    # Let OpenSSL read them as the connection will; a bare context skips loading the system's CAs.
    try:
        attrs.evolve(options, verify=True)._load_into(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    except _Encrypted:  # encrypted in a form the text check above did not see
        raise ConfigError(_encrypted(where, "ssl_keyfile", options.keyfile or options.certfile)) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"{where}: ssl_keyfile {options.keyfile!r} does not belong to the certificate in "
                f"ssl_certfile {options.certfile!r}"
            ) from None
        raise ConfigError(
            f"{where}: the TLS files could not be loaded ({exc.reason or exc}): check ssl_ca_certs, ssl_certfile "
            "and ssl_keyfile"
        ) from None


def _encrypted(where: str, name: str, path: str | None) -> str:
    return (
        f"{where}: {name} {path!r} is encrypted; livedata runs unattended and cannot ask for its passphrase: use an "
        "unencrypted copy readable only by the user that runs livedata (openssl pkey -in KEY -out KEY.plain)"
    )


def _read(where: str, name: str, path: str, marker: bytes, missing: str) -> bytes:
    shown = f"{where}: {name} {path!r}"
    if os.path.isdir(path):
        raise ConfigError(f"{shown} is a directory; it must name a PEM file")
    try:
        with open(path, "rb") as file:
            data = file.read(10_000_000)
    except FileNotFoundError:
        hint = " (~ is not expanded: write the full path)" if path.startswith("~") else ""
        raise ConfigError(f"{shown} does not exist{hint}") from None
    except OSError as exc:
        raise ConfigError(f"{shown} cannot be read: {exc.strerror or exc}") from None
    if marker not in data:
        raise ConfigError(f"{shown} {missing}")
    return data


def tls_hint(url: str, error: str) -> str:
    """What to change in a ``rediss://`` URL, judged from the text of the error its connection failed with.

    A sentence in brackets with a leading space, to append to the message; ``""`` for other URLs and for errors
    TLS has no part in (nothing listening, a refused password).
    """
    if not url.lower().startswith("rediss://"):
        return ""
    text = error.lower()
    if "certificate verify failed" in text:
        if "mismatch" in text:
            return (" (the server's certificate does not name this host: connect by a name it holds, or add "
                    "ssl_check_hostname=false to the URL)")  # fmt: skip
        if "expired" in text:
            return " (the server's certificate has expired)"
        return (" (the server's certificate is not signed by a CA this client trusts: name the CA that signed it "
                "with ?ssl_ca_certs=/path/ca.pem in the URL)")  # fmt: skip
    try:
        has_cert = "ssl_certfile" in parse_qs(urlsplit(url).query)
    except ValueError:
        has_cert = False
    closed = any(s in text for s in ("eof occurred", "reset by peer", "closed the connection"))  # a refused client cert
    if "certificate required" in text or (closed and not has_cert):
        return (" (the server requires a client certificate: add "
                "ssl_certfile=/path/client.crt&ssl_keyfile=/path/client.key to the URL)")  # fmt: skip
    if "unknown ca" in text:
        return (" (the server does not trust the client certificate in ssl_certfile: a CA it does not know "
                "signed it)")  # fmt: skip
    if "bad certificate" in text or closed:
        return " (the server closed the TLS connection: it may not accept the client certificate in ssl_certfile)"
    if "refused" in text or "password" in text or "auth" in text:
        return ""
    return " (rediss:// needs a Redis that speaks TLS on that port; use redis:// for a plain one)"
