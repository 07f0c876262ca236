"""The recorder's parts: redaction, the bounded queue under a slow disk, hourly files, files cut short, the
REST transport, the replay's time and speed arguments, and `[record] dir` in the configuration."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

pytest.importorskip("zstandard", reason="recordings need zstandard: run `python3 dev.py shell true` to install it")

from livedata_core.cli.commands import build_parser  # noqa: E402
from livedata_core.cli.replay import parse_speed, parse_time  # noqa: E402
from livedata_core.errors import ConfigError  # noqa: E402
from livedata_core.recording import writer as writer_module  # noqa: E402
from livedata_core.recording.http import HTTP_RECORDING, RestReplay, recorded_transport, request_key  # noqa: E402
from livedata_core.recording.reader import Recording, read_file  # noqa: E402
from livedata_core.recording.redaction import (  # noqa: E402
    NOT_SECRET, REDACTED, SECRET_ENDINGS, SECRET_NAMES, is_secret_key, redact_text, redact_url,
)
from livedata_core.recording.writer import Recorder  # noqa: E402
from livedata_core.runner import load_config  # noqa: E402

TOKEN = "tok-SECRET-0123456789"


@pytest.mark.parametrize("frame", [
    # Schwab's LOGIN request: the access token in the parameters.
    '{"requests":[{"service":"ADMIN","command":"LOGIN","requestid":"1","parameters":{"Authorization":"%s",'
    '"SchwabClientChannel":"N9"}}]}',
    '{"session":"%s"}',                                          # IBKR's session frame
    '{"access_token":"%s","refresh_token":"%s","expires_in":1800}',  # an OAuth answer
    '{"a":[{"b":{"apiKey":"%s"}}]}',                             # at any depth
    '{"cookie":"api={\\"session\\":\\"%s\\"}"}',                 # JSON inside a string
    '{"note":"x-api-key: %s"}',                                  # key: value inside a string
    "Authorization: Bearer %s",                                  # plain text
    "token=%s&symbol=AAPL",
    'smd+265598+{"session":"%s"}',                               # a topic prefix before JSON
])  # fmt: skip
def test_redaction_takes_every_secret_out(frame):
    text = frame.replace("%s", TOKEN)
    redacted = redact_text(text)
    assert TOKEN not in redacted and REDACTED in redacted


# The names the review found passing (2026-12-05), each with a secret of its own, in the forms brokers send them.
PLANTED = {
    "client_id": '{"client_id":"%s"}',                            # Schwab's app key in its OAuth requests
    "consumer_key": '{"consumer_key":"%s"}',                      # IBKR OAuth
    "live_session_token": '{"live_session_token":"%s","expires":1}',
    "authToken": '{"authToken":"%s"}',
    "jwt": '{"jwt":"%s"}',
    "ssoToken": '{"user":{"ssoToken":"%s"}}',
    "app_key=": "grant_type=x&app_key=%s&b=1",
    "appKey:": "appKey: %s",
    "oauth_token=": "oauth_token=%s&oauth_verifier=x",
    "private_key=": "private_key=%s",
    "code_verifier=": "code_verifier=%s",
    "x-api-key": '{"headers":{"X-Api-Key":"%s"}}',
    "Set-Cookie": '{"Set-Cookie":"SBID=%s; Path=/"}',
    "session": '{"session":"%s"}',                               # IBKR's websocket session
    "password": '{"note":"password = %s"}',
}  # fmt: skip


def _planted(name: str) -> str:
    return "S3CR3T-" + "".join(c for c in name if c.isalnum()) + "-9f8e7d"


def _file_bytes(folder) -> bytes:
    import zstandard

    return b"".join(zstandard.ZstdDecompressor().stream_reader(p.read_bytes(), read_across_frames=True).read()
                    for p in sorted(folder.rglob("*.jsonl.zst")))  # fmt: skip


def test_no_planted_secret_reaches_the_files(tmp_path):
    recorder = Recorder(tmp_path / "rec")
    rec = recorder.instance("acme", "acme", settings={"schwab": {"client_id": _planted("settings-client_id"),
                                                                 "consumer_key": _planted("settings-consumer")}})  # fmt: skip
    recorder.start()
    t = time.time()
    for name, frame in PLANTED.items():
        secret = _planted(name)
        rec.tap("in", frame % secret, t)  # as text
        rec.tap("out", (frame % secret).encode(), t)  # as a binary frame of text
        rec.rest("GET", f"https://x/a?{name.rstrip('=:')}={secret}&symbol=AAPL", 200, (frame % secret).encode(), t)
    # a binary frame that is not UTF-8: nothing in it could be found by name, so it is not written at all
    rec.tap("in", b"\xff\xfe" + _planted("binary").encode() + b"\x00", t)
    rec.rest("GET", "https://x/bin", 200, b"\xff" + _planted("binary-body").encode(), t)
    recorder.close()
    written = _file_bytes(tmp_path / "rec")
    assert b"symbol=AAPL" in written and written.count(REDACTED.encode()) >= 3 * len(PLANTED)
    planted = [_planted(n) for n in [*PLANTED, "settings-client_id", "settings-consumer", "binary", "binary-body"]]
    assert [s for s in planted if s.encode() in written] == []
    assert rec.withheld == 2 and "2 withheld (binary, not text: cannot be redacted)" in rec.status()


@pytest.mark.parametrize("word", [*SECRET_ENDINGS, *SECRET_NAMES])
def test_the_json_walk_the_text_pattern_and_the_scan_agree_on_every_secret_name(word):
    parts = word.split("_")
    camel = parts[0] + "".join(p.title() for p in parts[1:])
    spellings = {word, word.upper(), camel, word.replace("_", "-"), word.replace("_", "-").title()}
    if word in SECRET_ENDINGS:  # after other words too
        spellings |= {"my_" + word, "my" + camel[0].upper() + camel[1:], "X-My-" + word.replace("_", "-").title()}
    if word in NOT_SECRET:  # alone it is none (below); after another word it is
        spellings = {n for n in spellings if not n.lower() == word}
    for name in spellings:
        assert is_secret_key(name), name
        for frame in ('{"%s":"%s"}', '{"a":{"%s":"%s"}}', "%s=%s&a=1", "%s: %s", '{"note":"%s=%s"}'):
            text = frame % (name, TOKEN)
            assert TOKEN not in redact_text(text), (frame, name)
        assert TOKEN not in redact_url(f"https://h/p?{name}={TOKEN}")


def test_names_that_end_like_a_secret_but_are_none_are_kept():
    quotes = '{"data":[{"service":"LEVELONE_EQUITIES","content":[{"key":"AAPL","1":190.5},{"key":"KEY","1":20.1}]}]}'
    assert redact_text(quotes) is quotes  # Schwab's item key is its symbol
    ledger = '{"USD":{"currency":"USD","key":"LedgerList","cashbalance":1.5}}'
    assert redact_text(ledger) is ledger  # IBKR's ledger row type
    order = '[{"session":"NORMAL","duration":"DAY","orderType":"LIMIT","accountNumber":"123"}]'
    assert redact_text(order) == order  # Schwab's order session: an enum, published as it came in a replay
    assert not is_secret_key("key") and not is_secret_key("keys") and not is_secret_key("tokenExpiry")
    assert redact_text('{"session":"ce109cbeb462a76dc3f6f4182c830cc1"}') == '{"session":"[redacted]"}'


def test_a_frame_without_a_secret_is_kept_byte_for_byte():
    frame = '{"data":[{"service":"LEVELONE_EQUITIES","content":[{"key":"AAPL","1":190.50,"2":1e2,"code":0}]}]}'
    assert redact_text(frame) is frame
    assert redact_text("ech+hb") == "ech+hb"
    assert redact_url("https://api.example/v1/orders?fromEnteredTime=2026-12-05") == (
        "https://api.example/v1/orders?fromEnteredTime=2026-12-05")
    assert TOKEN not in redact_url(f"https://user:pw@api.example/v1?access_token={TOKEN}&a=1")


def _records(folder):
    return [r for p in sorted(folder.rglob("*.jsonl.zst")) for r in read_file(p)]


def test_a_slow_disk_drops_frames_from_the_recording_counted_and_never_blocks(tmp_path, monkeypatch):
    gate = threading.Event()
    real_write = writer_module.Recorder._write

    def slow_write(self, *args):
        gate.wait(5)  # the disk hangs until the test lets it go
        real_write(self, *args)

    monkeypatch.setattr(writer_module.Recorder, "_write", slow_write)
    recorder = Recorder(tmp_path / "rec", max_queue=100)
    rec = recorder.instance("tos", "tos")
    recorder.start()
    started = time.perf_counter()
    for i in range(10_000):
        rec.tap("in", f'{{"n":{i}}}', time.time())
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5  # 10,000 taps while the disk hangs: never waiting for it
    assert 9_800 <= rec.dropped < 10_000 and rec.queued == 10_000 - rec.dropped
    assert "dropped (disk too slow)" in rec.status()
    gate.set()
    deadline = time.monotonic() + 5
    while recorder._queue.qsize() and time.monotonic() < deadline:
        time.sleep(0.01)
    rec.tap("in", '{"n":"after"}', time.time())
    recorder.close()
    records = _records(tmp_path / "rec")
    assert sum(r["count"] for r in records if r["kind"] == "dropped") == rec.dropped
    assert [r["data"] for r in records if r["kind"] == "in"][-1] == '{"n":"after"}'


def test_the_queue_is_bounded_in_bytes_too(tmp_path):
    recorder = Recorder(tmp_path / "rec", max_bytes=10_000)  # not started: nothing is written meanwhile
    rec = recorder.instance("tos", "tos")
    for i in range(100):
        rec.tap("in", "x" * 1000, 1.0)
    assert (rec.queued, rec.dropped) == (10, 90)
    recorder.start()
    recorder.close()
    assert recorder.written_bytes == recorder.queued_bytes == 10_000
    rec.tap("in", "y" * 1000, 2.0)  # the backlog is gone: room again
    assert rec.queued == 11


def test_one_folder_per_instance_one_file_per_hour_and_binary_frames(tmp_path):
    recorder = Recorder(tmp_path / "rec")
    tos = recorder.instance("tos", "tos", settings={"account_activity": False,
                                                    "schwab": {"app_key": "K-1", "app_secret": TOKEN}})  # fmt: skip
    ibkr = recorder.instance("ibkr", "ibkr")
    recorder.start()
    hour = 1_796_000_400.0  # 2026-12-01 00:00 UTC... some hour
    tos.tap("in", '{"a":1}', hour + 10)
    tos.tap("out", b"\x00\xffbinary", hour + 20)
    tos.tap("out", b'{"token":"' + TOKEN.encode() + b'"}', hour + 21)
    tos.tap("in", '{"a":2}', hour + 3600 + 5)
    ibkr.tap("in", "ech+hb", hour + 30)
    recorder.close()
    files = sorted(p.relative_to(tmp_path / "rec").as_posix() for p in (tmp_path / "rec").rglob("*.jsonl.zst"))
    assert files == [f"ibkr/{time.strftime('%Y%m%d-%H', time.gmtime(hour))}.jsonl.zst",
                     f"tos/{time.strftime('%Y%m%d-%H', time.gmtime(hour))}.jsonl.zst",
                     f"tos/{time.strftime('%Y%m%d-%H', time.gmtime(hour + 3600))}.jsonl.zst"]  # fmt: skip
    recording = Recording(tmp_path / "rec")
    records = list(recording.records("tos"))
    assert [r["kind"] for r in records] == ["meta", "in", "withheld", "out", "meta", "in"]
    assert records[0]["plugin"] == "tos" and records[0]["format"] == 1
    assert recording.settings("tos") == {"account_activity": False,  # the replay's settings, secrets out
                                         "schwab": {"app_key": REDACTED, "app_secret": REDACTED}}  # fmt: skip
    assert records[2] == {"t": hour + 20, "kind": "withheld", "direction": "out", "bytes": 8}  # not text: left out
    assert records[3] == {"t": hour + 21, "kind": "out", "data": '{"token":"[redacted]"}', "binary": True}
    assert [r["t"] for r in recording.records("tos", end=hour + 20)] == [hour + 10, hour + 10, hour + 20]


def test_a_file_cut_short_by_a_crash_reads_up_to_its_last_flush(tmp_path):
    hour = time.time()
    sizes = []
    for run in range(2):  # two runs in one hour: the second appends its own zstd frames
        recorder = Recorder(tmp_path / "rec")
        rec = recorder.instance("tos", "tos")
        recorder.start()
        for i in range(2000):
            rec.tap("in", f'{{"run":{run},"n":{i},"pad":"{i * 7919 % 10007:x}"}}', hour)
        recorder.close()
        sizes.append(sum(p.stat().st_size for p in (tmp_path / "rec" / "tos").iterdir()))
    (path,) = (tmp_path / "rec" / "tos").iterdir()
    full = [json.loads(r["data"]) for r in read_file(path) if r["kind"] == "in"]
    assert len(full) == 4000
    path.write_bytes(path.read_bytes()[: (sizes[0] + sizes[1]) // 2])  # the crash: the second run's frame is cut
    kept = [json.loads(r["data"]) for r in read_file(path) if r["kind"] == "in"]
    assert 2000 <= len(kept) < 4000 and kept == full[: len(kept)]


def test_a_plugin_redaction_step_runs_after_cores(tmp_path):
    recorder = Recorder(tmp_path / "rec")
    rec = recorder.instance("acme", "acme", redact=lambda kind, text: text.replace("PIN-1234", "[pin]"))
    recorder.start()
    rec.tap("out", '{"pin":"PIN-1234","token":"x"}', 1.0)
    recorder.close()
    assert [r["data"] for r in _records(tmp_path / "rec") if r["kind"] == "out"] == ['{"pin":"[pin]","token":"[redacted]"}']


def test_rest_answers_are_recorded_redacted_and_replayed_by_what_they_answer(tmp_path):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": TOKEN, "expires_in": 1800})
        return httpx.Response(200, json={"symbol": request.url.params["symbol"], "n": request.url.params["startDate"]})

    recorder = Recorder(tmp_path / "rec")
    rec = recorder.instance("schwab", "schwab")
    recorder.start()

    async def live():
        async with httpx.AsyncClient(transport=recorded_transport(httpx.MockTransport(handler))) as client:
            assert (await client.get("https://x/a?symbol=A&startDate=0")).json() == {"symbol": "A", "n": "0"}  # before: not recorded
            HTTP_RECORDING.set(rec)
            await client.post("https://x/oauth/token", data={"refresh_token": TOKEN})
            for symbol, n in (("AAPL", 1), ("MSFT", 2), ("AAPL", 3)):
                await client.get(f"https://x/a?symbol={symbol}&startDate={n}&apikey={TOKEN}")

    asyncio.run(live())
    recorder.close()
    rest = [r for r in _records(tmp_path / "rec") if r["kind"] == "rest"]
    assert [(r["method"], r["url"].split("?")[0], r["status"]) for r in rest] == [
        ("POST", "https://x/oauth/token", 200), ("GET", "https://x/a", 200), ("GET", "https://x/a", 200),
        ("GET", "https://x/a", 200)]  # fmt: skip
    assert TOKEN not in json.dumps(rest) and "apikey=%5Bredacted%5D" in rest[1]["url"]

    async def replayed():
        def nothing(request):
            raise AssertionError("a replay must not reach the network")

        replay = RestReplay(rest)
        HTTP_RECORDING.set(replay)
        async with httpx.AsyncClient(transport=recorded_transport(httpx.MockTransport(nothing))) as client:
            # The symbol picks the answer, whatever order the replay asks in; times and the (placeholder) key do not.
            answers = [(await client.get(f"https://x/a?startDate=9&symbol={s}&apikey=x")).json()
                       for s in ("MSFT", "AAPL", "AAPL", "AAPL")]  # fmt: skip
            missing = [await client.get("https://x/unknown"), await client.get("https://x/a?symbol=IBM&startDate=1")]
        return answers, missing, replay

    answers, missing, replay = asyncio.run(replayed())
    assert answers == [{"symbol": "MSFT", "n": "2"}, {"symbol": "AAPL", "n": "1"}, {"symbol": "AAPL", "n": "3"},
                       {"symbol": "AAPL", "n": "3"}]  # in order per symbol, then the last again  # fmt: skip
    assert [m.status_code for m in missing] == [404, 404] and (replay.served, replay.missing) == (4, 2)


def test_a_replayed_answer_is_looked_up_by_the_parameters_naming_what_is_asked():
    key = request_key
    assert key("GET", "https://h/iserver/secdef/search?symbol=AAPL&secType=STK") != key(
        "GET", "https://h/iserver/secdef/search?symbol=MSFT&secType=STK")
    assert key("GET", "https://h/md/snapshot?conids=1,2") != key("GET", "https://h/md/snapshot?conids=1,3")
    assert key("get", "https://h/p?b=2&a=1") == key("GET", "https://other/p?a=1&b=2")  # order, host, case of method
    # times (the replay asks its own) and secrets (redacted when recorded) are not compared
    assert key("GET", "https://h/accounts/H/orders?fromEnteredTime=2026-12-05T00:00:00.000Z&toEnteredTime=x&maxResults=3000") == key(
        "GET", "https://h/accounts/H/orders?fromEnteredTime=2026-12-06T00:00:00.000Z&toEnteredTime=y&maxResults=3000")
    assert key("GET", "https://h/pricehistory?symbol=AAPL&startDate=1&endDate=2&apikey=%5Bredacted%5D") == key(
        "GET", "https://h/pricehistory?symbol=AAPL&startDate=3&endDate=4&apikey=K")
    assert key("GET", "https://h/accounts/A") != key("GET", "https://h/accounts/B")


def test_record_dir_in_the_configuration_and_on_the_command_line(tmp_path):
    assert load_config({"record": {"dir": str(tmp_path / "r")}}, env={}).record_dir == str(tmp_path / "r")
    assert load_config({}, env={}).record_dir is None
    for bad in ({"dir": ""}, {"dir": 3}, {"folder": "x"}):
        with pytest.raises(ConfigError, match="record"):
            load_config({"record": bad}, env={})
    assert build_parser().parse_args(["run", "--record", "rec"]).record == "rec"
    args = build_parser().parse_args(["replay", "rec", "--speed", "max", "--from", "+5", "--to", "2026-12-05T14:30:00"])
    assert (args.dir, args.speed, args.start, args.end) == ("rec", "max", "+5", "2026-12-05T14:30:00")


def test_replay_speed_and_times():
    assert parse_speed("max") is None and parse_speed("10") == 10.0 and parse_speed("1") == 1.0
    for bad in ("0", "-1", "fast"):
        with pytest.raises(ConfigError, match="--speed"):
            parse_speed(bad)
    assert parse_time("+30", 1000.0) == 1030.0
    assert parse_time("1764945000", None) == 1764945000.0
    assert parse_time("2026-12-05T14:30:00", None) == parse_time("2026-12-05T14:30:00+00:00", None)
    assert parse_time("2026-12-05T15:30:00+01:00", None) == parse_time("2026-12-05T14:30:00", None)
    with pytest.raises(ConfigError, match="is not a time"):
        parse_time("yesterday", None)


def test_a_folder_that_is_not_a_recording_is_refused_clearly(tmp_path):
    with pytest.raises(ConfigError, match="is not a folder"):
        Recording(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="holds no recording"):
        Recording(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot record into"):
        Recorder(tmp_path / "file" / "rec")
