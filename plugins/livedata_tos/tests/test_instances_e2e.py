"""Two Schwab logins in one runner (issue 12): a brokerage login (`schwab`, streamed by `tos`) and an IRA login
(`schwab_ira`, streamed by `tos_ira` through `schwab = "schwab_ira"`), each against its own fake Schwab and fake
streamer, with its own tokens and accounts. Driven as a user does: a livedata.toml, tokens in files, and the
`livedata status --json` and `livedata auth schwab_ira` commands run in their own processes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx
import pytest

from livedata_core.runner import Runner, load_config_file
from livedata_core.testing import ServerThread, running
from livedata_core.plugin_kit.tokens import FileTokenStore
from livedata_schwab.testing import APP_KEY, APP_SECRET, FakeSchwab, FakeSchwabServer, account_json
from livedata_tos.testing import FakeStreamer

IRA_ACCOUNT = "55550001"
BROKERAGE_ACCOUNTS = {"12345678", "87654321"}
FAST = {"login_timeout": 2.0, "command_timeout": 2.0, "open_timeout": 2.0, "heartbeat_timeout": 30.0,
        "connection_limit_retry": 0.2}  # fmt: skip


class TokensOf:
    """The access tokens one fake Schwab accepts now: its streamer accepts the same ones."""

    def __init__(self, fake: FakeSchwab) -> None:
        self.fake = fake

    def __contains__(self, token: object) -> bool:
        return token in self.fake.access_tokens


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def write_toml(path: Path, tables: dict[str, dict]) -> Path:
    lines = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class Login:
    """One Schwab login: a fake Schwab REST server and the fake streamer its /userPreference points to."""

    def __init__(self, label: str) -> None:
        self.fake = FakeSchwab(label)
        self.rest = FakeSchwabServer(self.fake).start()
        self.streamer = ServerThread(FakeStreamer()).start()
        self.streamer.server.valid_tokens = TokensOf(self.fake)
        self.fake.routes["/trader/v1/userPreference"] = self.streamer.server.user_preference()

    def quote(self, symbol: str, bid: float) -> None:
        self.streamer.call(self.streamer.server.send_data, "LEVELONE_EQUITIES",
                           [{"key": symbol, "1": bid, "2": bid + 0.1, "3": bid + 0.05}])  # fmt: skip

    def stop(self) -> None:
        self.streamer.stop()
        self.rest.stop()


def app_urls(fake: FakeSchwab) -> dict:
    """The fake's ``[brokers.<instance>]`` table without the app credentials (they come from the environment)."""
    table = fake.table()
    del table["app_key"], table["app_secret"]
    return table


def set_cash(fake: FakeSchwab, number: str, cash: float) -> None:
    for answer in fake.routes.values():
        if isinstance(answer, dict) and answer.get("securitiesAccount", {}).get("accountNumber") == number:
            answer["securitiesAccount"]["currentBalances"]["totalCash"] = cash


@pytest.fixture
def logins():
    brokerage, ira = Login("main"), Login("ira")
    ira.fake.use_accounts(account_json(IRA_ACCOUNT, "CASH", cash=7000.0, positions=[
        {"longQuantity": 20.0, "shortQuantity": 0.0, "averagePrice": 210.0, "marketValue": 4400.0,
         "instrument": {"assetType": "EQUITY", "symbol": "VTI"}}]))  # fmt: skip
    try:
        yield brokerage, ira
    finally:
        brokerage.stop()
        ira.stop()


