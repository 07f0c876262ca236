"""``livedata_run`` streams with the tokens a web login stored in Thor's table, and the feed endpoints change and
show that running runner through its control channel."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from livedata_core.testing import ServerThread
from livedata_django.management.commands.livedata_run import Command as RunCommand
from livedata_tos.testing import FakeStreamer
from SchwabLiveData.models import SchwabToken

from thor_browser import browser, web_login

STATUS, SUBSCRIBE, UNSUBSCRIBE = "/api/feed/tos/status/", "/api/feed/tos/subscribe/", "/api/feed/tos/unsubscribe/"


@pytest.fixture
def streamer(fake_schwab):
    """The fake Schwab streamer, and the fake Schwab's /userPreference pointing at it."""
    with ServerThread(FakeStreamer()) as server:
        fake_schwab.routes["/trader/v1/userPreference"] = server.server.user_preference()
        yield server


@pytest.fixture
def tos_config(settings, schwab_config, streamer, redis_server):
    """The runner's configuration: tos streaming AAPL with the Schwab app of the fake."""
    settings.LIVEDATA = {
        **settings.LIVEDATA,
        # The `published` fixture listens on live_data:*, the control channel too: with no runner, a command is
        # heard but never answered, and the endpoint waits this long before its 503.
        "CONTROL_TIMEOUT": 1.0,
        "CONFIG": {
            "redis": {"url": redis_server.url},
            "brokers": {"tos": {"symbols": ["AAPL"], "streamer_url": streamer.url, "login_timeout": 2.0,
                                "schwab": schwab_config}},  # fmt: skip
            "backoff": {"initial": 0.05, "max": 0.2},
            "status_interval": 0.1,
        },
    }


class RunningCommand:
    """``manage.py livedata_run`` on a thread of its own, as a deployment runs it in a process of its own."""

    def __init__(self, **options):
        self.command = RunCommand()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, kwargs=options, daemon=True)

    def _run(self, **options):
        try:
            call_command(self.command, **options)
        except BaseException as exc:
            self.error = exc

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.thread.is_alive():
            runner = getattr(self.command, "runner", None)
            if runner is not None and getattr(self.command, "loop", None) is not None and runner.ready.is_set():
                return self
            time.sleep(0.02)
        raise AssertionError(f"livedata_run did not start: {self.error!r}")

    def __exit__(self, *exc):
        if self.thread.is_alive():
            self.command.stop()
        self.thread.join(15)
        assert not self.thread.is_alive(), "livedata_run did not stop"


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_web_login_then_livedata_run_streams_and_the_feed_endpoints_drive_it(
    make_user, fake_schwab, tos_config, streamer, published
):
    thor = make_user("thor")
    client = browser(thor)
    _, done = web_login(client, fake_schwab)
    assert done.status_code == 200
    token = SchwabToken.objects.get(user=thor).access_token
    streamer.server.valid_tokens = {token}  # the streamer accepts only the token of thor's row

    assert client.get(STATUS).status_code == 503  # no runner yet
    assert client.get(STATUS).json()["code"] == "no_runner"

    with RunningCommand() as running:
        fake = streamer.server
        wait_until(lambda: fake.subscriptions.get("LEVELONE_EQUITIES") == {"AAPL"})
        assert fake.login_tokens == [token]
        streamer.call(fake.send_data, "LEVELONE_EQUITIES", [{"key": "AAPL", "1": 189.5, "2": 189.6, "3": 189.55}])
        [quote] = published.wait_for("quotes", "AAPL")
        assert (quote.broker, quote.bid, quote.ask) == ("tos", 189.5, 189.6)

        status = client.get(STATUS)
        assert status.status_code == 200 and status.json()["status"]["symbols"] == ["AAPL"]

        added = client.post(SUBSCRIBE, {"symbols": ["MSFT", "aapl"]}, content_type="application/json")
        assert added.status_code == 200, added.content
        assert added.json() == {"broker": "tos", "added": ["MSFT"], "already": ["AAPL"]}
        wait_until(lambda: fake.subscriptions.get("LEVELONE_EQUITIES") == {"AAPL", "MSFT"})
        assert client.get(STATUS).json()["status"]["symbols"] == ["AAPL", "MSFT"]

        removed = client.post(UNSUBSCRIBE, {"symbols": "MSFT"})  # a form post works too
        assert removed.status_code == 200 and removed.json()["removed"] == ["MSFT"]
        wait_until(lambda: fake.subscriptions.get("LEVELONE_EQUITIES") == {"AAPL"})
        assert client.get(STATUS).json()["status"]["symbols"] == ["AAPL"]

        refused = client.post(SUBSCRIBE, {"symbols": ["BAD SYMBOL!"]}, content_type="application/json")
        assert refused.status_code == 400 and refused.json()["code"] == "refused"
        empty = client.post(SUBSCRIBE, {"symbols": []}, content_type="application/json")
        assert empty.status_code == 400 and empty.json()["code"] == "invalid"
        assert client.get("/api/feed/ibkr/status/").status_code == 404
        assert running.error is None

    assert running.error is None and fake.logouts == 1  # a clean shutdown logs out of the streamer
    gone = client.get(STATUS)
    assert gone.status_code == 503 and gone.json()["code"] == "no_runner"


def test_livedata_run_refuses_to_start_without_knowing_whose_tokens(make_user, tos_config):
    make_user("thor")
    make_user("ira")
    with pytest.raises(CommandError, match=r"has no row yet: log in first"):
        call_command(RunCommand())


def test_with_ha_livedata_run_stands_by_again_after_losing_its_lease(make_user, fake_schwab, tos_config, streamer,
                                                                      settings, redis_server):  # fmt: skip
    import redis

    settings.LIVEDATA = {**settings.LIVEDATA, "CONFIG": {**settings.LIVEDATA["CONFIG"], "ha": {"lease": 2.0}}}
    thor = make_user("thor")
    web_login(browser(thor), fake_schwab)
    streamer.server.valid_tokens = {SchwabToken.objects.get(user=thor).access_token}
    with RunningCommand() as running:
        fake = streamer.server
        first = running.command.runner
        wait_until(lambda: fake.subscriptions.get("LEVELONE_EQUITIES") == {"AAPL"})
        assert first.ha.role == "leader"
        # Another runner holds the lease now (as after this one was cut off from Redis past its lease).
        client = redis.Redis.from_url(redis_server.url)
        client.set("live_data:{ha}:lease", b"99 someone-else", px=30_000)
        client.close()
        wait_until(lambda: running.command.runner is not first and running.command.runner.ha.leader == "someone-else")
        wait_until(lambda: not fake.connections)  # it closed its streamer connection
        assert first.lost_lease and running.thread.is_alive() and running.command.runner.ha.role == "standby"
    assert running.error is None
