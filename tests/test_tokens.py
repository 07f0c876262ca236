"""Token stores: file permissions and atomic writes, keyring round trip, store resolution, cross-process lock."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import stat
import time

import keyring
import pytest
from keyring.backend import KeyringBackend

from livedata_core import hookimpl, tokens
from livedata_core.plugin_kit import token_stores
from livedata_core.errors import ConfigError
from livedata_core.plugin_kit.plugins import register_plugin, unregister_plugin
from livedata_core.plugin_kit.tokens import (
    FileTokenStore,
    KeyringTokenStore,
    MemoryTokenStore,
    TokenLock,
    resolve_token_store,
    token_lock,
)

SECRET = {"access_token": "AT-very-secret-123", "refresh_token": "RT-very-secret-456", "n": 1}


class DictKeyring(KeyringBackend):
    """A working in-memory keyring backend, so tests never touch the machine's keyring."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.data.get((service, username))

    def set_password(self, service, username, password):
        self.data[(service, username)] = password

    def delete_password(self, service, username):
        from keyring.errors import PasswordDeleteError

        if (service, username) not in self.data:
            raise PasswordDeleteError(username)
        del self.data[(service, username)]


@pytest.fixture
def dict_keyring():
    before = keyring.get_keyring()
    backend = DictKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(before)


@pytest.fixture
def no_keyring():
    from keyring.backends import fail

    before = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        yield
    finally:
        keyring.set_keyring(before)


def test_file_store_round_trip_with_owner_only_permissions(tmp_path):
    store = FileTokenStore(tmp_path / "tokens")
    assert store.load("schwab") is None
    store.save("schwab", SECRET)
    assert store.load("schwab") == SECRET
    path = tmp_path / "tokens" / "schwab.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tokens").stat().st_mode) == 0o700
    store.delete("schwab")
    assert store.load("schwab") is None
    store.delete("schwab")  # deleting twice is fine


def test_file_store_write_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    store = FileTokenStore(tmp_path)
    store.save("schwab", SECRET)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(token_stores.json, "dump", boom)
    with pytest.raises(OSError):
        store.save("schwab", {"access_token": "new"})
    monkeypatch.undo()
    assert store.load("schwab") == SECRET  # the old record survived the failed write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["schwab.json"]


def test_file_store_ignores_corrupt_file_and_refuses_path_keys(tmp_path, caplog):
    store = FileTokenStore(tmp_path)
    (tmp_path / "schwab.json").write_text("{not json")
    assert store.load("schwab") is None
    assert "not valid JSON" in caplog.text
    for bad in ("../evil", "a/b", "", ".hidden"):
        with pytest.raises(ValueError):
            store.save(bad, {})


def test_file_store_directory_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVEDATA_TOKEN_DIR", str(tmp_path / "env-dir"))
    store = FileTokenStore()
    store.save("x", {"a": 1})
    assert (tmp_path / "env-dir" / "x.json").exists()


def test_reprs_never_show_tokens(tmp_path, dict_keyring):
    stores = [FileTokenStore(tmp_path), KeyringTokenStore(), MemoryTokenStore()]
    for store in stores:
        store.save("schwab", SECRET)
        text = repr(store)
        assert "very-secret" not in text, text


def test_keyring_store_round_trip(dict_keyring):
    store = KeyringTokenStore()
    assert store.load("schwab") is None
    store.save("schwab", SECRET)
    assert json.loads(dict_keyring.data[("livedata", "schwab")]) == SECRET
    assert store.load("schwab") == SECRET
    store.delete("schwab")
    store.delete("schwab")
    assert store.load("schwab") is None


def test_resolve_prefers_a_usable_keyring(dict_keyring, monkeypatch, caplog):
    monkeypatch.delenv("LIVEDATA_TOKEN_STORE", raising=False)
    with caplog.at_level(logging.INFO, logger="livedata.tokens"):
        store = resolve_token_store("schwab")
    assert isinstance(store, KeyringTokenStore)
    assert [r.getMessage() for r in caplog.records if r.name == "livedata.tokens"] == [
        "tokens for schwab: KeyringTokenStore(service='livedata') (system keyring)"
    ]


def test_resolve_falls_back_to_file_without_keyring(no_keyring, monkeypatch, tmp_path):
    monkeypatch.delenv("LIVEDATA_TOKEN_STORE", raising=False)
    monkeypatch.setenv("LIVEDATA_TOKEN_DIR", str(tmp_path))
    store = resolve_token_store("schwab")
    assert isinstance(store, FileTokenStore)
    assert store.directory == tmp_path


def test_resolve_honours_env_choice(no_keyring, monkeypatch):
    monkeypatch.setenv("LIVEDATA_TOKEN_STORE", "memory")
    assert isinstance(resolve_token_store("schwab"), MemoryTokenStore)
    monkeypatch.setenv("LIVEDATA_TOKEN_STORE", "file")
    assert isinstance(resolve_token_store("schwab"), FileTokenStore)
    monkeypatch.setenv("LIVEDATA_TOKEN_STORE", "keyring")
    with pytest.raises(ConfigError, match="no usable keyring"):
        resolve_token_store("schwab")
    monkeypatch.setenv("LIVEDATA_TOKEN_STORE", "vault")
    with pytest.raises(ConfigError, match="not one of keyring, file, memory"):
        resolve_token_store("schwab")


def test_resolve_asks_plugins_first(monkeypatch):
    monkeypatch.setenv("LIVEDATA_TOKEN_STORE", "file")
    app_store = MemoryTokenStore()

    class ThorStore:
        __name__ = "thor-token-store"

        @hookimpl
        def token_store(self, broker):
            return app_store if broker == "schwab" else None

    plugin = ThorStore()
    register_plugin(plugin, name="thor-token-store")
    try:
        assert resolve_token_store("schwab") is app_store
        assert isinstance(resolve_token_store("other"), FileTokenStore)
    finally:
        unregister_plugin(plugin)


def _hold_lock(path: str, ready, release) -> None:
    with TokenLock(path):
        ready.set()
        release.wait(10)


def test_token_lock_excludes_other_processes(tmp_path):
    path = tmp_path / "schwab.lock"
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(path), ready, release))
    proc.start()
    try:
        assert ready.wait(10)
        with pytest.raises(TimeoutError):
            TokenLock(path).acquire(timeout=0.1)
        release.set()
        started = time.monotonic()
        lock = TokenLock(path)
        lock.acquire(timeout=10)
        lock.release()
        assert time.monotonic() - started < 5
    finally:
        release.set()
        proc.join(10)


def test_token_lock_uses_store_lock_or_token_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVEDATA_TOKEN_DIR", str(tmp_path / "dir"))
    file_lock = token_lock(FileTokenStore(tmp_path / "files"), "schwab")
    assert file_lock.path == tmp_path / "files" / "schwab.lock"
    mem_lock = token_lock(MemoryTokenStore(), "schwab")
    assert mem_lock.path == tmp_path / "dir" / "schwab.lock"
    with mem_lock:
        assert (tmp_path / "dir" / "schwab.lock").exists()
        assert stat.S_IMODE((tmp_path / "dir" / "schwab.lock").stat().st_mode) == 0o600
    # Released: it can be taken again at once.
    with token_lock(MemoryTokenStore(), "schwab"):
        pass
    assert os.listdir(tmp_path / "dir") == ["schwab.lock"]
