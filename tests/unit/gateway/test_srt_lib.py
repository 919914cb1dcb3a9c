"""The ctypes layer matches the installed libsrt: loading, version, struct layouts checked
against what the library itself writes, and the error for a missing library."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.srt import SrtOptions, SrtSocket, lib, runtime
from gateway.srt.addresses import pack_sockaddr
from gateway.srt.lib import SockOpt

# offsetof()/sizeof() printed by a C program compiled against /usr/include/srt/srt.h 1.5.1
# (libsrt-openssl-dev) on x86-64.
C_SIZEOF_TRACEBSTATS = 496
C_OFFSETS_TRACEBSTATS = {
    "byteRecvTotal": 88,
    "mbpsRecvRate": 192,
    "pktRcvDrop": 236,
    "msRTT": 328,
    "byteSentUniqueTotal": 448,
    "byteRecvUnique": 488,
}
C_SIZEOF_MSGCTRL = 48
C_OFFSETS_MSGCTRL = {"srctime": 16, "grpdata": 32}


@pytest.fixture
def started() -> Iterator[None]:
    runtime.acquire()
    yield
    runtime.release()


def test_the_system_library_loads_and_is_at_least_1_5_1() -> None:
    lib.load()
    assert lib.version() >= 0x010501
    assert lib.loaded_path() is not None


def test_a_missing_library_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.raises(OSError, match=r"libsrt1\.5-openssl") as caught:
        lib._open(("libsrt-does-not-exist.so.9",))
    assert caught.value.errno == errno.ENOENT
    assert "libsrt-does-not-exist.so.9" in str(caught.value)


class _FakeFunction:
    def __init__(self, result: int) -> None:
        self.result = result
        self.restype: Any = None
        self.argtypes: Any = None

    def __call__(self, *args: object) -> int:
        return self.result


class _FakeLibrary:
    def __init__(self, version: int) -> None:
        self.version = version

    def __getattr__(self, name: str) -> _FakeFunction:
        fn = _FakeFunction(self.version if name == "srt_getversion" else 0)
        setattr(self, name, fn)
        return fn


def test_an_old_library_is_refused_with_the_package_name() -> None:
    with pytest.raises(OSError, match=r"libsrt 1\.4\.4; 1\.5\.1 or newer") as caught:
        lib._bind(_FakeLibrary(0x010404), "libsrt.so.1.4")
    assert "libsrt1.5-openssl" in str(caught.value)


def test_every_prototype_gets_types() -> None:
    fake = _FakeLibrary(0x010501)
    lib._bind(fake, "fake")
    for name, (restype, argtypes) in lib._PROTOTYPES.items():
        fn = getattr(fake, name)
        assert fn.restype is restype, name
        assert fn.argtypes == argtypes, name


def test_tracebstats_layout_matches_srt_h() -> None:
    assert ctypes.sizeof(lib.SrtTraceBStats) == C_SIZEOF_TRACEBSTATS
    for name, offset in C_OFFSETS_TRACEBSTATS.items():
        assert getattr(lib.SrtTraceBStats, name).offset == offset, name


def test_msgctrl_layout_matches_srt_h_and_libsrt_defaults(started: None) -> None:
    assert ctypes.sizeof(lib.SrtMsgCtrl) == C_SIZEOF_MSGCTRL
    for name, offset in C_OFFSETS_MSGCTRL.items():
        assert getattr(lib.SrtMsgCtrl, name).offset == offset, name
    mctrl = lib.SrtMsgCtrl(flags=7, msgttl=7, msgno=7, pktseq=7)
    lib.msgctrl_init(mctrl)
    assert (mctrl.flags, mctrl.msgttl, mctrl.pktseq, mctrl.msgno) == (0, -1, -1, -1)


def test_libsrt_fills_tracebstats_exactly_and_late_fields_are_right(started: None) -> None:
    """A connected pair in blocking mode; libsrt's own counters land in the right fields and
    it writes nothing past the struct's end."""
    listener = SrtSocket.create()
    caller = SrtSocket.create()
    accepted: SrtSocket | None = None
    try:
        listener.bind(pack_sockaddr("127.0.0.1", 0))
        listener.listen(1)
        caller.connect(pack_sockaddr("127.0.0.1", listener.sockname()[1]))
        accepted = listener.accept(ctypes.create_string_buffer(128))
        assert accepted is not None
        for _ in range(50):
            assert caller.send(bytes(1000))
        guard = 64
        raw = bytearray(b"\xab" * (C_SIZEOF_TRACEBSTATS + guard))
        perf = lib.SrtTraceBStats.from_buffer(raw)
        deadline = time.monotonic() + 5
        while True:  # the sender thread paces the queued packets out
            assert lib.bstats(caller.handle, perf) == 0
            if perf.pktSentUniqueTotal == 50 or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert raw[C_SIZEOF_TRACEBSTATS:] == b"\xab" * guard
        assert perf.pktSentUniqueTotal == 50
        # libsrt counts each packet with its 44 header bytes (SRT 16 + UDP 8 + IPv4 20).
        assert perf.byteSentUniqueTotal == 50 * (1000 + 44)
        assert perf.byteMSS == 1500
        stats = caller.stats()
        assert stats.pkt_sent_unique == 50
        assert stats.bytes_sent_unique == 50 * 1044
    finally:
        for sock in (accepted, caller, listener):
            if sock is not None:
                sock.close()


def test_options_read_back_as_set(started: None) -> None:
    sock = SrtSocket.create()
    try:
        options = SrtOptions(
            latency_ms=250,
            passphrase="0123456789abc",
            pbkeylen=32,
            payload_size=1128,
            maxbw_bytes_s=5_000_000,
            peer_idle_timeout_ms=7000,
            stream_id="#!::r=live/a,m=publish",
            linger_s=3,
            connect_timeout_ms=1500,
        )
        sock.apply(options, caller=True)
        assert sock.get_int(SockOpt.SRTO_RCVLATENCY) == 250
        assert sock.get_int(SockOpt.SRTO_PEERLATENCY) == 250
        assert sock.get_int(SockOpt.SRTO_PBKEYLEN) == 32
        assert sock.get_int(SockOpt.SRTO_PAYLOADSIZE) == 1128
        assert sock.get_int64(SockOpt.SRTO_MAXBW) == 5_000_000
        assert sock.get_int(SockOpt.SRTO_PEERIDLETIMEO) == 7000
        assert sock.get_bytes(SockOpt.SRTO_STREAMID) == b"#!::r=live/a,m=publish"
        assert sock.get_linger() == 3
        assert sock.get_int(SockOpt.SRTO_CONNTIMEO) == 1500
        assert sock.get_int(SockOpt.SRTO_SNDSYN) == 0
        assert sock.get_int(SockOpt.SRTO_RCVSYN) == 0
        assert sock.get_int(SockOpt.SRTO_FC) == options.flow_window_packets()
    finally:
        sock.close()
