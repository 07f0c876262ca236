"""Token stores: where broker tokens live. Secrets never leave through logs, reprs or exceptions.

A token record is a small JSON-able dict saved under a key: the name of the instance it logs in (the
``[brokers.NAME]`` table, ``"schwab"`` or ``"schwab_ira"``), so each login keeps its own tokens.
Three stores ship with core:

* :class:`KeyringTokenStore`: the operating system's keyring (macOS Keychain, Secret Service, Windows
  Credential Locker), one entry per key under the service ``livedata``.
* :class:`FileTokenStore`: one JSON file per key, mode 0600, written atomically (temp file + ``os.replace``),
  in ``$LIVEDATA_TOKEN_DIR`` or ``~/.config/livedata/tokens``.
* :class:`MemoryTokenStore`: this process only (tests, demos).

:func:`~livedata_core.plugin_kit.tokens.resolve_token_store` picks one for an instance (asking the plugins first, so it lives
beside the plugin loader; this module imports no plugin machinery). :func:`token_lock` gives a lock shared by every process
on the machine, so two processes using one store never refresh the same tokens over each other.

An API-key broker declares the credentials it needs (:class:`Credential`, in ``BrokerInfo.credentials``);
``livedata auth <instance>`` saves them in the instance's record (:func:`save_credentials`) and the plugin reads
them with ``ctx.credentials()`` (:func:`load_credentials`): from ``LIVEDATA_<INSTANCE>_<NAME>`` in the environment
if set, else from the store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from ..errors import ConfigError, LoginRequired, PluginError

try:  # POSIX only; elsewhere the lock is per process (see TokenLock)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CREDENTIALS_FIELD",
    "Credential",
    "Credentials",
    "FileTokenStore",
    "KeyringTokenStore",
    "MemoryTokenStore",
    "TokenLock",
    "TokenStore",
    "default_token_dir",
    "credential_env",
    "keyring_usable",
    "load_credentials",
    "save_credentials",
    "token_lock",
]

log = logging.getLogger("livedata.tokens")

KEYRING_SERVICE = "livedata"
STORE_ENV = "LIVEDATA_TOKEN_STORE"
DIR_ENV = "LIVEDATA_TOKEN_DIR"


@runtime_checkable
class TokenStore(Protocol):
    """Load, save and delete one broker's token record (a JSON-able dict) under a key.

    A store may also offer ``lock(key)`` returning a context manager that serialises token refreshes across
    processes (a database row lock, for example); :func:`token_lock` uses it when present.
    """

    def load(self, key: str) -> dict[str, Any] | None: ...

    def save(self, key: str, tokens: dict[str, Any]) -> None: ...

    def delete(self, key: str) -> None: ...


def _check_key(key: str) -> str:
    # Keys become file names; refuse anything that could escape the directory.
    if not isinstance(key, str) or not key or not all(c.isalnum() or c in "-_." for c in key) or key.startswith("."):
        raise ValueError(f"token key {key!r} is not allowed: use letters, digits, '-', '_' and '.'")
    return key


class MemoryTokenStore:
    """A token store that keeps tokens in this process only (tests, demos)."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, Any]] = {}

    def load(self, key: str) -> dict[str, Any] | None:
        value = self._data.get(key)
        return dict(value) if value is not None else None

    def save(self, key: str, tokens: dict[str, Any]) -> None:
        self._data[key] = dict(tokens)

    def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def __repr__(self) -> str:
        return f"MemoryTokenStore(keys={sorted(self._data)})"


