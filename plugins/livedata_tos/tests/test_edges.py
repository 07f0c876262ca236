"""Edges of the stream's lifecycle: refused tokens, refused commands, cancellation, a hung server, odd JSON."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from livedata_core.aio_tools import within
from livedata_core.errors import AuthError, BrokerError, StreamError
from livedata_core.runner import Runner, load_config
from livedata_core.testing import running
from livedata_core.plugin_kit.tokens import MemoryTokenStore
from livedata_tos import plugin
from livedata_tos.settings import TosSettings
from livedata_tos.stream import TosStream
from livedata_tos.testing import FakeSchwabClient, FakeStreamer, FakeTokens, activity_item, notify_frame, open_stream


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


@contextlib.asynccontextmanager
async def streaming_aapl(redis_url: str, fake: FakeStreamer, monkeypatch, command_timeout: float = 2.0):
    """A runner streaming AAPL from ``fake`` for the length of the block."""
    runner = runner_for(redis_url, fake, FakeTokens(), monkeypatch, command_timeout=command_timeout)
    async with running(runner):
        await fake.wait_for(lambda: fake.subscriptions.get("LEVELONE_EQUITIES") == {"AAPL"})
        yield runner


def runner_for(redis_url: str, fake: FakeStreamer, tokens: FakeTokens, monkeypatch, symbols=("AAPL",),
               command_timeout: float = 2.0) -> Runner:  # fmt: skip
    client = FakeSchwabClient(fake, tokens)
    monkeypatch.setattr(plugin, "make_client", lambda settings, store, log, status=None: client)
    table = {"symbols": list(symbols), "login_timeout": 2.0, "command_timeout": command_timeout,
             "heartbeat_timeout": 5.0, "connection_limit_retry": 0.2}  # fmt: skip
    config = load_config({"redis": {"url": redis_url}, "brokers": {"tos": table},
                          "backoff": {"initial": 0.02, "max": 0.1, "login_retry": 60.0}})  # fmt: skip
    return Runner(config, token_store=MemoryTokenStore())


# -- tokens --------------------------------------------------------------------------------------------------


def test_a_token_refused_on_a_live_connection_is_never_sent_again():
    async def main():
        tokens = FakeTokens("T1", "T2")
        source = tokens.source()
        async with FakeStreamer(valid_tokens=["T1"]) as fake:
            stream = TosStream(fake.info(), source, login_timeout=2, command_timeout=2)
            await stream.connect()
            await fake.send(notify_frame(3, "Login Denied.: token is invalid or has expired."))
            with pytest.raises(AuthError):
                async for _ in stream.events():
                    pass
            await stream.close()
            fake.valid_tokens = {"T2"}
            again = TosStream(fake.info(), source, login_timeout=2, command_timeout=2)
            await again.connect()
            await again.close()
        assert fake.login_tokens == ["T1", "T2"] and tokens.refreshes == 1

    run(main())


def test_a_login_denied_even_after_a_refresh_asks_for_a_person_instead_of_refreshing_forever(redis_server, monkeypatch):
    async def main():
        tokens = FakeTokens("A", "B")
        async with FakeStreamer(valid_tokens=["never"]) as fake:
            async with running(runner_for(redis_server.url, fake, tokens, monkeypatch)) as runner:
                for _ in range(100):
                    await asyncio.sleep(0.02)
                    if runner.status()["brokers"]["tos"]["state"] == "login_required":
                        break
                status = runner.status()["brokers"]["tos"]
                await asyncio.sleep(0.3)  # and it stays there: no more logins, no more refreshes
        assert status["state"] == "login_required"
        assert "livedata auth schwab" in status["last_error"]
        assert fake.login_tokens == ["A", "B"] and tokens.refreshes == 1

    run(main())


def test_a_token_denied_after_someone_else_rotated_it_is_refreshed_not_taken_for_a_hopeless_login():
    async def main():
        tokens = FakeTokens("t1", "t2")
        source = tokens.source()
        source.rejected()  # t1 denied
        assert await source.for_login() == "t2"  # refreshed; say that login got no answer at all
        tokens.current = "t3"  # another process refreshed meanwhile
        assert await source.for_login() == "t3"
        source.rejected()  # t3 denied: not the token refreshed after the first denial
        assert not source.denied_after_refresh("t3")
        assert await source.for_login() == "t2" and tokens.refreshes == 2  # refreshed again
        source.rejected()
        assert source.denied_after_refresh("t2")

    run(main())


# -- refused commands ----------------------------------------------------------------------------------------


def test_a_refused_live_subscribe_names_the_refused_symbols_and_status_tells_the_truth(redis_server, monkeypatch):
    async def main():
        async with FakeStreamer() as fake:
            async with streaming_aapl(redis_server.url, fake, monkeypatch) as runner:
                fake.command_codes[("LEVELONE_EQUITIES", "ADD")] = (19, "REACHED_SYMBOL_LIMIT")
                with pytest.raises(BrokerError, match="did not subscribe MSFT"):
                    await runner.subscribe("tos", ["MSFT", "/ES"])
                symbols = runner.status()["brokers"]["tos"]["symbols"]
        assert symbols == ["/ES", "AAPL"]  # /ES went to the futures service, which took it
        assert fake.subscriptions["LEVELONE_FUTURES"] == {"/ES"}

    run(main())


def test_a_subscribe_while_the_connection_drops_is_done_at_the_reconnect(redis_server, monkeypatch):
    async def main():
        async with FakeStreamer() as fake:
            async with streaming_aapl(redis_server.url, fake, monkeypatch) as runner:
                await fake.drop()
                answer = await runner.subscribe("tos", ["MSFT"])
                await fake.wait_for(lambda: fake.connected_total >= 2
                                    and fake.subscriptions.get("LEVELONE_EQUITIES") == {"AAPL", "MSFT"})  # fmt: skip
                symbols = runner.status()["brokers"]["tos"]["symbols"]
        assert answer["added"] == ["MSFT"] and symbols == ["AAPL", "MSFT"]

    run(main())


def test_a_refused_unsubscribe_keeps_the_state_so_a_later_subscribe_gives_complete_quotes():
    async def main():
        async with FakeStreamer() as fake, open_stream(fake, ["AAPL"], account_activity=False) as stream:
            events = stream.events()
            await fake.send_data("LEVELONE_EQUITIES", [{"key": "AAPL", "1": 190.0, "2": 190.1, "3": 190.05}])
            (first,) = await within(events.__anext__(), 2)
            fake.command_codes[("LEVELONE_EQUITIES", "UNSUBS")] = (23, "FAILED_COMMAND_UNSUBS")
            await stream.unsubscribe(["AAPL"])  # refused: the server goes on streaming AAPL
            await fake.send_data("LEVELONE_EQUITIES", [{"key": "AAPL", "1": 190.01}])  # merged, not yielded
            while stream._book.state("AAPL")["bid"] != 190.01:
                await asyncio.sleep(0.01)
            await stream.subscribe(["AAPL"])
            await fake.send_data("LEVELONE_EQUITIES", [{"key": "AAPL", "2": 190.2}])
            (after,) = await within(events.__anext__(), 2)
        assert stream.stats.skipped["unsubscribe failed"] == 1
        assert (first.bid, first.ask, first.last) == (190.0, 190.1, 190.05)
        assert (after.bid, after.ask, after.last) == (190.01, 190.2, 190.05)

    run(main())


@pytest.mark.parametrize("who_gives_up", ["the stream (command_timeout)", "the runner (its subscribe timeout)"])
def test_a_live_subscribe_the_streamer_never_answers_is_done_on_a_new_connection(redis_server, monkeypatch, who_gives_up):
    from livedata_core.runner import broker_runtime

    command_timeout = 2.0
    if who_gives_up.startswith("the runner"):
        command_timeout = 30.0  # as with the defaults: the runner's limit (10 s, shortened here) comes first
        monkeypatch.setattr(broker_runtime, "SUBSCRIBE_TIMEOUT", 0.5)

    class Forgetful(FakeStreamer):
        forgot = False

        async def _answer(self, ws, req, logged_in):
            keys = (req.get("parameters") or {}).get("keys", "")
            if req.get("command") == "ADD" and "MSFT" in keys and not self.forgot:
                self.forgot = True
                self.requests.append(req)
                return logged_in  # no answer, the connection stays up
            return await super()._answer(ws, req, logged_in)

    async def main():
        async with Forgetful() as fake:
            async with streaming_aapl(redis_server.url, fake, monkeypatch, command_timeout) as runner:
                answer = await runner.subscribe("tos", ["MSFT"])
                await fake.wait_for(lambda: fake.subscriptions.get("LEVELONE_EQUITIES") == {"AAPL", "MSFT"}, 8)
                status = runner.status()["brokers"]["tos"]
        assert answer["added"] == ["MSFT"] and fake.connected_total == 2
        if who_gives_up.startswith("the stream"):
            assert "did not answer LEVELONE_EQUITIES ADD" in status["last_error"]

    run(main())


def test_a_tiny_frame_queue_still_flows():
    async def main():
        async with FakeStreamer() as fake, open_stream(fake, ["AAPL"], account_activity=False, queue_frames=1) as stream:
            events = stream.events()
            for i in range(3):
                await fake.send_data("LEVELONE_EQUITIES", [{"key": "AAPL", "3": 100.0 + i}])
            lasts = [(await within(events.__anext__(), 2))[0].last for _ in range(3)]
            await stream.subscribe(["MSFT"])  # the reader still answers commands
        assert lasts == [100.0, 101.0, 102.0]

    run(main())


# -- cancellation and closing --------------------------------------------------------------------------------


def test_a_subscribe_cancelled_as_an_answer_arrives_stops_there():
    async def main():
        async with FakeStreamer() as fake, open_stream(fake, account_activity=False, max_keys_per_command=1) as stream:
            on_responses = stream._on_responses
            task: asyncio.Task | None = None

            def cancel_with_the_answer(responses):
                on_responses(responses)  # the ADD's future is now done ...
                if task is not None and not task.cancelling():
                    task.cancel()  # ... and the cancel lands in the same loop step

            stream._on_responses = cancel_with_the_answer
            task = asyncio.create_task(stream.subscribe(["A", "B", "C"]))
            with pytest.raises(asyncio.CancelledError):
                await task
            adds = [p["keys"] for _, command, p in fake.commands() if command == "ADD"]
        assert adds == ["A"]

    run(main())


def test_closing_against_a_hung_server_drops_the_connection_within_the_runners_bound():
    class Hung(FakeStreamer):
        hung = False

        async def _answer(self, ws, req, logged_in):
            if self.hung:
                self.requests.append(req)
                return logged_in
            return await super()._answer(ws, req, logged_in)

    async def main():
        async with Hung() as fake, open_stream(fake, account_activity=False) as stream:
            fake.hung = True
            started = asyncio.get_running_loop().time()
            with contextlib.suppress(TimeoutError):
                await within(stream.close(), 2.0)  # what the runner gives a stream to close
            took = asyncio.get_running_loop().time() - started
            await fake.wait_for(lambda: not fake.connections, 2)
        assert took < 2.0
        assert fake.commands()[-1][:2] == ("ADMIN", "LOGOUT")

    run(main())


def test_a_close_cancelled_while_the_server_hangs_raises_cancelled_and_stops_the_reader():
    async def main():
        async with FakeStreamer() as fake:
            stream = TosStream(fake.info(), FakeTokens().source(), account_activity=False, command_timeout=5)
            await stream.connect()
            (server_side,) = fake.connections
            server_side.transport.pause_reading()  # the server hangs: no LOGOUT answer, no closing handshake
            reader = stream._reader
            closing = asyncio.create_task(stream.close())
            await asyncio.sleep(0.3)
            closing.cancel()  # during LOGOUT: the socket is still shut, and the closing handshake times out
            with pytest.raises(asyncio.CancelledError):
                await closing
            await asyncio.sleep(0)
            server_side.transport.resume_reading()
            return reader.done()

    assert run(main())


# -- odd input -------------------------------------------------------------------------------------------------


def test_a_frame_orjson_refuses_still_delivers_the_orders_in_it():
    async def main():
        async with FakeStreamer() as fake, open_stream(fake, ["AAPL"]) as stream:
            events = stream.events()
            order = activity_item(1, "12345678", "OrderAccepted", {"SchwabOrderID": "42", "Status": "Open"})
            # Valid JSON for the standard library; orjson refuses the number out of float range.
            raw = ('{"data":[{"service":"ACCT_ACTIVITY","timestamp":0,"command":"SUBS","content":[%s]},'
                   '{"service":"LEVELONE_EQUITIES","timestamp":1,"command":"SUBS","content":[{"key":"AAPL",'
                   '"1":1e400,"3":190.5}]}]}') % json.dumps(order)  # fmt: skip
            await fake.send(raw)
            items = await within(events.__anext__(), 2)
        return items, stream.stats.skipped

    items, skipped = run(main())
    (order, quote) = items
    assert order.order_id == "42" and order.status == "open"
    assert quote.last == 190.5 and quote.bid is None
    assert skipped["LEVELONE_EQUITIES bad value"] == 1


def test_a_quote_is_published_only_once_the_symbol_has_a_price():
    async def main():
        async with FakeStreamer() as fake, open_stream(fake, ["AAPL"], account_activity=False) as stream:
            events = stream.events()
            await fake.send_data("LEVELONE_EQUITIES", [{"key": "AAPL", "delayed": False, "8": 100}])
            await fake.send_data("LEVELONE_EQUITIES", [{"key": "AAPL", "3": 190.5}])
            (quote,) = await within(events.__anext__(), 2)
        assert (quote.last, quote.volume) == (190.5, 100.0)

    run(main())


def test_credentials_in_a_proxy_streamer_url_never_show():
    url = "wss://proxyuser:proxyS3CRET@127.0.0.1:1/ws"
    settings = TosSettings(streamer_url=url)
    stream = TosStream(FakeStreamer().info(), FakeTokens().source(), url=url, open_timeout=1)

    async def connect():
        with pytest.raises(StreamError) as error:
            await stream.connect()
        return str(error.value)

    shown = [repr(settings), repr(stream), run(connect())]
    assert all("S3CRET" not in text for text in shown), shown
    assert "127.0.0.1:1" in shown[2]
    with pytest.raises(ValueError) as error:
        TosSettings(streamer_url="https://user:S3CRET@host/ws")
    assert "S3CRET" not in str(error.value)
