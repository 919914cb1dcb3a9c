"""`SrtConnection.send_many`: a burst in one call over real libsrt loopback pairs."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.srt import (
    SrtConnection,
    SrtConnectionLost,
    SrtError,
    SrtOptions,
    SrtReactor,
    SrtSocket,
    open_socket_count,
    srt_now_us,
)
from gateway.srt.lib import SrtErrno
from tests.unit.gateway.test_srt_reactor import accept_all, numbered, pair, raw_connect, receive


@pytest.fixture
def no_leaks() -> object:
    before = open_socket_count()
    yield before
    assert open_socket_count() == before


def ids(messages: list[bytes]) -> list[int]:
    return [int.from_bytes(m[:4], "big") for m in messages]


async def test_bursts_arrive_complete_and_in_order(no_leaks: object) -> None:
    async with SrtReactor() as reactor:
        listener, caller, server_side = await pair(reactor)
        # libsrt refuses a source time before the connection started (SRT_EINVALMSGAPI).
        await asyncio.sleep(0.05)
        sent = 0
        for burst in range(40):
            payloads = tuple(numbered(burst * 25 + i) for i in range(25))
            # Half the bursts stamped 30 ms in the past (inside the 120 ms latency), half now.
            srctime = srt_now_us() - 30_000 if burst % 2 else None
            assert server_side.send_many(payloads, srctime_us=srctime) == 25
            sent += 25
            await asyncio.sleep(0)
        assert server_side.send_many((), srctime_us=srt_now_us()) == 0
        got = await receive(caller, sent)
        assert ids(got) == list(range(sent))
        assert all(m == numbered(i) for i, m in enumerate(got))
        caller.close()
        server_side.close()
        await listener.aclose()


async def play_delay_s(sender: SrtConnection, receiver: SrtConnection, age_us: int | None) -> float:
    """Seconds from send_many to arrival of one message whose source time is `age_us` old."""
    t0 = time.monotonic()
    srctime = None if age_us is None else srt_now_us() - age_us
    assert sender.send_many((b"x" * 188,), srctime_us=srctime) == 1
    assert await receive(receiver, 1) == [b"x" * 188]
    return time.monotonic() - t0


async def test_the_source_time_sets_the_receivers_play_time(no_leaks: object) -> None:
    # The receiver plays a message out at its source time plus the latency (TSBPD): stamped
    # 250 ms in the past with a 400 ms latency it arrives about 250 ms sooner than one stamped now.
    options = SrtOptions(latency_ms=400)
    async with SrtReactor() as reactor:
        listener, caller, server_side = await pair(reactor, accept_all, options, options)
        await asyncio.sleep(0.5)  # source times must not precede the connection's start
        now_delay = await play_delay_s(server_side, caller, None)
        early_delay = await play_delay_s(server_side, caller, 250_000)
        assert now_delay >= 0.3, now_delay
        assert early_delay <= now_delay - 0.15, (early_delay, now_delay)
        caller.close()
        server_side.close()
        await listener.aclose()


async def test_a_full_send_buffer_stops_the_burst_with_a_short_count(no_leaks: object) -> None:
    async with SrtReactor() as reactor:
        listener = await reactor.listen("127.0.0.1", 0, None, accept_all)
        raw = SrtSocket.create()  # connected, never reads
        try:
            await asyncio.to_thread(raw_connect, raw, listener.port)
            server_side = await asyncio.wait_for(listener.accept(), 5)
            burst = tuple(bytes(1316) for _ in range(64))
            short = None
            async with asyncio.timeout(20):
                for _ in range(20_000):
                    t0 = time.perf_counter()
                    queued = server_side.send_many(burst, srctime_us=srt_now_us())
                    assert time.perf_counter() - t0 < 0.05, "send_many blocked"
                    if queued < len(burst):
                        short = queued
                        break
                    await asyncio.sleep(0)
            assert short is not None, "send_many never reported a full buffer"
            assert 0 <= short < len(burst)
            assert server_side.send_buffer_bytes() > 0
            # Still full: nothing of a further burst goes, and the single send agrees.
            assert server_side.send_many(burst[:4], srctime_us=None) == 0
            assert server_side.send(burst[0]) is False
            server_side.close()
        finally:
            await asyncio.to_thread(raw.close)
        await listener.aclose()


async def test_a_failing_payload_raises_with_its_code_and_the_ones_before_it_go(
    no_leaks: object,
) -> None:
    async with SrtReactor() as reactor:
        listener, caller, server_side = await pair(reactor)
        too_big = bytes(1500)  # over the 1316-byte payload size
        with pytest.raises(SrtError) as caught:
            server_side.send_many((numbered(0), too_big, numbered(2)), srctime_us=srt_now_us())
        assert caught.value.code == SrtErrno.SRT_EINVALMSGAPI  # live mode: over payload_size
        assert caught.value.op == "srt_sendmsg2"
        assert server_side.send_many((numbered(1),), srctime_us=None) == 1
        assert ids(await receive(caller, 2)) == [0, 1]
        server_side.close()
        with pytest.raises(SrtError) as closed:
            server_side.send_many((numbered(3),), srctime_us=None)
        assert closed.value.code == SrtErrno.SRT_ESCLOSED
        assert closed.value.op == "srt_sendmsg2"
        async with asyncio.timeout(5):
            assert await caller.recv_batch() == []
        with pytest.raises(SrtConnectionLost) as lost:
            caller.send_many((b"anyone there?",), srctime_us=srt_now_us())
        assert lost.value.op == "srt_sendmsg2"
        caller.close()
        await listener.aclose()