def default_token_dir() -> Path:
    """``$LIVEDATA_TOKEN_DIR`` if set, else ``~/.config/livedata/tokens``."""
    env = os.environ.get(DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".config" / "livedata" / "tokens"


class FileTokenStore:
    """Tokens as JSON files, one per key, readable by the owner only.

    The directory is created with mode 0700 and each file written with mode 0600 to a temporary file in the
    same directory, then moved over the old one with ``os.replace``: a reader sees the old record or the new
    one, never half a file, even if the writer dies mid-write.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else default_token_dir()

    def path(self, key: str) -> Path:
        """The file holding ``key``."""
        return self.directory / f"{_check_key(key)}.json"

    def load(self, key: str) -> dict[str, Any] | None:
        path = self.path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            log.warning("token file %s is not valid JSON; ignoring it (log in again to replace it)", path)
            return None
        return data if isinstance(data, dict) else None

    def save(self, key: str, tokens: dict[str, Any]) -> None:
        path = self.path(key)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.directory)
        try:
            # mkstemp creates the file with mode 0600, so the secret is never readable by others.
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(tokens, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(key).unlink()

    def lock(self, key: str) -> TokenLock:
        """A cross-process lock for refreshing ``key``, in this store's directory."""
        return TokenLock(self.directory / f"{_check_key(key)}.lock")

    def __repr__(self) -> str:
        return f"FileTokenStore(directory={str(self.directory)!r})"


class KeyringTokenStore:
    """Tokens in the system keyring: one password entry per key, under ``service``, holding JSON."""

    def __init__(self, service: str = KEYRING_SERVICE) -> None:
        self.service = service

    def load(self, key: str) -> dict[str, Any] | None:
        import keyring

        text = keyring.get_password(self.service, _check_key(key))
        if not text:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            log.warning("keyring entry %s/%s is not valid JSON; ignoring it", self.service, key)
            return None
        return data if isinstance(data, dict) else None

    def save(self, key: str, tokens: dict[str, Any]) -> None:
        import keyring

        keyring.set_password(self.service, _check_key(key), json.dumps(tokens))

    def delete(self, key: str) -> None:
        import keyring
        from keyring.errors import PasswordDeleteError

        with contextlib.suppress(PasswordDeleteError):
            keyring.delete_password(self.service, _check_key(key))

    def __repr__(self) -> str:
        return f"KeyringTokenStore(service={self.service!r})"


class TokenLock:
    """An exclusive lock on a file, held by one process (and one thread) at a time.

    Uses ``fcntl.flock``, which the kernel releases if the process dies, so a crash never leaves a stale lock.
    Without ``fcntl`` (Windows) it only serialises threads of this process.
    Use as a context manager, or call :meth:`acquire` / :meth:`release` (from a worker thread in async code:
    ``await asyncio.to_thread(lock.acquire)``).
    """

    _thread_locks: dict[str, threading.Lock] = {}
    _guard = threading.Lock()

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        with self._guard:
            self._thread_lock = self._thread_locks.setdefault(str(self.path.resolve()), threading.Lock())
        self._fd: int | None = None

    def acquire(self, timeout: float | None = None) -> None:
        """Block until the lock is ours; ``TimeoutError`` after ``timeout`` seconds if given."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._thread_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError(f"timed out waiting for token lock {self.path}")
        try:
            if fcntl is None:  # pragma: no cover
                return
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline is not None else 0))
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:  # type: ignore[operator]
                            raise TimeoutError(f"timed out waiting for token lock {self.path}") from None
                        time.sleep(0.02)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        """Give the lock back."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._thread_lock.release()

    def __enter__(self) -> TokenLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"TokenLock({str(self.path)!r})"


def token_lock(store: TokenStore, key: str) -> Any:
    """A context manager (with ``acquire``/``release``) that serialises refreshing ``key`` across processes.

    The store's own ``lock(key)`` if it has one (the file store, an application's database store), else a
    lock file in the token directory. After taking it, load the record again: another process may have
    refreshed it while we waited.
    """
    own = getattr(store, "lock", None)
    if callable(own):
        return own(key)
    return TokenLock(default_token_dir() / f"{_check_key(key)}.lock")


def keyring_usable() -> bool:
    """Whether the keyring has a backend that really stores secrets (not the fail or null backend)."""
    try:
        import keyring
        from keyring.backends import chainer, fail
    except Exception:  # pragma: no cover - keyring is a dependency, but may be broken
        return False
    try:
        backend = keyring.get_keyring()
    except Exception:
        return False
    backends = list(getattr(backend, "backends", ())) if isinstance(backend, chainer.ChainerBackend) else [backend]
    usable = []
    for b in backends:
        module = type(b).__module__
        if isinstance(b, fail.Keyring) or module.endswith(".null") or module.endswith(".fail"):
            continue
        try:
            if getattr(b, "priority", 1) <= 0:
                continue
        except Exception:
            continue
        usable.append(b)
    return bool(usable)


# -- credentials of API-key brokers ---------------------------------------------------------------------------

CREDENTIALS_FIELD = "credentials"
"""The entry of an instance's token record that holds its credentials (``{"credentials": {"api_key": ...}}``); a
plugin that saves other tokens under the same key keeps this entry."""

_CREDENTIAL_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


@attrs.frozen
class Credential:
    """One credential an API-key broker needs (like llm's ``needs_key``), declared in ``BrokerInfo.credentials``.

    :param name: lower-case, ``[a-z][a-z0-9_]*``: its key in the stored record and the end of its environment
        variable (``api_secret`` of instance ``alpaca``: ``LIVEDATA_ALPACA_API_SECRET``).
    :param prompt: what ``livedata auth`` asks for (``"API key id"``); default: the name in words.
    :param secret: typed without echo (``getpass``); ``False`` for an id the user may see as typed. Either way
        the value is never printed or logged.
    """

    name: str
    prompt: str = ""
    secret: bool = True

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not _CREDENTIAL_NAME.fullmatch(self.name):
            raise PluginError(f"credential name {self.name!r} is not allowed: use lower-case letters, digits and '_', "
                              "starting with a letter")  # fmt: skip

    @property
    def label(self) -> str:
        """What to call it in prompts and messages."""
        return self.prompt or self.name.replace("_", " ")


def as_credentials(declared: Iterable[Credential | str]) -> tuple[Credential, ...]:
    """``BrokerInfo.credentials`` as :class:`Credential` objects (a plain string is a secret of that name)."""
    if isinstance(declared, (str, Credential)):
        declared = (declared,)
    out = tuple(c if isinstance(c, Credential) else Credential(c) for c in declared)
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise PluginError(f"credentials {names} name one credential twice")
    return out


def credential_env(instance: str, name: str) -> str:
    """The environment variable of credential (or setting) ``name`` of ``instance``: ``LIVEDATA_<INSTANCE>_<NAME>``."""
    return f"LIVEDATA_{instance.upper()}_{name.upper()}"


class Credentials(Mapping[str, str]):
    """An instance's credentials by name (``creds["api_key"]``). Its repr names them, never their values."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Credentials({', '.join(self._values)}; values hidden)"


def load_credentials(
    declared: Iterable[Credential], store: TokenStore | None, key: str, instance: str, env: Mapping[str, str] | None = None
) -> Credentials:
    """Each declared credential from ``LIVEDATA_<INSTANCE>_<NAME>`` in ``env`` (default ``os.environ``) if set,
    else from the ``credentials`` entry of the record ``key`` in ``store``.

    :raises LoginRequired: one is missing; the message names the command and the variables, never a value.
    """
    env = os.environ if env is None else env
    record = store.load(key) if store is not None else None
    stored = record.get(CREDENTIALS_FIELD) if isinstance(record, dict) else None
    stored = stored if isinstance(stored, dict) else {}
    values: dict[str, str] = {}
    missing: list[Credential] = []
    for credential in declared:
        value = (env.get(credential_env(instance, credential.name)) or "").strip() or stored.get(credential.name)
        if isinstance(value, str) and value:
            values[credential.name] = value
        else:
            missing.append(credential)
    if missing:
        raise LoginRequired(
            f"{instance}: no {' and '.join(c.label for c in missing)}: run `livedata auth {instance}` to store "
            f"{'them' if len(missing) > 1 else 'it'}, or set {' and '.join(credential_env(instance, c.name) for c in missing)}"
        )
    return Credentials(values)


def save_credentials(store: TokenStore, key: str, values: Mapping[str, str]) -> None:
    """Save ``values`` as the ``credentials`` entry of the record ``key``, keeping the record's other entries."""
    record = store.load(key)
    record = dict(record) if isinstance(record, dict) else {}
    record[CREDENTIALS_FIELD] = dict(values)
    store.save(key, record)
