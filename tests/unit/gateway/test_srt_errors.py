"""libsrt errors become exceptions carrying libsrt's code, message and the call that failed;
leaf classes also inherit the matching builtin."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterator

import pytest

from gateway.srt import (
    SrtConnectionLost,
    SrtError,
    SrtRejected,
    SrtSocket,
    SrtTimeout,
    check,
    lib,
    runtime,
)
from gateway.srt.addresses import pack_sockaddr
from gateway.srt.errors import make_error, rejection
from gateway.srt.lib import SrtErrno

NO_SUCH_SOCKET = 0x1234


@pytest.fixture
def started() -> Iterator[None]:
    runtime.acquire()
    yield
    runtime.release()


def test_check_passes_non_negative_return_codes_through() -> None:
    assert check(0, "srt_x") == 0
    assert check(7, "srt_x") == 7


def test_check_raises_libsrts_own_error_for_the_failed_call(started: None) -> None:
    with pytest.raises(SrtError) as caught:
        check(lib.listen(NO_SUCH_SOCKET, 1), "srt_listen")
    exc = caught.value
    assert type(exc) is SrtError
    assert exc.code == SrtErrno.SRT_EINVSOCK
    assert exc.errno == SrtErrno.SRT_EINVSOCK
    assert exc.op == "srt_listen"
    assert "Invalid socket ID" in exc.message
    assert exc.strerror == exc.message
    assert str(exc) == f"srt_listen: {exc.message} (SRT 5004)"
    assert isinstance(exc, OSError)


def test_the_last_error_belongs_to_the_thread_that_failed(started: None) -> None:
    lib.clearlasterror()
    seen: list[tuple[int, int]] = []

    def fail_here() -> None:
        lib.listen(NO_SUCH_SOCKET, 1)
        seen.append(lib.getlasterror())

    worker = threading.Thread(target=fail_here)
    worker.start()
    worker.join(5)
    assert seen[0][0] == SrtErrno.SRT_EINVSOCK
    assert lib.getlasterror()[0] == SrtErrno.SRT_SUCCESS


def test_a_bind_conflict_carries_the_system_errno(started: None) -> None:
    first = SrtSocket.create()
    second = SrtSocket.create()
    try:
        first.bind(pack_sockaddr("127.0.0.1", 0))
        first.listen(1)
        port = first.sockname()[1]
        second.bind(pack_sockaddr("127.0.0.1", port))  # libsrt shares the port's multiplexer
        with pytest.raises(SrtError) as caught:
            second.listen(1)
        assert caught.value.op == "srt_listen"
        assert caught.value.code == SrtErrno.SRT_EDUPLISTEN
    finally:
        second.close()
        first.close()


def test_a_closed_socket_object_refuses_calls_without_reaching_libsrt(started: None) -> None:
    sock = SrtSocket.create()
    sock.close()
    sock.close()
    with pytest.raises(SrtError) as caught:
        sock.set_int(lib.SockOpt.SRTO_LATENCY, 100)
    assert caught.value.code == SrtErrno.SRT_EINVSOCK
    assert caught.value.op == "srt_setsockflag"


@pytest.mark.parametrize(
    ("code", "cls", "builtin"),
    [
        (SrtErrno.SRT_ECONNLOST, SrtConnectionLost, ConnectionResetError),
        (SrtErrno.SRT_ENOCONN, SrtConnectionLost, ConnectionResetError),
        (SrtErrno.SRT_ETIMEOUT, SrtTimeout, TimeoutError),
        (SrtErrno.SRT_ENOSERVER, SrtTimeout, TimeoutError),
        (SrtErrno.SRT_ECONNREJ, SrtRejected, ConnectionRefusedError),
        (SrtErrno.SRT_EINVPARAM, SrtError, OSError),
    ],
)
def test_codes_map_to_leaf_classes_that_are_also_builtins(
    code: int, cls: type[SrtError], builtin: type[OSError]
) -> None:
    exc = make_error(code, "text", op="srt_op")
    assert type(exc) is cls
    assert isinstance(exc, builtin)
    assert isinstance(exc, SrtError)


def test_a_listener_reject_code_becomes_srt_rejected(started: None) -> None:
    exc = rejection(1409, op="srt_connect")
    assert isinstance(exc, SrtRejected)
    assert exc.reject_code == 1409
    assert exc.code == SrtErrno.SRT_ECONNREJ
    assert "conflict" in exc.message
    assert str(exc).endswith("reject 1409")
    bad_secret = rejection(lib.RejectReason.SRT_REJ_BADSECRET, op="srt_connect")
    assert isinstance(bad_secret, SrtRejected)
    assert bad_secret.message.startswith("rejected: ")
    assert len(bad_secret.message) > len("rejected: ")


def test_a_handshake_timeout_is_srt_timeout(started: None) -> None:
    exc = rejection(lib.RejectReason.SRT_REJ_TIMEOUT, op="srt_connect")
    assert type(exc) is SrtTimeout
    assert exc.code == SrtErrno.SRT_ENOSERVER


def test_errors_survive_pickling_with_their_fields() -> None:
    for exc in (
        SrtError(5004, "Invalid socket ID", op="srt_bind", sys_errno=0),
        SrtRejected(1002, "forbidden", op="srt_connect", reject_code=1403),
        SrtConnectionLost(2001, "gone", op="srt_recvmsg", sys_errno=104),
    ):
        copy = pickle.loads(pickle.dumps(exc))
        assert type(copy) is type(exc)
        assert (copy.code, copy.message, copy.op, copy.sys_errno) == (
            exc.code,
            exc.message,
            exc.op,
            exc.sys_errno,
        )
        assert getattr(copy, "reject_code", None) == getattr(exc, "reject_code", None)
