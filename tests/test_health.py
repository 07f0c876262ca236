"""/healthz and /readyz: 200 or 503 with a JSON body that says why, as a real HTTP client sees them."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from livedata_core.errors import ConfigError
from livedata_core.testing import running

from ops_feed import FeedBroker, eventually, feed_plugin, feed_runner


async def get(url):
    async with httpx.AsyncClient(timeout=5) as http:
        return await http.get(url)


def test_ready_while_streaming_and_503_naming_the_instance_when_it_needs_a_login(redis_server):
    feed = FeedBroker()

    async def go():
        with feed_plugin(feed):
            runner = feed_runner(redis_server.url)
            async with running(runner):
                base = runner.ops.url
                await eventually(lambda: runner.status()["brokers"]["feed"]["state"] == "streaming")
                ready, healthy = await get(f"{base}/readyz"), await get(f"{base}/healthz")
                feed.require_login()
                await eventually(lambda: runner.status()["brokers"]["feed"]["state"] == "login_required")
                return ready, healthy, await get(f"{base}/readyz"), await get(f"{base}/healthz")

    ready, healthy, not_ready, still_healthy = asyncio.run(go())
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "reasons": [], "brokers": {"feed": "streaming"}, "stale": {}}
    assert healthy.status_code == 200 and healthy.json() == {"status": "ok", "reasons": [], "redis": "reachable"}
    assert not_ready.status_code == 503 and not_ready.headers["content-type"] == "application/json"
    body = not_ready.json()
    assert body["status"] == "unavailable" and body["brokers"] == {"feed": "login_required"}
    assert body["reasons"] == ["feed: login required (last error: login required: LoginRequired: the refresh token "
                               "expired: run `livedata auth feed`)"]
    assert still_healthy.status_code == 200  # the process and Redis are fine: restarting it would not help


def test_redis_stopped_makes_both_answer_503_and_its_return_makes_them_200(private_redis):
    feed = FeedBroker()

    async def go():
        with feed_plugin(feed):
            runner = feed_runner(private_redis.url)
            async with running(runner):
                base = runner.ops.url
                await eventually(lambda: runner.status()["brokers"]["feed"]["state"] == "streaming")
                before = await get(f"{base}/readyz")
                private_redis.kill()
                down = await get(f"{base}/healthz"), await get(f"{base}/readyz")
                private_redis.start()
                up = await eventually(lambda: _ok(get(f"{base}/readyz")), what="ready again")
                return before, down, up

    before, (health, ready), up = asyncio.run(go())
    assert before.status_code == 200
    assert health.status_code == 503 and ready.status_code == 503
    assert health.json()["redis"] == "unreachable"
    for answer in (health, ready):
        (reason,) = [r for r in answer.json()["reasons"] if r.startswith("redis")]
        assert reason.startswith("redis unreachable: ") and "Error" in reason
    assert up.json()["status"] == "ok"


async def _ok(request):
    answer = await request
    return answer if answer.status_code == 200 else None


def test_unknown_paths_and_methods_are_refused(redis_server):
    async def go():
        with feed_plugin(FeedBroker()):
            runner = feed_runner(redis_server.url)
            async with running(runner):
                async with httpx.AsyncClient() as http:
                    return (await http.get(f"{runner.ops.url}/nope"), await http.post(f"{runner.ops.url}/readyz"),
                            await http.head(f"{runner.ops.url}/healthz"))

    missing, posted, head = asyncio.run(go())
    assert missing.status_code == 404 and missing.json()["paths"] == ["/metrics", "/healthz", "/readyz"]
    assert posted.status_code == 405 and "use GET" in posted.json()["error"]
    assert head.status_code == 200 and head.content == b""


def test_a_metrics_port_in_use_is_refused_naming_the_setting(redis_server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def go():
            with feed_plugin(FeedBroker()):
                runner = feed_runner(redis_server.url)
                runner.ops.port = port
                async with running(runner):
                    pass

        with pytest.raises(ConfigError, match=rf"metrics: cannot listen on 127.0.0.1:{port} \(\[metrics\] host and port, "
                                              r"or --metrics-port\)"):
            asyncio.run(go())


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_livedata_run_metrics_port_serves_health_and_metrics(redis_server, tmp_path):
    port = _free_port()
    env = {**os.environ, "LIVEDATA_REDIS_URL": redis_server.url}
    proc = subprocess.Popen([sys.executable, "-m", "livedata_core", "run", "--quiet", "--metrics-port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
            time.sleep(0.1)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert ready.json()["brokers"] == {"demo": "streaming"}
    assert metrics.status_code == 200 and 'livedata_broker_state{instance="demo",plugin="demo",state="streaming"} 1.0' in metrics.text
    assert proc.returncode == 0


def test_metrics_port_flag_is_checked():
    result = subprocess.run([sys.executable, "-m", "livedata_core", "run", "--metrics-port", "70000"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "--metrics-port must be a TCP port from 0 (any free one) to 65535, was 70000" in result.stderr