async def livedata(*args: str, env: dict[str, str], stdin: bytes | None = None) -> tuple[int, str, str]:
    """Run ``livedata ARGS`` in its own process, as a user types it (without blocking the runner's loop)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "livedata_core.cli", *args, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    return process.returncode, out.decode(), err.decode()


async def auth_manually(instance: str, config: Path, env: dict[str, str], fake: FakeSchwab) -> tuple[int, str, str]:
    """``livedata auth INSTANCE --manual``: open the printed login URL (the fake logs in at once and redirects)
    and paste the redirect URL, as a user does."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "livedata_core.cli", "auth", instance, "--manual", "-c", str(config), env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    assert process.stderr is not None and process.stdin is not None
    seen = []
    while True:
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        assert line, "".join(seen)
        seen.append(line)
        if "/authorize?" in line:
            break
    async with httpx.AsyncClient() as browser:
        answer = await browser.get(line.strip())
    assert answer.status_code == 302 and answer.headers["Location"].split("?")[0]
    process.stdin.write(answer.headers["Location"].encode() + b"\n")
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), "".join(seen) + err.decode()


def test_two_schwab_logins_and_their_streamers_run_side_by_side(logins, redis_server, published, tmp_path, monkeypatch):
    brokerage, ira = logins
    token_dir = tmp_path / "tokens"
    # One Schwab app (its key and secret in the environment), two user logins: each instance has its own tokens.
    monkeypatch.setenv("LIVEDATA_SCHWAB_APP_KEY", APP_KEY)
    monkeypatch.setenv("LIVEDATA_SCHWAB_APP_SECRET", APP_SECRET)
    monkeypatch.setenv("LIVEDATA_TOKEN_STORE", "file")
    monkeypatch.setenv("LIVEDATA_TOKEN_DIR", str(token_dir))
    env = {**os.environ, "LIVEDATA_REDIS_URL": redis_server.url}
    store = FileTokenStore(token_dir)
    store.save("schwab", brokerage.fake.saved_tokens())
    store.save("schwab_ira", ira.fake.saved_tokens())

    poll = {"positions": 0.3, "balances": 0.3, "orders": 0, "transactions": 0}
    config_path = write_toml(tmp_path / "livedata.toml", {
        "redis": {"url": redis_server.url},
        "backoff": {"initial": 0.02, "max": 0.2},
        "brokers.schwab": {**app_urls(brokerage.fake), "poll": poll},
        "brokers.schwab_ira": {"plugin": "schwab", **app_urls(ira.fake), "poll": poll},
        "brokers.tos": {"symbols": ["AAPL"], "account_activity": False, **FAST},
        "brokers.tos_ira": {"plugin": "tos", "schwab": "schwab_ira", "symbols": ["MSFT"], "account_activity": False,
                            **FAST},
    })  # fmt: skip

    def subscribed(login: Login, symbol: str) -> bool:
        return login.streamer.server.subscriptions.get("LEVELONE_EQUITIES") == {symbol}

    async def wait_until(predicate, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.02)

    async def scenario():
        async with running(Runner(load_config_file(str(config_path)))) as runner:
            # Each tos instance streams its own symbols over its own login's streamer.
            await wait_until(lambda: subscribed(brokerage, "AAPL") and subscribed(ira, "MSFT"))
            brokerage.quote("AAPL", 190.0)
            ira.quote("MSFT", 410.0)
            (aapl,) = await published.wait_for_async("quotes", "AAPL", where=lambda q: q.bid == 190.0)
            (msft,) = await published.wait_for_async("quotes", "MSFT", where=lambda q: q.bid == 410.0)
            assert (aapl.broker, aapl.instance, msft.broker, msft.instance) == ("tos", "tos", "tos", "tos_ira")
            assert all(t.startswith("AT-secret-access-main") for t in brokerage.streamer.server.login_tokens)
            assert all(t.startswith("AT-secret-access-ira") for t in ira.streamer.server.login_tokens)

            # Each Schwab instance polls its own login's accounts.
            (vti,) = await published.wait_for_async("positions", IRA_ACCOUNT)
            assert (vti.symbol, vti.quantity, vti.broker, vti.instance) == ("VTI", 20.0, "schwab", "schwab_ira")
            (margin,) = await published.wait_for_async("balances", "12345678")
            assert (margin.broker, margin.instance, margin.cash) == ("schwab", "schwab", 1000.0)
            assert {m.data.account_id for m in published.messages if m.kind in ("positions", "balances")
                    and m.data.instance == "schwab_ira"} == {IRA_ACCOUNT}  # fmt: skip
            assert {m.data.account_id for m in published.messages if m.kind in ("positions", "balances")
                    and m.data.instance == "schwab"} <= BROKERAGE_ACCOUNTS  # fmt: skip

            # `livedata status --json`: four instances, each with its plugin.
            code, out, err = await livedata("status", "--json", env=env)
            assert code == 0, err
            brokers = json.loads(out)["brokers"]
            assert {name: row["plugin"] for name, row in brokers.items()} == {
                "schwab": "schwab", "schwab_ira": "schwab", "tos": "tos", "tos_ira": "tos"}  # fmt: skip

            # `livedata auth schwab_ira` logs the IRA login in again and writes only its tokens.
            before = {key: store.load(key) for key in ("schwab", "schwab_ira")}
            started = int(time.time() * 1000)
            code, out, err = await auth_manually("schwab_ira", config_path, env, ira.fake)
            assert code == 0, err
            assert "login complete" in out
            assert store.load("schwab") == before["schwab"]
            after = store.load("schwab_ira")
            assert after["refresh_issued_at"] >= started > before["schwab_ira"]["refresh_issued_at"] - 1
            assert after["access_token"].startswith("AT-secret-access-ira")
            assert brokerage.fake.api_requests("/v1/oauth/token") == []  # the brokerage login was not touched

            # The brokerage login's Schwab and streamer go away: the IRA instances keep going.
            await asyncio.to_thread(brokerage.stop)  # not on this loop: the streamer waits for our side to close
            mark = len(published.messages)
            ira.quote("MSFT", 411.0)
            await published.wait_for_async("quotes", "MSFT", where=lambda q: q.bid == 411.0 and q.instance == "tos_ira",
                                           after=mark)  # fmt: skip
            set_cash(ira.fake, IRA_ACCOUNT, 7100.0)  # a new balance: the runner publishes changes only
            await published.wait_for_async("balances", IRA_ACCOUNT, where=lambda b: b.cash == 7100.0, after=mark,
                                           timeout=15)  # fmt: skip
            await wait_until(lambda: runner.status()["brokers"]["tos"]["state"] != "streaming")
            assert runner.status()["brokers"]["tos_ira"]["state"] == "streaming"

    asyncio.run(scenario())


