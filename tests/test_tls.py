"""``rediss://`` with a private CA and client certificates, against a real ``redis-server --tls-port``.

The URL names the files in redis-py's own query arguments (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``),
so every redis-py client and the publisher's own RESP connection read them from the same place.
"""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from livedata_core import live_data_redis
from livedata_core.errors import ConfigError, PublishError
from livedata_core.models import Quote
from livedata_core.redis_io.publisher import AsyncPublisher
from livedata_core.redis_io.server import find_redis_server, free_port
from livedata_core.redis_io.url import mask_url, parse_redis_url
from livedata_core.runner import load_config
from livedata_core.redis_io.subscriber import subscribe

trustme = pytest.importorskip("trustme")

LIVEDATA = [sys.executable, "-m", "livedata_core.cli"]
PASSWORD = "tls-s3cret"


# -- a private CA and a TLS redis-server ------------------------------------------------------------------------


class Pki:
    """A private CA, a server certificate for 127.0.0.1 / localhost, a client certificate and a foreign CA."""

    def __init__(self, directory: Path) -> None:
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("livedata-client")
        self.dir = directory
        self.ca = self._write("ca.pem", ca.cert_pem)
        self.server_cert = self._write("server.crt", server.cert_chain_pems[0])
        self.server_key = self._write("server.key", server.private_key_pem)
        self.client_cert = self._write("client.crt", client.cert_chain_pems[0])
        self.client_key = self._write("client.key", client.private_key_pem)
        self.other_ca = self._write("other-ca.pem", trustme.CA().cert_pem)

    def _write(self, name: str, blob) -> str:
        path = self.dir / name
        blob.write_to_path(str(path))
        return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


