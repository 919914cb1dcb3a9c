"""`lib.recvmsg_drain`, the reactor's receive loop, on a raw non-blocking libsrt socket fed by a
real peer over 127.0.0.1: order, content, the `max_msgs` cap, and the error left behind."""

from __future__ import annotations

import asyncio
import ctypes

import pytest

from gateway.srt import SrtReactor, SrtSocket, lib, open_socket_count
from gateway.srt.lib import SockOpt, SrtErrno
from tests.unit.gateway.test_srt_reactor import accept_all, raw_connect

COUNT = 10


@pytest.fixture
def no_leaks() -> object:
    before = open_socket_count()
    yield before
    assert open_socket_count() == before


async def wait_buffered(raw: SrtSocket, count: int) -> None:
    """Until `count` packets sit in `raw`'s receive buffer, then past their play time."""
    async with asyncio.timeout(10):
        for _ in range(1000):
            if raw.get_int(SockOpt.SRTO_RCVDATA) >= count:
                break
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.4)  # > the 120 ms default latency: every one of them is due


async def test_drain_returns_every_due_message_in_order_then_leaves_easyncrcv(
    no_leaks: object,
) -> None:
    buf = ctypes.create_string_buffer(1500)
    async with SrtReactor() as reactor:
        listener = await reactor.listen("127.0.0.1", 0, None, accept_all)
        raw = SrtSocket.create()
        try:
            await asyncio.to_thread(raw_connect, raw, listener.port)
            raw.set_int(SockOpt.SRTO_RCVSYN, 0)
            server_side = await asyncio.wait_for(listener.accept(), 5)
            assert lib.recvmsg_drain(raw.handle, buf, len(buf), 100) == []
            assert lib.getlasterror()[0] == SrtErrno.SRT_EASYNCRCV
            sizes = [1316, 188, 1, 1316, 600, 1316, 1316, 4, 1316, 1316]
            payloads = tuple(bytes([i + 1]) * size for i, size in enumerate(sizes))
            assert server_side.send_many(payloads) == COUNT
            await wait_buffered(raw, COUNT)

            # A cap below what is waiting: exactly that many, the first ones.
            first = lib.recvmsg_drain(raw.handle, buf, len(buf), 3)
            assert first == list(payloads[:3])
            rest = lib.recvmsg_drain(raw.handle, buf, len(buf), 100)
            assert lib.getlasterror()[0] == SrtErrno.SRT_EASYNCRCV  # why it stopped
            assert rest == list(payloads[3:])
            assert [len(m) for m in first + rest] == sizes
            assert all(type(m) is bytes for m in rest)
            assert lib.recvmsg_drain(raw.handle, buf, len(buf), 100) == []
            assert lib.getlasterror()[0] == SrtErrno.SRT_EASYNCRCV
            server_side.close()
        finally:
            await asyncio.to_thread(raw.close)
        await listener.aclose()


async def test_drain_on_a_closed_socket_leaves_a_different_error(no_leaks: object) -> None:
    buf = ctypes.create_string_buffer(1500)
    async with SrtReactor():  # libsrt started
        raw = SrtSocket.create()
        handle = raw.handle
        raw.close()
        assert lib.recvmsg_drain(handle, buf, len(buf), 100) == []
        assert lib.getlasterror()[0] == SrtErrno.SRT_EINVSOCK


def test_a_size_past_the_buffer_is_refused() -> None:
    buf = ctypes.create_string_buffer(100)
    with pytest.raises(ValueError, match="exceeds"):
        lib.recvmsg_drain(1, buf, 101, 10)


async def test_the_typed_srt_recvmsg_keeps_its_prototype(no_leaks: object) -> None:
    # The drain binds its own untyped pointer; the typed one `recvmsg` uses must not change.
    buf = ctypes.create_string_buffer(1500)
    async with SrtReactor():
        raw = SrtSocket.create()
        handle = raw.handle
        raw.close()
        lib.recvmsg_drain(handle, buf, len(buf), 1)
        restype, argtypes = lib._PROTOTYPES["srt_recvmsg"]
        typed = lib._l().srt_recvmsg
        assert typed.argtypes == argtypes
        assert typed.restype is restype
        assert lib.recvmsg(handle, buf, len(buf)) == -1
