"""The SRT reactor against real libsrt on 127.0.0.1: data both ways, batching, the handshake
hook (reject codes, per-stream passphrases, failing hooks), statistics, send-side back
pressure, logging, and that every libsrt socket is closed again."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import itertools
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.srt import (
    Accept,
    HandshakeInfo,
    Reject,
    SrtConnection,
    SrtConnectionLost,
    SrtError,
    SrtListener,
    SrtOptions,
    SrtReactor,
    SrtRejected,
    SrtSocket,
    SrtTimeout,
    lib,
    open_socket_count,
)
from gateway.srt.addresses import pack_sockaddr
from gateway.srt.lib import SockOpt, SockStatus

ROOT = Path(__file__).resolve().parents[3]
Hook = Callable[[HandshakeInfo], Awaitable[Accept | Reject]]


async def accept_all(info: HandshakeInfo) -> Accept:
    return Accept(context=info.stream_id)


async def pair(
    reactor: SrtReactor,
    hook: Hook = accept_all,
    listen_options: SrtOptions | None = None,
    caller_options: SrtOptions | None = None,
) -> tuple[SrtListener, SrtConnection, SrtConnection]:
    """A listener, a connected caller and the listener's side of it."""
    listener = await reactor.listen("127.0.0.1", 0, listen_options, hook)
    caller = await reactor.connect("127.0.0.1", listener.port, caller_options)
    async with asyncio.timeout(5):
        server_side = await listener.accept()
    return listener, caller, server_side


async def receive(conn: SrtConnection, count: int, timeout_s: float = 10.0) -> list[bytes]:
    got: list[bytes] = []
    async with asyncio.timeout(timeout_s):
        while len(got) < count:
            batch = await conn.recv_batch()
            assert batch, "connection ended early"
            got.extend(batch)
    return got