class TlsRedis:
    """``redis-server`` listening only on a TLS port, with a password."""

    def __init__(self, pki: Pki, client_certs: bool) -> None:
        binary = find_redis_server()
        if binary is None:
            pytest.skip("no redis-server binary")
        self.port = free_port()
        self.client_certs = client_certs
        self._dir = tempfile.mkdtemp(prefix="livedata-tls-redis-")
        log = Path(self._dir) / "redis.log"
        args = [
            binary, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", self._dir, "--loglevel", "warning", "--requirepass", PASSWORD,
            "--tls-cert-file", pki.server_cert, "--tls-key-file", pki.server_key, "--tls-ca-cert-file", pki.ca,
            "--tls-auth-clients", "yes" if client_certs else "no",
        ]  # fmt: skip
        with open(log, "ab") as log_file:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log_file)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                reason = log.read_text(errors="replace")[-300:]
                pytest.skip(f"{binary} does not serve TLS (built without it?): {reason}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.close()
                    pytest.fail(f"TLS redis-server did not listen on {self.port}")
                time.sleep(0.02)

    def url(self, **query: str) -> str:
        args = "&".join(f"{k}={quote(v, safe='/')}" for k, v in query.items())
        return f"rediss://:{PASSWORD}@127.0.0.1:{self.port}/0" + (f"?{args}" if args else "")

    def client(self, pki: Pki) -> redis.Redis:
        """A redis-py client with every file given as a keyword (not through the URL)."""
        return redis.Redis(host="127.0.0.1", port=self.port, password=PASSWORD, ssl=True, ssl_ca_certs=pki.ca,
                           ssl_certfile=pki.client_cert, ssl_keyfile=pki.client_key)  # fmt: skip

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture(scope="module", params=[False, True], ids=["server-cert-only", "client-cert-required"])
def tls_redis(request, pki):
    server = TlsRedis(pki, client_certs=request.param)
    yield server
    server.close()


@pytest.fixture
def tls_url(tls_redis, pki):
    """The URL a user writes: the private CA, and the client certificate when the server requires one."""
    tls_redis.client(pki).flushall()
    files = {"ssl_ca_certs": pki.ca}
    if tls_redis.client_certs:
        files |= {"ssl_certfile": pki.client_cert, "ssl_keyfile": pki.client_key}
    return tls_redis.url(**files)


def _run_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LIVEDATA_REDIS_URL", None)
    env.pop("SSL_CERT_FILE", None)
    return env


# -- the three ways in: livedata run, the sync publisher, the subscriber -----------------------------------------


def test_livedata_run_publishes_over_tls(tls_redis, tls_url, pki, tmp_path):
    proc = subprocess.Popen(LIVEDATA + ["run", "--redis-url", tls_url, "--symbols", "AAPL"], cwd=tmp_path,
                            env=_run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    client = tls_redis.client(pki)
    try:
        deadline = time.monotonic() + 30
        while not client.exists("live_data:latest:quotes:AAPL") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        quote_seen = client.get("live_data:latest:quotes:AAPL")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert quote_seen is not None, err
    assert json.loads(quote_seen)["symbol"] == "AAPL"
    assert proc.returncode == 0, err
    assert PASSWORD not in err and "Traceback" not in err


def test_sync_publisher_over_tls(tls_redis, tls_url, pki):
    live_data_redis.configure(tls_url)
    try:
        live_data_redis.publish_quote("MSFT", {"bid": 1.5, "ask": 1.6})
    finally:
        live_data_redis.configure()
    assert json.loads(tls_redis.client(pki).get("live_data:latest:quotes:MSFT"))["bid"] == 1.5


def test_subscriber_over_tls(tls_redis, tls_url, pki):
    received = []

    def consume():
        messages = subscribe("quotes:SPY", url=tls_url)
        try:
            received.append(next(messages))
        except Exception as exc:
            received.append(exc)
        finally:
            messages.close()

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    live_data_redis.configure(tls_url)
    try:
        deadline = time.monotonic() + 20
        while not received and time.monotonic() < deadline:  # until the subscription is up and has one
            live_data_redis.publish_quote("SPY", {"bid": 2.5})
            time.sleep(0.05)
    finally:
        live_data_redis.configure()
    consumer.join(5)
    assert received, "the subscriber received nothing"
    message = received[0]
    assert not isinstance(message, Exception), message
    assert (message.kind, message.identifier, message.data.bid) == ("quotes", "SPY", 2.5)


def test_async_publisher_with_verification_off(tls_redis, pki):
    """``ssl_cert_reqs=none``: encrypted but unverified (no CA needed); the RESP connection honours it too."""
    files = {"ssl_cert_reqs": "none"}
    if tls_redis.client_certs:
        files |= {"ssl_certfile": pki.client_cert, "ssl_keyfile": pki.client_key}
    url = tls_redis.url(**files)

    async def go():
        pub = AsyncPublisher(url)
        await pub.start()
        pub.publish(Quote(broker="t", symbol="QQQ", bid=3.0))
        assert await pub.flush(5)
        await pub.close()

    asyncio.run(go())
    assert redis.Redis.from_url(url).get("live_data:latest:quotes:QQQ") is not None


# -- what a user sees when the TLS side is wrong -----------------------------------------------------------------


def test_livedata_run_with_the_wrong_ca_says_so(tls_redis, pki, tmp_path):
    files = {"ssl_ca_certs": pki.other_ca}
    if tls_redis.client_certs:
        files |= {"ssl_certfile": pki.client_cert, "ssl_keyfile": pki.client_key}
    out = subprocess.run(LIVEDATA + ["run", "--redis-url", tls_redis.url(**files)], cwd=tmp_path, env=_run_env(),
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode != 0
    assert "certificate verify failed" in out.stderr
    assert "not signed by a CA this client trusts" in out.stderr  # the hint says what to fix
    assert "speaks TLS" not in out.stderr  # not the hint for a plain-text port
    assert "Traceback" not in out.stderr and PASSWORD not in out.stderr


def test_async_publisher_with_the_wrong_ca_says_so(tls_redis, pki):
    files = {"ssl_ca_certs": pki.other_ca}
    if tls_redis.client_certs:
        files |= {"ssl_certfile": pki.client_cert, "ssl_keyfile": pki.client_key}

    async def go():
        await AsyncPublisher(tls_redis.url(**files)).start()

    with pytest.raises(PublishError) as error:
        asyncio.run(go())
    message = str(error.value)
    assert "certificate verify failed" in message and "not signed by a CA this client trusts" in message
    assert PASSWORD not in message


def test_sync_publisher_with_the_wrong_ca_says_so(tls_redis, pki):
    live_data_redis.configure(tls_redis.url(ssl_ca_certs=pki.other_ca))
    try:
        with pytest.raises(PublishError) as error:
            live_data_redis.publish_quote("AAPL", {"bid": 1})
    finally:
        live_data_redis.configure()
    assert "certificate verify failed" in str(error.value) and PASSWORD not in str(error.value)


def test_a_missing_client_certificate_says_so(tls_redis, pki):
    if not tls_redis.client_certs:
        pytest.skip("this server does not ask for a client certificate")

    async def go():
        await AsyncPublisher(tls_redis.url(ssl_ca_certs=pki.ca)).start()

    with pytest.raises(PublishError) as error:
        asyncio.run(go())
    assert "client certificate" in str(error.value) and "ssl_certfile" in str(error.value)
    assert PASSWORD not in str(error.value)


# -- the URL is checked before anything connects -----------------------------------------------------------------


def _refused(url: str) -> str:
    with pytest.raises(ConfigError) as error:
        parse_redis_url(url)
    message = str(error.value)
    assert "Traceback" not in message and "s3cret" not in message
    return message


def test_a_missing_ca_file_is_refused_at_start(tmp_path):
    url = f"rediss://:s3cret@cache.example:6380/0?ssl_ca_certs={tmp_path}/nope.pem"
    message = _refused(url)
    assert "ssl_ca_certs" in message and "nope.pem" in message and "does not exist" in message
    with pytest.raises(ConfigError, match="ssl_ca_certs"):
        load_config({"redis": {"url": url}})
    out = subprocess.run(LIVEDATA + ["run", "--redis-url", url], cwd=tmp_path, env=_run_env(), capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2 and "ssl_ca_certs" in out.stderr and "nope.pem" in out.stderr
    assert "Traceback" not in out.stderr and "s3cret" not in out.stderr


def test_files_that_are_not_what_they_should_be_are_refused(pki, tmp_path):
    base = "rediss://:s3cret@cache.example:6380/0?"
    assert "is a directory" in _refused(base + f"ssl_ca_certs={tmp_path}")
    assert "no PEM certificate" in _refused(base + f"ssl_ca_certs={pki.client_key}")
    assert "ssl_certfile" in _refused(base + f"ssl_certfile={pki.client_key}&ssl_keyfile={pki.client_key}")
    mismatch = _refused(base + f"ssl_certfile={pki.client_cert}&ssl_keyfile={pki.server_key}")
    assert "does not belong to" in mismatch
    assert "ssl_keyfile" in _refused(base + f"ssl_certfile={pki.client_cert}")  # no key in the certificate file
    assert "needs ssl_certfile" in _refused(base + f"ssl_keyfile={pki.client_key}")


def test_an_encrypted_key_is_refused_with_a_reason(pki, tmp_path):
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(Path(pki.client_key).read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"pass")))  # fmt: skip
    message = _refused(f"rediss://cache.example/0?ssl_certfile={pki.client_cert}&ssl_keyfile={encrypted}")
    assert "ssl_keyfile" in message and "encrypted" in message


def test_a_file_that_cannot_be_opened_is_refused(pki, tmp_path):
    # Permissions do not stop root (CI runs as root): a path through a file fails to open for anyone.
    file = tmp_path / "ca.pem"
    file.write_bytes(Path(pki.ca).read_bytes())
    message = _refused(f"rediss://cache.example/0?ssl_ca_certs={file}/inner.pem")
    assert "cannot be read: Not a directory" in message, message
    if os.geteuid() != 0:
        file.chmod(0)
        assert "cannot be read" in _refused(f"rediss://cache.example/0?ssl_ca_certs={file}")


def test_unknown_query_arguments_are_refused_without_their_value(pki):
    message = _refused(f"rediss://cache.example/0?ssl_ca_cert={pki.ca}")
    assert "'ssl_ca_cert'" in message and "ssl_ca_certs" in message  # names the typo and lists the known ones
    message = _refused("rediss://cache.example/0?password=s3cret")
    assert "'password'" in message
    assert "socket_timeout" in _refused("redis://cache.example/0?socket_timeout=1")


def test_tls_arguments_need_a_rediss_url(pki):
    assert "rediss://" in _refused(f"redis://cache.example/0?ssl_ca_certs={pki.ca}")


@pytest.mark.parametrize("query, message", [
    ("ssl_cert_reqs=maybe", "ssl_cert_reqs"),
    ("ssl_check_hostname=perhaps", "ssl_check_hostname"),
    ("ssl_ca_certs=", "empty"),
    ("db=1&db=2", "more than once"),
    ("db=x", "db"),
])  # fmt: skip
def test_bad_query_values_are_refused(query, message):
    assert message in _refused(f"rediss://cache.example/0?{query}")


def test_db_in_the_query_wins_as_in_redis_py():
    url = "redis://cache.example:6379/1?db=3"
    assert parse_redis_url(url).db == redis.connection.parse_url(url)["db"] == 3


def test_tls_options_are_parsed(pki):
    target = parse_redis_url(
        f"rediss://cache.example/0?ssl_ca_certs={pki.ca}&ssl_certfile={pki.client_cert}&ssl_keyfile={pki.client_key}"
        "&ssl_check_hostname=false"
    )
    assert (target.tls_options.ca_certs, target.tls_options.certfile, target.tls_options.keyfile) == (
        pki.ca, pki.client_cert, pki.client_key)  # fmt: skip
    assert target.tls_options.check_hostname is False and target.tls_options.verify is True
    assert parse_redis_url("rediss://cache.example/0?ssl_cert_reqs=none").tls_options.verify is False


def test_mask_url_keeps_paths_and_hides_other_query_values(pki):
    url = f"rediss://user:s3cret@cache.example/0?ssl_ca_certs={pki.ca}&password=hunter2"
    shown = mask_url(url)
    assert "s3cret" not in shown and "hunter2" not in shown
    assert f"ssl_ca_certs={pki.ca}" in shown and "password=***" in shown
