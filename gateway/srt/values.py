"""Plain values the SRT binding exchanges with its callers: socket options, link statistics,
and the handshake hook's input and verdicts.

Immutable and thread-safe; nothing here owns a libsrt resource. `SrtOptions` is validated at
construction (ValueError), `Accept` / `Reject` too, so a bad value never reaches libsrt.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from gateway.srt import lib
from gateway.srt.lib import MAX_STREAM_ID_CHARS

__all__ = [
    "Accept",
    "HandshakeHook",
    "HandshakeInfo",
    "LinkStats",
    "Reject",
    "SrtOptions",
]

#: libsrt sizes its receive buffer in units of MSS - 28 (UDP/IP header) bytes (1472 at MSS 1500):
#: SRTO_RCVBUF in bytes is divided by this, whatever the payload size.
RCVBUF_UNIT_BYTES: Final = 1472
#: libsrt's live-mode defaults (srt.h 1.5.1): receive buffer 8192 units, flow window 25600.
DEFAULT_RCVBUF_PACKETS: Final = 8192
DEFAULT_FC_PACKETS: Final = 25600
MAX_PAYLOAD_BYTES: Final = 1456


@dataclass(frozen=True, slots=True, kw_only=True)
class SrtOptions:
    """Socket options for a listener (accepted callers inherit them) or a caller.

    - `latency_ms`: SRTO_LATENCY (receive and peer latency), milliseconds.
    - `passphrase` / `pbkeylen`: SRTO_PASSPHRASE (10..79 characters; None = unencrypted) and
      SRTO_PBKEYLEN (16, 24 or 32 bytes: AES-128/192/256).
    - `payload_size`: SRTO_PAYLOADSIZE, bytes per message at most (1316 = 7 TS packets).
    - `maxbw_bytes_s`: SRTO_MAXBW, a cap on what *this* side sends (None = libsrt's 1 Gbit/s).
      It cannot limit a publisher: that is the receive buffer's and the server's job.
    - `peer_idle_timeout_ms`: SRTO_PEERIDLETIMEO, silence before the link counts as broken.
    - `rcvbuf_bytes`: SRTO_RCVBUF; None sizes it from `latency_ms` x `max_bitrate_bps` (see
      `receive_buffer_bytes`), because libsrt 1.5.1 locks a live connection up, rather than
      dropping, once the receive buffer overflows.
    - `max_bitrate_bps`: the highest bitrate the receive buffer must absorb, bits per second.
    - `stream_id`: SRTO_STREAMID a caller sends (at most 512 characters).
    - `linger_s`: SRTO_LINGER, seconds close() keeps sending queued data (None = libsrt's
      live default, off; publishers want it so the tail is not lost).
    - `connect_timeout_ms`: SRTO_CONNTIMEO for callers.

    The repr leaves out `passphrase` and `stream_id` (secrets).
    """

    latency_ms: int = 120
    passphrase: str | None = field(default=None, repr=False)
    pbkeylen: int = 16
    payload_size: int = 1316
    maxbw_bytes_s: int | None = None
    peer_idle_timeout_ms: int = 5000
    rcvbuf_bytes: int | None = None
    max_bitrate_bps: int = 100_000_000
    stream_id: str | None = field(default=None, repr=False)
    linger_s: int | None = None
    connect_timeout_ms: int = 3000

    def __post_init__(self) -> None:
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, not {self.latency_ms}")
        _check_passphrase(self.passphrase)
        if self.pbkeylen not in (16, 24, 32):
            raise ValueError(f"pbkeylen must be 16, 24 or 32, not {self.pbkeylen}")
        if not 188 <= self.payload_size <= MAX_PAYLOAD_BYTES:
            raise ValueError(f"payload_size must be 188..{MAX_PAYLOAD_BYTES}")
        if self.maxbw_bytes_s is not None and self.maxbw_bytes_s <= 0:
            raise ValueError("maxbw_bytes_s must be positive (None = libsrt default)")
        if self.peer_idle_timeout_ms <= 0 or self.max_bitrate_bps <= 0:
            raise ValueError("peer_idle_timeout_ms and max_bitrate_bps must be positive")
        if self.rcvbuf_bytes is not None and self.rcvbuf_bytes < 32 * RCVBUF_UNIT_BYTES:
            raise ValueError(f"rcvbuf_bytes must be at least {32 * RCVBUF_UNIT_BYTES}")
        if self.stream_id is not None and len(self.stream_id) > MAX_STREAM_ID_CHARS:
            raise ValueError(f"stream_id is longer than {MAX_STREAM_ID_CHARS} characters")
        if self.linger_s is not None and self.linger_s < 0:
            raise ValueError("linger_s must be >= 0")

    def receive_buffer_bytes(self) -> int:
        """The SRTO_RCVBUF value set: `rcvbuf_bytes`, or room for 2 x latency + 100 ms at
        `max_bitrate_bps` in `payload_size` messages, never below libsrt's default 8192 units."""
        if self.rcvbuf_bytes is not None:
            return self.rcvbuf_bytes
        window_s = (2 * self.latency_ms + 100) / 1000
        packets = math.ceil(window_s * self.max_bitrate_bps / 8 / self.payload_size)
        return max(packets, DEFAULT_RCVBUF_PACKETS) * RCVBUF_UNIT_BYTES

    def flow_window_packets(self) -> int:
        """The SRTO_FC value set: at least the receive buffer, which libsrt caps at FC."""
        rcvbuf_packets = math.ceil(self.receive_buffer_bytes() / RCVBUF_UNIT_BYTES)
        return max(DEFAULT_FC_PACKETS, rcvbuf_packets)


def _check_passphrase(passphrase: str | None) -> None:
    if passphrase is not None and not 10 <= len(passphrase) <= 79:
        raise ValueError("an SRT passphrase must be 10..79 characters")


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkStats:
    """One `srt_bstats` snapshot; counters are totals since the connection started.

    Byte counters include the SRT/UDP/IP headers (44 bytes per packet), so `bytes_recv` is
    at least the payload received; the `*_unique` ones count payload bytes once (no
    retransmits). Rates are Mbit/s over libsrt's last interval; `rtt_ms` is smoothed RTT.
    """

    rtt_ms: float
    pkt_sent: int
    pkt_recv: int
    pkt_sent_loss: int
    pkt_recv_loss: int
    pkt_retrans: int
    pkt_recv_drop: int
    pkt_send_drop: int
    bytes_sent: int
    bytes_recv: int
    bytes_retrans: int
    mbps_send: float
    mbps_recv: float
    pkt_sent_unique: int = 0
    pkt_recv_unique: int = 0
    bytes_sent_unique: int = 0
    bytes_recv_unique: int = 0
    bytes_recv_drop: int = 0
    bytes_send_drop: int = 0
    pkt_recv_undecrypt: int = 0
    connected_ms: int = 0

    @classmethod
    def from_struct(cls, perf: lib.SrtTraceBStats) -> LinkStats:
        """Copy the fields callers use out of an SRT_TRACEBSTATS."""
        return cls(
            rtt_ms=perf.msRTT,
            pkt_sent=perf.pktSentTotal,
            pkt_recv=perf.pktRecvTotal,
            pkt_sent_loss=perf.pktSndLossTotal,
            pkt_recv_loss=perf.pktRcvLossTotal,
            pkt_retrans=perf.pktRetransTotal,
            pkt_recv_drop=perf.pktRcvDropTotal,
            pkt_send_drop=perf.pktSndDropTotal,
            bytes_sent=perf.byteSentTotal,
            bytes_recv=perf.byteRecvTotal,
            bytes_retrans=perf.byteRetransTotal,
            mbps_send=perf.mbpsSendRate,
            mbps_recv=perf.mbpsRecvRate,
            pkt_sent_unique=perf.pktSentUniqueTotal,
            pkt_recv_unique=perf.pktRecvUniqueTotal,
            bytes_sent_unique=perf.byteSentUniqueTotal,
            bytes_recv_unique=perf.byteRecvUniqueTotal,
            bytes_recv_drop=perf.byteRcvDropTotal,
            bytes_send_drop=perf.byteSndDropTotal,
            pkt_recv_undecrypt=perf.pktRcvUndecryptTotal,
            connected_ms=perf.msTimeStamp,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeInfo:
    """What the listener knows about a caller before accepting it.

    `stream_id` is the caller's SRTO_STREAMID ("" if none; invalid UTF-8 replaced), `peer`
    its (host, port). The repr leaves the stream id out: it may carry secrets.
    """

    stream_id: str = field(repr=False)
    peer: tuple[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Accept:
    """Let the caller in. `passphrase` (10..79 characters) encrypts this connection (None keeps
    the listener's); `context` is handed back as `SrtConnection.context`; `pbkeylen` overrides
    the listener's key length for this connection. `discard_input`: whatever the caller sends
    is read and dropped on the I/O thread from its first message (a viewer, which only
    receives): nothing is kept or handed to the loop, and `recv_batch()` only reports the end."""

    passphrase: str | None = field(default=None, repr=False)
    context: object = None
    pbkeylen: int | None = None
    discard_input: bool = False

    def __post_init__(self) -> None:
        _check_passphrase(self.passphrase)
        if self.pbkeylen is not None and self.pbkeylen not in (16, 24, 32):
            raise ValueError("pbkeylen must be 16, 24 or 32")


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the caller with `code` (1000..2999), which it reads with srt_getrejectreason:
    1400 bad request, 1401 unauthorized, 1403 forbidden, 1404 not found, 1409 conflict,
    1503 unavailable."""

    code: int

    def __post_init__(self) -> None:
        if not 1000 <= self.code < 3000:
            raise ValueError(f"reject codes are 1000..2999, not {self.code}")


#: The handshake hook a listener runs for every caller (see SrtReactor.listen).
HandshakeHook = Callable[[HandshakeInfo], Awaitable[Accept | Reject]]