def numbered(i: int, size: int = 1316) -> bytes:
    return i.to_bytes(4, "big") * (size // 4)


async def eventually(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll `predicate` until true (bounded)."""
    async with asyncio.timeout(timeout_s):
        for _ in range(int(timeout_s * 100)):
            if predicate():
                return
            await asyncio.sleep(0.01)


@pytest.fixture
def no_leaks() -> object:
    before = open_socket_count()
    yield before
    assert open_socket_count() == before


async def test_listener_and_caller_exchange_messages_both_ways(no_leaks: object) -> None:
    async with SrtReactor() as reactor:
        listener, caller, server_side = await pair(
            reactor, caller_options=SrtOptions(stream_id="#!::r=live/x,m=publish")
        )
        assert server_side.stream_id == "#!::r=live/x,m=publish"
        assert server_side.context == "#!::r=live/x,m=publish"
        assert server_side.peer[0] == "127.0.0.1"
        assert caller.peer == ("127.0.0.1", listener.port)
        assert caller.send(b"hello listener")
        assert await receive(server_side, 1) == [b"hello listener"]
        assert server_side.send(b"hello caller")
        assert await receive(caller, 1) == [b"hello caller"]
        caller.close()
        server_side.close()
        await listener.aclose()


async def test_callers_bound_to_one_local_port_share_it_and_each_get_their_data(
    no_leaks: object,
) -> None:
    async with SrtReactor() as reactor:
        listener = await reactor.listen("127.0.0.1", 0, None, accept_all)
        probe = await reactor.connect("127.0.0.1", listener.port, local=("127.0.0.1", 0))
        async with asyncio.timeout(5):
            first = await listener.accept()
        local_port = first.peer[1]
        a = await reactor.connect(
            "127.0.0.1", listener.port, SrtOptions(stream_id="a"), local=("127.0.0.1", local_port)
        )
        b = await reactor.connect(
            "127.0.0.1", listener.port, SrtOptions(stream_id="b"), local=("127.0.0.1", local_port)
        )
        accepted = {}
        async with asyncio.timeout(5):
            for _ in range(2):
                conn = await listener.accept()
                accepted[conn.stream_id] = conn
        # the listener sees every caller coming from the one port they were bound to
        assert {conn.peer for conn in accepted.values()} == {("127.0.0.1", local_port)}
        assert accepted["a"].send(b"for a")
        assert accepted["b"].send(b"for b")
        assert await receive(a, 1) == [b"for a"]
        assert await receive(b, 1) == [b"for b"]
        for conn in (probe, first, a, b, *accepted.values()):
            conn.close()
        await listener.aclose()


async def test_a_burst_arrives_complete_in_order_in_few_loop_callbacks(no_leaks: object) -> None:
    async with SrtReactor() as reactor:
        listener, caller, server_side = await pair(reactor)
        calls_before = reactor.counters().loop_calls
        for i in range(2000):
            assert caller.send(numbered(i))
        got = await receive(server_side, 2000)
        assert [int.from_bytes(m[:4], "big") for m in got] == list(range(2000))
        assert all(m == numbered(i) for i, m in enumerate(got))
        counters = reactor.counters()
        calls = counters.loop_calls - calls_before
        # One call_soon_threadsafe per wake-up carrying every message since the last one.
        assert calls <= 200, f"{calls} loop callbacks for 2000 messages"
        assert counters.messages >= 2000
        caller.close()
        server_side.close()
        listener.close()


async def test_link_stats_count_the_traffic(no_leaks: object) -> None:
    async with SrtReactor() as reactor:
        listener, caller, server_side = await pair(reactor)
        for i in range(300):
            assert caller.send(numbered(i))
        await receive(server_side, 300)
        recv_stats = server_side.stats()
        send_stats = caller.stats()
        payload = 300 * 1316
        assert recv_stats.pkt_recv >= 300
        assert recv_stats.bytes_recv >= payload
        assert recv_stats.bytes_recv_unique >= payload
        assert send_stats.pkt_sent >= 300
        assert send_stats.bytes_sent >= payload
        assert send_stats.pkt_sent_unique == 300
        assert recv_stats.rtt_ms >= 0
        assert recv_stats.pkt_recv_loss == 0
        caller.close()
        # After close, stats() is the snapshot taken at close.
        assert caller.stats().pkt_sent_unique == 300
        server_side.close()
        listener.close()


async def test_hook_reject_reaches_the_caller_as_its_code(no_leaks: object) -> None:
    seen: list[HandshakeInfo] = []

    async def hook(info: HandshakeInfo) -> Accept | Reject:
        seen.append(info)
        return Reject(1403)

    async with SrtReactor() as reactor:
        listener = await reactor.listen("127.0.0.1", 0, None, hook)
        with pytest.raises(SrtRejected) as caught:
            await reactor.connect(
                "127.0.0.1", listener.port, SrtOptions(stream_id="#!::r=live/no,m=publish")
            )
        assert caught.value.reject_code == 1403
        assert caught.value.code == lib.SrtErrno.SRT_ECONNREJ
        assert caught.value.op == "srt_connect"
        assert "forbidden" in str(caught.value)
        assert isinstance(caught.value, ConnectionRefusedError)
        assert [i.stream_id for i in seen] == ["#!::r=live/no,m=publish"]
        assert seen[0].peer[0] == "127.0.0.1"
        await listener.aclose()


@pytest.mark.parametrize("code", [1400, 1401, 1404, 1409])
async def test_each_reject_code_reaches_the_caller(code: int, no_leaks: object) -> None:
    async def hook(info: HandshakeInfo) -> Reject:
        return Reject(code)

    async with SrtReactor() as reactor:
        listener = await reactor.listen("127.0.0.1", 0, None, hook)
        with pytest.raises(SrtRejected) as caught:
            await reactor.connect("127.0.0.1", listener.port)
        assert caught.value.reject_code == code
        await listener.aclose()


async def test_per_stream_passphrase_from_the_hook(no_leaks: object) -> None:
    async def hook(info: HandshakeInfo) -> Accept:
        if info.stream_id == "secret":
            return Accept(passphrase="right-passphrase-1", context="secret")
        return Accept(context="open")

    async with SrtReactor() as reactor:
        listener = await reactor.listen("127.0.0.1", 0, None, hook)
        port = listener.port
        good = await reactor.connect(
            "127.0.0.1", port, SrtOptions(stream_id="secret", passphrase="right-passphrase-1")
        )
        server_side = await asyncio.wait_for(listener.accept(), 5)
        assert server_side.context == "secret"
        assert good.send(b"encrypted hello")
        assert await receive(server_side, 1) == [b"encrypted hello"]
        good.close()
        server_side.close()
        with pytest.raises(SrtRejected) as wrong:
            await reactor.connect(
                "127.0.0.1", port, SrtOptions(stream_id="secret", passphrase="wrong-passphrase-2")
            )
        assert wrong.value.reject_code == lib.RejectReason.SRT_REJ_BADSECRET
        with pytest.raises(SrtRejected) as missing:
            await reactor.connect("127.0.0.1", port, SrtOptions(stream_id="secret"))
        assert missing.value.reject_code == lib.RejectReason.SRT_REJ_UNSECURE
        # Other stream ids stay unencrypted.
        plain = await reactor.connect("127.0.0.1", port, SrtOptions(stream_id="other"))
        plain_side = await asyncio.wait_for(listener.accept(), 5)
        assert plain_side.context == "open"
        plain.close()
        plain_side.close()
        await listener.aclose()


async def test_failing_or_slow_hooks_reject_with_1503_and_serving_goes_on(
    no_leaks: object, caplog: pytest.LogCaptureFixture
) -> None:
    async def hook(info: HandshakeInfo) -> Accept:
        if info.stream_id == "raise":
            raise RuntimeError("hook bug")
        if info.stream_id == "slow":
            await asyncio.sleep(5)
        return Accept()

    async with SrtReactor(hook_timeout_s=0.3) as reactor:
        listener = await reactor.listen("127.0.0.1", 0, None, hook)
        for stream_id in ("raise", "slow"):
            with pytest.raises(SrtRejected) as caught:
                await reactor.connect("127.0.0.1", listener.port, SrtOptions(stream_id=stream_id))
            assert caught.value.reject_code == 1503
        caller, server_side = await connect_and_accept(reactor, listener, "fine")
        assert caller.send(b"still serving")
        assert await receive(server_side, 1) == [b"still serving"]
        caller.close()
        server_side.close()
        await listener.aclose()
    messages = [r.getMessage() for r in caplog.records if r.name == "moqsrt.srt"]
    assert any("raised" in m for m in messages)
    assert any("took over" in m for m in messages)


async def connect_and_accept(
    reactor: SrtReactor, listener: SrtListener, stream_id: str
) -> tuple[SrtConnection, SrtConnection]:
    caller = await reactor.connect("127.0.0.1", listener.port, SrtOptions(stream_id=stream_id))
    server_side = await asyncio.wait_for(listener.accept(), 5)
    return caller, server_side


async def test_connect_to_nobody_times_out(no_leaks: object) -> None:
    async with SrtReactor() as reactor:
        listener = await reactor.listen("127.0.0.1", 0, None, accept_all)
        port = listener.port
        await listener.aclose()
        with pytest.raises(SrtTimeout) as caught:
            await reactor.connect("127.0.0.1", port, SrtOptions(connect_timeout_ms=300))
        assert isinstance(caught.value, TimeoutError)


async def test_clean_close_is_eof_for_the_peer(no_leaks: object) -> None:
    async with SrtReactor() as reactor:
        listener, caller, server_side = await pair(reactor)
        assert caller.send(b"last words")
        await receive(server_side, 1)
        caller.close()
        async with asyncio.timeout(5):
            assert await server_side.recv_batch() == []
            await server_side.wait_closed()
        assert server_side.ended
        server_side.close()
        listener.close()


HANGUP_CALLERS = """
import sys
from gateway.srt import lib
from gateway.srt.addresses import pack_sockaddr
from gateway.srt.sockets import SrtSocket
lib.load(); lib.startup()
for _ in range(int(sys.argv[2])):
    sock = SrtSocket.create()
    sock.connect(pack_sockaddr("127.0.0.1", int(sys.argv[1])))
    sock.close()
lib.cleanup()
"""


async def test_callers_that_hang_up_right_after_the_handshake_end_their_connections(
    no_leaks: object,
) -> None:
    # A caller whose SHUTDOWN arrives before the I/O thread accepted and polled its socket:
    # libsrt raises no epoll event for a socket already broken when it is added, so without
    # a read at accept such a connection never ended (a session held until shutdown).
    callers = 12
    async with SrtReactor() as reactor:
        listener = await reactor.listen("127.0.0.1", 0, None, accept_all)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", HANGUP_CALLERS, str(listener.port), str(callers), cwd=str(ROOT)
        )
        try:
            accepted = [await asyncio.wait_for(listener.accept(), 10) for _ in range(callers)]
        finally:
            assert await asyncio.wait_for(child.wait(), 20) == 0
        async with asyncio.timeout(4):  # well before libsrt's ~5 s idle timeout
            for conn in accepted:
                while await conn.recv_batch():
                    pass
                await conn.wait_closed()
        assert all(conn.ended for conn in accepted)
        for conn in accepted:
            conn.close()
        await listener.aclose()


KILLED_CALLER = """
import sys, time
from gateway.srt import lib
from gateway.srt.lib import SockOpt
from gateway.srt.addresses import pack_sockaddr
from gateway.srt.sockets import SrtSocket
lib.load(); lib.startup()
sock = SrtSocket.create()
sock.connect(pack_sockaddr("127.0.0.1", int(sys.argv[1])))
while True:
    sock.send(bytes(1316))
    time.sleep(0.01)
"""


async def test_a_peer_that_vanishes_mid_stream_is_a_lost_connection(no_leaks: object) -> None:
    # SIGKILL: no SHUTDOWN reaches us, libsrt breaks the link after its idle timeout (at
    # least 16 expirations of >= 300 ms, so about 5 s whatever SRTO_PEERIDLETIMEO says).
    options = SrtOptions(peer_idle_timeout_ms=1000)
    async with SrtReactor() as reactor:
        listener = await reactor.listen("127.0.0.1", 0, options, accept_all)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", KILLED_CALLER, str(listener.port), cwd=str(ROOT)
        )
        try:
            server_side = await asyncio.wait_for(listener.accept(), 10)
            await receive(server_side, 5)
        finally:
            child.kill()
            await child.wait()
        async with asyncio.timeout(15):
            with pytest.raises(SrtConnectionLost) as caught:  # noqa: PT012 - read until the end
                while await server_side.recv_batch():
                    pass
        assert isinstance(caught.value, ConnectionResetError)
        assert caught.value.code == lib.SrtErrno.SRT_ECONNLOST
        assert "nothing heard" in caught.value.message
        server_side.close()
        await listener.aclose()


def raw_connect(sock: SrtSocket, port: int) -> None:
    """Blocking srt_connect of a raw socket (not registered in any reactor)."""
    sock.set_int(SockOpt.SRTO_RCVBUF, 64 * 1472)
    sock.connect(pack_sockaddr("127.0.0.1", port))


async def test_send_returns_false_when_the_peer_does_not_read_and_never_blocks(
    no_leaks: object,
) -> None:
    async with SrtReactor() as reactor:
        listener = await reactor.listen("127.0.0.1", 0, None, accept_all)
        raw = SrtSocket.create()  # connected, never reads
        try:
            await asyncio.to_thread(raw_connect, raw, listener.port)
            server_side = await asyncio.wait_for(listener.accept(), 5)
            payload = bytes(1316)
            slowest = 0.0
            refused = False
            async with asyncio.timeout(20):
                for _ in range(200_000):
                    t0 = time.perf_counter()
                    ok = server_side.send(payload)
                    slowest = max(slowest, time.perf_counter() - t0)
                    if not ok:
                        refused = True
                        break
                    await asyncio.sleep(0)
            assert refused, "send() never reported a full buffer"
            assert slowest < 0.05, f"a send() took {slowest * 1000:.1f} ms"
            assert server_side.send_buffer_bytes() > 0
            server_side.close()
        finally:
            await asyncio.to_thread(raw.close)
        await listener.aclose()


async def test_closing_the_reactor_closes_live_connections_and_wakes_waiters() -> None:
    before = open_socket_count()
    reactor = SrtReactor()
    listener, caller, server_side = await pair(reactor)
    handles = [caller.handle, server_side.handle]
    receiving = asyncio.create_task(server_side.recv_batch())
    accepting = asyncio.create_task(listener.accept())
    await asyncio.sleep(0.05)
    async with asyncio.timeout(10):
        await reactor.aclose()
        assert await receiving == []
        with pytest.raises(SrtError):
            await accepting
    assert open_socket_count() == before
    assert caller.ended
    assert server_side.ended
    assert listener.closed
    with pytest.raises(SrtError):
        caller.send(b"too late")
    for handle in handles:
        assert lib.getsockstate(handle) in (SockStatus.SRTS_NONEXIST, SockStatus.SRTS_CLOSED)
    await reactor.aclose()  # idempotent
    caller.close()  # idempotent after the reactor closed
    async with asyncio.timeout(2):
        await caller.wait_closed()


async def test_closed_sockets_are_gone_from_libsrt(no_leaks: object) -> None:
    async with SrtReactor() as reactor:
        listener, caller, server_side = await pair(reactor)
        handles = [caller.handle, server_side.handle]
        assert open_socket_count() >= 3
        for conn in (caller, server_side):
            conn.close()
            conn.close()
            async with asyncio.timeout(5):
                await conn.wait_closed()
        for handle in handles:
            state = lib.getsockstate(handle)
            assert state in (
                SockStatus.SRTS_NONEXIST,
                SockStatus.SRTS_CLOSED,
                SockStatus.SRTS_BROKEN,
            )
        await listener.aclose()
        await listener.aclose()


async def test_a_dropped_connection_warns_and_is_closed(no_leaks: object) -> None:
    async with SrtReactor() as reactor:
        listener, caller, server_side = await pair(reactor)
        count = open_socket_count()
        with pytest.warns(ResourceWarning, match="unclosed SrtConnection"):  # noqa: PT031
            del caller
            for _ in range(3):  # let the loop drop its last handle on the connect future
                await asyncio.sleep(0)
            gc.collect()
        await eventually(lambda: open_socket_count() == count - 1)
        server_side.close()
        await listener.aclose()


async def test_libsrt_log_lines_reach_python_logging(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], no_leaks: object
) -> None:
    async with SrtReactor():
        sock = SrtSocket.create()
        try:
            sock.set_int(SockOpt.SRTO_RCVSYN, 0)
            sock.bind(pack_sockaddr("127.0.0.1", 0))
            sock.listen(1)
            with caplog.at_level(logging.WARNING, logger="moqsrt.libsrt"):
                # libsrt logs an error when a non-blocking accept finds nobody waiting.
                assert sock.accept(bytearray_buf()) is None
        finally:
            sock.close()
    records = [r for r in caplog.records if r.name == "moqsrt.libsrt"]
    assert any("srt_accept" in r.getMessage() for r in records)
    assert all(r.levelno >= logging.WARNING for r in records)
    assert "srt_accept" not in capfd.readouterr().err


def bytearray_buf() -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(128)


async def test_receive_buffer_is_sized_for_latency_times_bitrate(no_leaks: object) -> None:
    options = SrtOptions(latency_ms=2000, max_bitrate_bps=200_000_000)
    needed_packets = 2.0 * 200_000_000 / 8 / 1316
    assert options.receive_buffer_bytes() / 1472 >= needed_packets
    async with SrtReactor() as reactor:
        listener, caller, server_side = await pair(reactor, listen_options=options)
        sock = server_side._sock  # accepted sockets inherit the listener's buffers
        assert sock.get_int(SockOpt.SRTO_FC) >= needed_packets
        assert sock.get_int(SockOpt.SRTO_RCVBUF) >= needed_packets * 1472
        assert sock.get_int(SockOpt.SRTO_RCVLATENCY) == 2000
        assert sock.get_int(SockOpt.SRTO_RCVSYN) == 0
        caller.close()
        server_side.close()
        listener.close()


def test_default_receive_buffer_never_shrinks_below_libsrt_default() -> None:
    assert SrtOptions().receive_buffer_bytes() == 8192 * 1472
    assert SrtOptions().flow_window_packets() == 25600


@pytest.mark.parametrize(
    "kwargs",
    [
        {"passphrase": "short"},
        {"pbkeylen": 20},
        {"payload_size": 2000},
        {"latency_ms": -1},
        {"stream_id": "x" * 513},
    ],
)
def test_options_are_validated_before_libsrt_sees_them(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies per field
        SrtOptions(**kwargs)  # type: ignore[arg-type]


def test_reject_codes_must_be_predefined_or_user_codes() -> None:
    with pytest.raises(ValueError, match=r"1000\.\.2999"):
        Reject(403)


async def test_a_listener_on_a_busy_port_raises_libsrts_error(no_leaks: object) -> None:
    async with SrtReactor() as reactor:
        listener = await reactor.listen("127.0.0.1", 0, None, accept_all)
        with pytest.raises(SrtError) as caught:
            await reactor.listen("127.0.0.1", listener.port, None, accept_all)
        assert caught.value.op in ("srt_bind", "srt_listen")
        assert caught.value.message
        await listener.aclose()


async def test_sending_to_a_peer_that_left_raises_connection_lost(no_leaks: object) -> None:
    async with SrtReactor() as reactor:
        listener, caller, server_side = await pair(reactor)
        server_side.close()
        async with asyncio.timeout(5):
            assert await caller.recv_batch() == []
        with pytest.raises(SrtConnectionLost) as caught:
            caller.send(b"anyone there?")
        assert caught.value.op == "srt_sendmsg2"
        caller.close()
        listener.close()


async def test_data_still_waiting_for_its_play_time_is_delivered_after_the_peer_closes(
    no_leaks: object,
) -> None:
    # The caller lingers until everything is acknowledged; libsrt's garbage collector then
    # sends SHUTDOWN within about a second, before the 2 s TSBPD play time used here. libsrt
    # reports the break at once and hands out packets only when due, so the reactor keeps
    # reading the broken socket (without this, all 200 messages are lost).
    async with SrtReactor() as reactor:
        listener, caller, server_side = await pair(
            reactor,
            listen_options=SrtOptions(latency_ms=2000),
            caller_options=SrtOptions(latency_ms=2000, linger_s=2),
        )
        for i in range(200):
            assert caller.send(numbered(i))
        caller.close()
        got: list[bytes] = []
        async with asyncio.timeout(5):
            while batch := await server_side.recv_batch():
                got.extend(batch)
        assert [int.from_bytes(m[:4], "big") for m in got] == list(range(200))
        assert server_side.stats().pkt_recv_unique == 200
        server_side.close()
        listener.close()


async def test_a_slow_hook_stalls_its_port_once_and_other_streams_lose_nothing(
    no_leaks: object,
) -> None:
    # libsrt runs the listen callback on the port's receiver thread: while the hook runs, no
    # packet for that port is processed (they wait in the kernel's UDP buffer). The caller
    # resends its handshake every 250 ms meanwhile; those copies must not run the hook again.
    calls: list[str] = []

    async def hook(info: HandshakeInfo) -> Accept:
        calls.append(info.stream_id)
        if info.stream_id == "slow":
            await asyncio.sleep(5)
        return Accept()

    async with SrtReactor(hook_timeout_s=0.8) as reactor:
        listener, caller, server_side = await pair(reactor, hook)
        # The same traffic through a second listener (another port, another libsrt thread).
        other_listener, other_caller, other_side = await pair(reactor)
        flows = [(caller, server_side), (other_caller, other_side)]
        arrivals: list[list[float]] = [[], []]
        got: list[list[bytes]] = [[], []]

        async def consume(k: int) -> None:
            while batch := await flows[k][1].recv_batch():
                got[k].extend(batch)
                arrivals[k].append(time.monotonic())

        async def produce(count: int) -> None:
            for i in range(count):
                for sender, _ in flows:
                    assert sender.send(numbered(i))
                await asyncio.sleep(0.002)

        consumers = [asyncio.create_task(consume(k)) for k in (0, 1)]
        producer = asyncio.create_task(produce(1000))
        await asyncio.sleep(0.3)
        with pytest.raises(SrtRejected) as caught:
            await reactor.connect("127.0.0.1", listener.port, SrtOptions(stream_id="slow"))
        assert caught.value.reject_code == 1503
        async with asyncio.timeout(15):
            await producer
        await eventually(lambda: len(got[0]) >= 1000 and len(got[1]) >= 1000)
        for sender, _ in flows:
            sender.close()
        async with asyncio.timeout(5):
            await asyncio.gather(*consumers)
        assert calls.count("slow") == 1
        for k in (0, 1):
            assert [int.from_bytes(m[:4], "big") for m in got[k]] == list(range(1000))
        gaps = [max(b - a for a, b in itertools.pairwise(times)) for times in arrivals]
        assert 0.5 < gaps[0] < 0.8 + 0.5  # the hook's port waited, once
        assert gaps[1] < 0.3  # the I/O thread and the loop never did
        for _, receiver in flows:
            receiver.close()
        await listener.aclose()
        await other_listener.aclose()


async def test_a_dropped_reactor_warns_and_its_thread_closes_everything(no_leaks: object) -> None:
    reactor = SrtReactor()
    listener, caller, server_side = await pair(reactor)
    core = reactor._core
    for obj in (listener, caller, server_side):
        obj._finalizer.detach()  # only the reactor is "forgotten" here
    with pytest.warns(ResourceWarning, match="unclosed SrtReactor"):  # noqa: PT031
        del reactor
        for _ in range(3):  # let the loop drop its last handles
            await asyncio.sleep(0)
        gc.collect()
    await asyncio.to_thread(core.thread.join, 10)
    assert not core.thread.is_alive()
    assert core._wake_w == -1
    await eventually(lambda: server_side.ended and listener.closed)


async def test_a_receiver_gets_every_batch_in_order_and_recv_batch_reports_the_end(
    no_leaks: object,
) -> None:
    async with SrtReactor() as reactor:
        listener, caller, server_side = await pair(reactor)
        for i in range(5):
            assert caller.send(numbered(i))
        await eventually(lambda: server_side._pending != [])  # waiting before a receiver
        got: list[bytes] = []
        batches: list[int] = []

        def receiver(batch: list[bytes]) -> None:
            batches.append(len(batch))
            got.extend(batch)

        server_side.set_receiver(receiver)
        assert len(got) >= 1  # what was waiting went to it at once
        for i in range(5, 300):
            assert caller.send(numbered(i))
        await eventually(lambda: len(got) == 300, timeout_s=10)
        assert server_side._pending == []
        caller.close()
        async with asyncio.timeout(10):
            assert await server_side.recv_batch() == []  # only the end comes this way
        assert [int.from_bytes(m[:4], "big") for m in got] == list(range(300))
        assert len(batches) < 300  # in batches, not one call per message
        server_side.close()
        listener.close()


async def test_a_receiver_that_raises_is_removed_and_recv_batch_raises_its_error(
    no_leaks: object,
) -> None:
    class Full(Exception):
        pass

    async with SrtReactor() as reactor:
        listener, caller, server_side = await pair(reactor)
        seen: list[bytes] = []

        def receiver(batch: list[bytes]) -> None:
            seen.extend(batch)
            raise Full("no room")

        server_side.set_receiver(receiver)
        assert caller.send(numbered(0))
        async with asyncio.timeout(10):
            with pytest.raises(Full, match="no room"):
                await server_side.recv_batch()
        assert [int.from_bytes(m[:4], "big") for m in seen] == [0]
        # Removed: later data waits for recv_batch again.
        assert caller.send(numbered(1))
        assert [int.from_bytes(m[:4], "big") for m in await receive(server_side, 1)] == [1]
        caller.close()
        server_side.close()
        listener.close()