def test_auth_of_a_tos_instance_logs_its_linked_schwab_login_in(logins, tmp_path, monkeypatch):
    brokerage, ira = logins
    token_dir = tmp_path / "tokens"
    monkeypatch.setenv("LIVEDATA_SCHWAB_APP_KEY", APP_KEY)
    monkeypatch.setenv("LIVEDATA_SCHWAB_APP_SECRET", APP_SECRET)
    monkeypatch.setenv("LIVEDATA_TOKEN_STORE", "file")
    monkeypatch.setenv("LIVEDATA_TOKEN_DIR", str(token_dir))
    store = FileTokenStore(token_dir)
    store.save("schwab", brokerage.fake.saved_tokens())
    theirs = store.load("schwab")
    config_path = write_toml(tmp_path / "livedata.toml", {
        "brokers.schwab": app_urls(brokerage.fake),
        "brokers.schwab_ira": {"plugin": "schwab", **app_urls(ira.fake)},
        "brokers.tos_ira": {"plugin": "tos", "schwab": "schwab_ira", "symbols": ["MSFT"]},
    })  # fmt: skip

    code, out, err = asyncio.run(auth_manually("tos_ira", config_path, dict(os.environ), ira.fake))
    assert code == 0, err
    assert store.load("schwab_ira")["access_token"] in ira.fake.access_tokens
    assert store.load("schwab") == theirs and store.load("tos_ira") is None
    assert brokerage.fake.requests == []
