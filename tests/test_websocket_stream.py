"""WebSocketStream, the base of websocket brokers, against real local websocket servers (FrameServer).

A small protocol stands in for a broker: the client sends ``{"id": n, "op": ..., "value": ...}``; the server answers
``{"reply_to": n, "value": ...}`` and sends ``{"tick": n}`` frames, which the stream yields as ints.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from livedata_core.aio_tools import within
from livedata_core.errors import StreamError
from livedata_core.redis_io.server import free_port
from livedata_core.plugin_kit.streaming import HEARTBEAT
from livedata_core.testing import FrameServer
from livedata_core.plugin_kit.websocket_stream import WebSocketStream


class EchoStream(WebSocketStream):
    name = "the echo server"

    def __init__(self, url: str, **kwargs) -> None:
        super().__init__(url, **kwargs)
        self.next_id = 0

    def on_frame(self, raw):
        frame = self.decode(raw)
        if not isinstance(frame, dict):
            return None
        if "reply_to" in frame:
            if not self.resolve(frame["reply_to"], frame):
                self.offer(frame)
            return None
        if frame.get("boom"):
            raise ValueError("a parser bug")
        if "tick" in frame:
            return frame["tick"]
        self.stats.skip("unknown frame", frame)
        return None

    async def echo(self, value, op="echo", timeout=None):
        self.next_id += 1
        reply = await self.request({"id": self.next_id, "op": op, "value": value}, key=self.next_id,
                                   timeout=timeout, what=f"{op} {value}")  # fmt: skip
        return reply["value"]


class HoldingServer(FrameServer):
    """Answers ``echo`` at once; holds the answer to a ``hold`` until the next request has been answered."""

    def __init__(self, frames=(), **kwargs) -> None:
        super().__init__(frames, on_message=self.answer, **kwargs)
        self.held: list[dict] = []

    def answer(self, message):
        request = json.loads(message)
        if request.get("op") == "hold":
            self.held.append({"reply_to": request["id"], "value": request["value"]})
            return None
        if request.get("op") == "ignore":
            return None
        out = [{"reply_to": request["id"], "value": request["value"]}, *self.held]
        self.held.clear()
        return out


def run(coro):
    return asyncio.run(within(coro, 20))


def test_replies_are_matched_to_their_requests_by_id_even_out_of_order():
    async def main():
        async with HoldingServer() as server:
            stream = EchoStream(server.url)
            await stream.connect()
            first = asyncio.create_task(stream.echo("first", op="hold"))
            await asyncio.sleep(0.05)
            second = await stream.echo("second")
            result = (await first, second)
            await stream.close()
            return result

    assert run(main()) == ("first", "second")


def test_a_reply_is_matched_by_a_predicate():
    class Predicate(EchoStream):
        async def ask(self, value):
            await self.send({"id": 99, "op": "echo", "value": value})
            return await self.request(None, match=lambda f: f.get("value") == value, what="the echo")

    async def main():
        async with HoldingServer() as server:
            stream = Predicate(server.url)
            await stream.connect()
            reply = await stream.ask("x")
            await stream.close()
            return reply

    assert run(main()) == {"reply_to": 99, "value": "x"}


def test_an_unanswered_request_ends_the_connection_with_an_error_naming_it():
    async def main():
        async with HoldingServer([{"tick": 1}]) as server:
            stream = EchoStream(server.url)
            await stream.connect()
            with pytest.raises(StreamError) as raised:
                await stream.echo("lost", op="ignore", timeout=0.2)
            items = []
            with pytest.raises(StreamError) as ended:
                async for item in stream.events():
                    items.append(item)
            await stream.close()
            return str(raised.value), str(ended.value), items

    message, ended, items = run(main())
    assert message == "the echo server did not answer ignore lost within 0.2 s"
    assert ended == message
    assert items == [1]  # what arrived before is still handed over


def test_an_unreachable_broker_is_a_stream_error_naming_the_host():
    port = free_port()

    async def main():
        stream = EchoStream(f"ws://user:secret@127.0.0.1:{port}/feed")
        with pytest.raises(StreamError) as raised:
            await stream.connect()
        return str(raised.value)

    message = run(main())
    assert message.startswith(f"could not connect to the echo server at 127.0.0.1:{port}: ")
    assert "secret" not in message


def test_connect_has_a_deadline_for_open_and_login_together():
    class SlowLogin(EchoStream):
        connect_timeout = 0.3

        async def login(self):
            await self.echo("login", op="ignore", timeout=5)

    async def main():
        async with HoldingServer() as server:
            stream = SlowLogin(server.url)
            with pytest.raises(StreamError) as raised:
                await stream.connect()
            await asyncio.sleep(0.1)
            return str(raised.value), len(server.clients)

    message, clients = run(main())
    assert message == "the echo server did not finish connecting within 0.3 s"
    assert clients == 0  # the socket was closed


def test_pings_give_heartbeats_for_a_broker_that_sends_none():
    class Pinging(EchoStream):
        ping_interval = 0.05

    async def main():
        async with HoldingServer() as server:
            stream = Pinging(server.url)
            await stream.connect()
            events = stream.events()
            beats = [await within(events.__anext__(), 2) for _ in range(2)]
            await stream.close()
            return beats

    assert run(main()) == [HEARTBEAT, HEARTBEAT]


def test_without_ping_interval_a_quiet_broker_yields_nothing():
    async def main():
        async with HoldingServer() as server:
            stream = EchoStream(server.url)
            await stream.connect()
            events = stream.events()
            with pytest.raises(TimeoutError):
                await within(events.__anext__(), 0.3)
            await stream.close()

    run(main())


def test_a_frame_over_the_size_limit_ends_the_connection_naming_the_limit_and_is_counted():
    class Small(EchoStream):
        max_frame_bytes = 1000

    async def main():
        async with HoldingServer([{"tick": 1}, {"tick": 2, "pad": "x" * 2000}, {"tick": 3}]) as server:
            stream = Small(server.url)
            await stream.connect()
            items = []
            with pytest.raises(StreamError) as ended:
                async for item in stream.events():
                    items.append(item)
            await stream.close()
            return items, str(ended.value), dict(stream.stats.skipped)

    items, message, skipped = run(main())
    assert items == [1]
    assert "larger than 1000 bytes (max_frame_bytes)" in message
    assert skipped == {"frame larger than max_frame_bytes": 1}


def test_the_tap_sees_every_frame_in_and_out_with_its_time():
    seen = []

    async def main():
        async with HoldingServer([{"tick": 1}], wait_for_message=True) as server:
            stream = EchoStream(server.url, tap=lambda direction, data, t: seen.append((direction, data, t)))
            await stream.connect()
            assert await stream.echo("hello") == "hello"
            events = stream.events()
            tick = await within(events.__anext__(), 2)
            await stream.close()
            return tick

    assert run(main()) == 1
    directions = [(d, json.loads(data)) for d, data, _ in seen]
    assert directions[0] == ("out", {"id": 1, "op": "echo", "value": "hello"})
    assert ("in", {"reply_to": 1, "value": "hello"}) in directions and ("in", {"tick": 1}) in directions
    assert all(isinstance(t, float) and t > 1.6e9 for _, _, t in seen)  # wall-clock seconds


def test_a_tap_that_raises_is_removed_and_the_stream_goes_on(caplog):
    def broken(direction, data, t):
        raise RuntimeError("recorder bug")

    async def main():
        async with HoldingServer([{"tick": 1}, {"tick": 2}]) as server:
            stream = EchoStream(server.url, tap=broken)
            await stream.connect()
            events = stream.events()
            ticks = [await within(events.__anext__(), 2) for _ in range(2)]
            await stream.close()
            return ticks, stream.tap

    ticks, tap = run(main())
    assert ticks == [1, 2] and tap is None
    assert "the frame tap failed and was removed: RuntimeError: recorder bug" in caplog.text


def test_a_frame_the_parser_fails_on_is_counted_and_the_stream_goes_on():
    async def main():
        async with HoldingServer([{"boom": True}, "not json", {"tick": 7}]) as server:
            stream = EchoStream(server.url)
            await stream.connect()
            events = stream.events()
            tick = await within(events.__anext__(), 2)
            await stream.close()
            return tick, dict(stream.stats.skipped)

    tick, skipped = run(main())
    assert tick == 7
    assert skipped == {"frame could not be parsed": 1, "frame is not JSON": 1}


def test_requests_are_answered_while_events_is_being_read():
    async def main():
        async with HoldingServer([{"tick": n} for n in range(3)], interval=0.05) as server:
            stream = EchoStream(server.url)
            await stream.connect()
            ticks = []

            async def read():
                async for item in stream.events():
                    ticks.append(item)

            reader = asyncio.create_task(read())
            answers = [await stream.echo(n) for n in range(5)]
            while len(ticks) < 3:
                await asyncio.sleep(0.01)
            await stream.close()
            await within(reader, 2)
            return answers, ticks

    assert run(main()) == ([0, 1, 2, 3, 4], [0, 1, 2])


def test_after_close_events_hands_over_what_was_received_then_ends():
    async def main():
        async with HoldingServer([{"tick": 1}, {"tick": 2}]) as server:
            stream = EchoStream(server.url)
            await stream.connect()
            await asyncio.sleep(0.2)  # both ticks are queued, none read
            await stream.close()
            return [item async for item in stream.events()]

    assert run(main()) == [1, 2]


def test_a_close_cancelled_against_a_hung_server_raises_cancelled_and_leaves_no_socket():
    async def main():
        async with HoldingServer() as server:
            stream = EchoStream(server.url)
            stream.close_timeout = 5
            await stream.connect()
            (server_side,) = server.clients
            server_side.transport.pause_reading()  # no closing handshake will come
            closing = asyncio.create_task(stream.close())
            await asyncio.sleep(0.2)
            closing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await closing
            server_side.transport.resume_reading()
            async with asyncio.timeout(2):
                while server.clients:
                    await asyncio.sleep(0.01)
            return stream._reader

    assert run(main()) is None


def test_a_request_on_a_closed_stream_is_a_stream_error():
    async def main():
        async with HoldingServer() as server:
            stream = EchoStream(server.url)
            await stream.connect()
            await stream.close()
            with pytest.raises(StreamError, match="the connection to the echo server is closed"):
                await stream.echo("late")
            with contextlib.suppress(StreamError):
                await stream.send({"op": "x"})

    run(main())


def test_a_dropped_connection_fails_the_waiting_request_and_ends_events():
    async def main():
        async with HoldingServer() as server:
            stream = EchoStream(server.url)
            await stream.connect()
            waiting = asyncio.create_task(stream.echo("never", op="ignore", timeout=5))
            await asyncio.sleep(0.1)
            await server.drop()
            with pytest.raises(StreamError) as raised:
                await waiting
            with pytest.raises(StreamError) as ended:
                async for _ in stream.events():
                    pass
            await stream.close()
            return str(raised.value), str(ended.value)

    raised, ended = run(main())
    assert raised == ended and raised.startswith("the echo server connection was lost")


def test_frames_stay_out_of_debug_logs_after_a_logging_config_resets_the_levels():
    # Django's LOGGING naming "livedata" resets every existing child logger's level (logging.config.dictConfig);
    # websockets' DEBUG records of each frame (a login frame carries a token) must still not be logged.
    import logging
    import logging.config

    livedata, ws = logging.getLogger("livedata"), logging.getLogger("livedata.websocket")
    saved = (livedata.level, livedata.handlers[:], livedata.propagate, ws.level)
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                               "loggers": {"livedata": {"level": "DEBUG"}}})  # fmt: skip
    livedata.addHandler(Keep(logging.DEBUG))
    try:
        async def main():
            async with HoldingServer() as server:
                stream = EchoStream(server.url)
                await stream.connect()
                value = await stream.echo("secret-token-42")
                await stream.close()
                return value

        assert run(main()) == "secret-token-42"
        logging.getLogger("livedata.websocket_test").debug("probe")  # the handler does see DEBUG records
    finally:
        livedata.setLevel(saved[0])
        livedata.handlers[:] = saved[1]
        livedata.propagate = saved[2]
        ws.setLevel(saved[3])
    assert "probe" in seen
    assert not [m for m in seen if "secret-token-42" in m]
