"""Token stores and credentials, and :func:`resolve_token_store`, which picks an instance's store.

The stores and credentials are defined in :mod:`~livedata_core.plugin_kit.token_stores` and importable from here
too (``from livedata_core.plugin_kit.tokens import FileTokenStore``). Choosing a store asks the plugins first (the
``token_store`` hook), so this module sits above the plugin loader, which sits above the stores: no import cycle.
"""

from __future__ import annotations

import logging
import os

from ..errors import ConfigError
from .plugins import get_plugin_manager
from .token_stores import (
    CREDENTIALS_FIELD,
    DIR_ENV,
    KEYRING_SERVICE,
    STORE_ENV,
    Credential,
    Credentials,
    FileTokenStore,
    KeyringTokenStore,
    MemoryTokenStore,
    TokenLock,
    TokenStore,
    as_credentials,
    credential_env,
    default_token_dir,
    keyring_usable,
    load_credentials,
    save_credentials,
    token_lock,
)

__all__ = [
    "CREDENTIALS_FIELD",
    "Credential",
    "Credentials",
    "FileTokenStore",
    "KeyringTokenStore",
    "MemoryTokenStore",
    "TokenLock",
    "TokenStore",
    "as_credentials",
    "credential_env",
    "default_token_dir",
    "keyring_usable",
    "load_credentials",
    "resolve_token_store",
    "save_credentials",
    "token_lock",
]

log = logging.getLogger("livedata.tokens")


def resolve_token_store(instance: str, plugin: str | None = None) -> TokenStore:
    """The token store for the instance ``instance`` of ``plugin`` (by default the plugin named like it).

    In order: the first plugin answering the ``token_store`` hook, told the instance and the plugin (an
    application keeping tokens in its own database, which may map an instance to one of its users); else
    ``$LIVEDATA_TOKEN_STORE`` (``keyring``, ``file`` or ``memory``); else the keyring when a real backend exists;
    else the file store. Logs one line saying which. The instance's tokens live under the key ``instance``.
    """
    store = get_plugin_manager().hook.token_store(broker=instance, instance=instance, plugin=plugin or instance)
    if store is not None:
        log.info("tokens for %s: %r (from a plugin)", instance, store)
        return store
    choice = os.environ.get(STORE_ENV, "").strip().lower()
    if choice:
        if choice == "keyring":
            if not keyring_usable():
                raise ConfigError(
                    f"{STORE_ENV}=keyring but no usable keyring backend is installed; "
                    f"install one (for example `pip install keyrings.alt`) or set {STORE_ENV}=file"
                )
            chosen: TokenStore = KeyringTokenStore()
        elif choice == "file":
            chosen = FileTokenStore()
        elif choice == "memory":
            chosen = MemoryTokenStore()
        else:
            raise ConfigError(f"{STORE_ENV}={choice!r} is not one of keyring, file, memory")
        log.info("tokens for %s: %r (%s=%s)", instance, chosen, STORE_ENV, choice)
        return chosen
    if keyring_usable():
        chosen = KeyringTokenStore()
        log.info("tokens for %s: %r (system keyring)", instance, chosen)
    else:
        chosen = FileTokenStore()
        log.info("tokens for %s: %r (no usable keyring backend)", instance, chosen)
    return chosen
