"""The SRT binding's own bounds against real libsrt on 127.0.0.1: a caller accepted with
`discard_input` has what it sends read and dropped (nothing reaches the loop, the caller still
receives), a host over the handshake rate is refused with the listener's code without the
hook running, and what a connection keeps unread is capped (the newest kept)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.srt import (
    Accept,
    HandshakeInfo,
    PeerRate,
    Reject,
    SrtOptions,
    SrtReactor,
    SrtRejected,
    open_socket_count,
)
from gateway.srt import connection as srt_connection


async def test_a_caller_accepted_with_discard_input_sends_into_nothing() -> None:
    before = open_socket_count()
    async with SrtReactor() as reactor:

        async def hook(info: HandshakeInfo) -> Accept:
            return Accept(discard_input=True)

        listener = await reactor.listen("127.0.0.1", 0, None, hook)
        caller = await reactor.connect("127.0.0.1", listener.port)
        async with asyncio.timeout(5):
            server_side = await listener.accept()
        message = bytes(range(256)) * 5 + bytes(36)  # 1316 bytes
        sent = 0
        async with asyncio.timeout(10):
            while sent < 2000:
                sent += caller.send_many([message] * 50)
                await asyncio.sleep(0.002)
            assert await caller.flush(5)  # the listener acknowledged all of it
        async with asyncio.timeout(5):  # delivered at the end of their latency
            while reactor.counters().discarded_bytes < sent * len(message):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert reactor.counters().discarded_bytes == sent * len(message)
        # Nothing was kept for the loop: a read only ends with the connection.
        reader = asyncio.ensure_future(server_side.recv_batch())
        await asyncio.sleep(0.3)
        assert not reader.done()
        # The other direction still works.
        assert server_side.send(b"to the caller")
        async with asyncio.timeout(5):
            assert await caller.recv_batch() == [b"to the caller"]
        caller.close()
        async with asyncio.timeout(10):
            assert await reader == []
        server_side.close()
        await listener.aclose()
    assert open_socket_count() == before


async def test_a_host_over_the_handshake_rate_gets_the_code_without_the_hook() -> None:
    asked = 0

    async def hook(info: HandshakeInfo) -> Accept | Reject:
        nonlocal asked
        asked += 1
        return Reject(1400)

    async with SrtReactor() as reactor:
        listener = await reactor.listen(
            "127.0.0.1",
            0,
            None,
            hook,
            handshake_rate=PeerRate(0.5, 5.0),
            rate_reject_code=1402,
        )
        codes = []
        for n in range(12):
            options = SrtOptions(stream_id=f"#!::r=x{n}", connect_timeout_ms=3000)
            try:
                async with asyncio.timeout(10):
                    conn = await reactor.connect("127.0.0.1", listener.port, options)
                conn.close()
            except SrtRejected as exc:
                codes.append(exc.reject_code)
        assert codes == [1400] * 5 + [1402] * 7  # a burst of 5, then 0.5 a second
        assert asked == 5
        assert listener.rate_refused == 7
        remembered = listener.remembered()
        assert remembered["rate_peers"] == 1
        assert remembered["recent_rejects"] == 5  # the hook's refusals, for retransmissions
        await listener.aclose()


async def test_what_nobody_reads_is_capped_keeping_the_newest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(srt_connection, "MAX_UNREAD_BYTES", 64 * 1316)
    async with SrtReactor() as reactor:

        async def hook(info: HandshakeInfo) -> Accept:
            return Accept()

        listener = await reactor.listen("127.0.0.1", 0, None, hook)
        caller = await reactor.connect("127.0.0.1", listener.port)
        async with asyncio.timeout(5):
            server_side = await listener.accept()
        messages = [n.to_bytes(4, "big") * 329 for n in range(300)]
        sent = 0
        async with asyncio.timeout(10):
            while sent < len(messages):
                sent += caller.send_many(messages[sent : sent + 20])
                await asyncio.sleep(0.002)
            assert await caller.flush(5)
            while server_side.dropped_unread_bytes + 64 * 1316 < 300 * 1316:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        kept = await server_side.recv_batch()
        assert len(kept) == 64
        assert kept == messages[-64:]  # the newest, in order
        assert server_side.dropped_unread_bytes == (300 - 64) * 1316
        caller.close()
        server_side.close()
        await listener.aclose()
