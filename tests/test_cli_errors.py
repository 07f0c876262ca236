"""What the CLI says when something is wrong: the cause, never a password."""

import pytest

from livedata_core.cli import main
from livedata_core.redis_io.server import RedisServer

PASSWORD = "s3cret-Pa55"


@pytest.fixture
def redis_with_password():
    server = RedisServer(password=PASSWORD).start()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _no_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no ./livedata.toml
    monkeypatch.delenv("LIVEDATA_REDIS_URL", raising=False)
    monkeypatch.delenv("LIVEDATA_PREFIX", raising=False)


def test_run_names_why_redis_refused_a_database_number(redis_server, capsys):
    assert main(["run", "-q", "--redis-url", f"redis://127.0.0.1:{redis_server.port}/99"]) == 1
    err = capsys.readouterr().err
    assert "DB index is out of range" in err
    assert f"redis://127.0.0.1:{redis_server.port}/99" in err


def test_run_with_rediss_against_a_plain_server_says_so(redis_server, capsys):
    assert main(["run", "-q", "--redis-url", f"rediss://127.0.0.1:{redis_server.port}/0"]) == 1
    err = capsys.readouterr().err
    assert "Redis is not reachable at rediss://" in err
    assert "TLS" in err


def test_wrong_password_is_named_as_such_and_never_printed(redis_with_password, capsys):
    url = f"redis://:wrong-{PASSWORD}@127.0.0.1:{redis_with_password.port}/0"
    for argv in (["status"], ["subscribe", "demo", "AAPL"], ["tail", "quotes:*", "-n", "1"], ["run", "-q"]):
        assert main([*argv, "--redis-url", url]) == 1, argv
        err = capsys.readouterr().err
        assert "refused the login" in err and "invalid username-password pair" in err, (argv, err)
        assert "cannot reach" not in err
        assert PASSWORD not in err, err
        assert f"redis://:***@127.0.0.1:{redis_with_password.port}/0" in err


def test_missing_password_says_the_url_has_none(redis_with_password, capsys):
    assert main(["status", "--redis-url", f"redis://127.0.0.1:{redis_with_password.port}/0"]) == 1
    assert "the URL has no password" in capsys.readouterr().err


def test_status_with_nothing_listening_gives_the_connection_error(capsys):
    assert main(["status", "--redis-url", "redis://127.0.0.1:1/0"]) == 1
    err = capsys.readouterr().err
    assert "Redis is not reachable at redis://127.0.0.1:1/0" in err and "refused" in err.lower()
