"""The URLs a broker plugin connects to: unencrypted schemes only to this machine.

A plain ``http://`` or ``ws://`` URL sends what travels on it (an app secret, tokens, a gateway session) across
the network in clear text, so plugins refuse one unless it points at this machine (a local gateway, a test
server): :func:`refuse_plain_text_off_this_machine`.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..redis_io.url import mask_url

__all__ = ["is_loopback_host", "refuse_plain_text_off_this_machine"]

_PLAIN = {"http": "https", "ws": "wss"}


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names this machine: ``localhost`` (or a name under ``.localhost``) or a loopback address."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_plain_text_off_this_machine(key: str, url: str, *, carries: str, hint: str = "") -> None:
    """Raise ``ConfigError`` if ``url`` is ``http://`` or ``ws://`` to a host other than this machine.

    :param key: the setting, as the message names it (``api_base_url``).
    :param carries: what would cross the network in clear text (``"the gateway session"``).
    :param hint: added after the encrypted scheme in the advice (``"(with ca_bundle for ...)"``).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _PLAIN or is_loopback_host(parts.hostname or ""):
        return
    secure = _PLAIN[scheme]
    raise ConfigError(
        f"{key} {mask_url(url)!r} is unencrypted {scheme}:// to {parts.hostname}, which would send {carries} "
        f"across the network in clear text; use {secure}://{' ' + hint if hint else ''}, or {scheme}:// only for "
        "a server on this machine (localhost, 127.0.0.1, ::1)"
    )
