"""The per-viewer SRT sender: stamping, libsrt buffer checks, skipping, billing (fakes)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.egress import Piece, Sender, Totals, pieces, random_access
from gateway.srt import SrtConnection, SrtConnectionLost, SrtError, srt_now_us
from gateway.srt.lib import SrtErrno
from gateway.srt.values import LinkStats
from model import Usage
from mux.export import TsFrame
from tests.unit.gateway.test_egress_hub import link_stats


def packet(pid: int, *, rai: bool = False, fill: int = 0) -> bytes:
    if rai:
        header = bytes([0x47, 0x40 | (pid >> 8), pid & 0xFF, 0x30, 1, 0x40])
    else:
        header = bytes([0x47, pid >> 8, pid & 0xFF, 0x10])
    return header + bytes([fill]) * (188 - len(header))


@dataclass
class CountingConn:
    """A fake libsrt sender. `unacked`: extra send-buffer bytes it reports; with `hold`, sent
    payloads stay in its send buffer until `ack()` or `drop()` releases the oldest."""

    unacked: int = 0
    sent: list[bytes] = field(default_factory=list)
    srctimes: list[int | None] = field(default_factory=list)
    buffer_reads: int = 0
    ended: bool = False
    hold: bool = False
    buffer: deque[int] = field(default_factory=deque)  # lengths of the payloads held
    drops: int = 0

    losses: int = 0  # pktSndLossTotal: packets the receiver reported lost
    retrans: int = 0  # pktRetransTotal
    rtt_ms: float = 1.0
    # Loss reports that reach the count only at the stats reading after this many buffer
    # readings (a report that arrived after the acknowledgement past its packet).
    deferred: list[tuple[int, int]] = field(default_factory=list)
    refuse_after: int | None = None
    error: SrtError | None = None

    def send(self, payload: bytes, *, srctime_us: int | None = None) -> bool:
        if self.error is not None:
            raise self.error
        if self.refuse_after is not None and len(self.sent) >= self.refuse_after:
            return False
        self.sent.append(payload)
        self.srctimes.append(srctime_us)
        if self.hold:
            self.buffer.append(len(payload))
        return True

    @property
    def held(self) -> int:
        """Packets in the send buffer."""
        return len(self.buffer)

    def ack(self, packets: int | None = None) -> None:
        """The peer acknowledged the oldest `packets` (None: all) held."""
        for _ in range(self.held if packets is None else packets):
            self.buffer.popleft()

    def drop(self, packets: int) -> None:
        """libsrt dropped the oldest `packets` held as too late."""
        for _ in range(packets):
            self.buffer.popleft()
        self.drops += packets

    def stats(self) -> LinkStats:
        due = [n for n, at in self.deferred if at <= self.buffer_reads]
        self.deferred = [(n, at) for n, at in self.deferred if at > self.buffer_reads]
        self.losses += sum(due)
        return link_stats(
            drops=self.drops, losses=self.losses, retrans=self.retrans, rtt_ms=self.rtt_ms
        )

    def receiver_drop(self, packets: int, *, report_late: bool = False) -> None:
        """The receiver gave up on the oldest `packets` held (too late) and acknowledged past
        them: they leave the buffer, no drop is counted, only their loss reports (seen one
        check late with `report_late`)."""
        for _ in range(packets):
            self.buffer.popleft()
        if report_late:
            self.deferred.append((packets, self.buffer_reads + 2))
        else:
            self.losses += packets

    def send_many(self, payloads: Sequence[bytes], *, srctime_us: int | None = None) -> int:
        """Like SrtConnection.send_many: how many of `payloads` went, stopping at a refusal."""
        for queued, payload in enumerate(payloads):
            if not self.send(payload, srctime_us=srctime_us):
                return queued
        return len(payloads)

    def peer_latency_ms(self) -> int:
        return 120

    def send_buffer_bytes(self) -> int:
        self.buffer_reads += 1
        return self.unacked + sum(self.buffer)


def make(conn: CountingConn, limit: int = 1_000_000, meter: Usage | None = None) -> Sender:
    return Sender(
        cast(SrtConnection, conn), latency_ms=120, send_buffer_limit_bytes=limit, meter=meter
    )


def piece(
    data: bytes,
    ts_us: int,
    *,
    join: bool = False,
    totals: Totals | None = None,
    opens: bool = True,
    closes: bool = True,
    opened_us: int = 0,
) -> Piece:
    payloads = tuple(data[i : i + 1316] for i in range(0, len(data), 1316))
    return Piece(payloads, ts_us, join, totals, len(data), opens, closes, opened_us)


async def test_send_buffer_is_read_at_most_every_check_interval() -> None:
    conn = CountingConn()
    s = make(conn)
    s.start((0, 0, 0), [])
    frames = [piece(packet(0x100, fill=i % 200) * 9, i * 1000) for i in range(300)]
    started = srt_now_us()
    for p in frames:
        s.offer(p)
        await asyncio.sleep(0)
    elapsed_us = srt_now_us() - started
    assert b"".join(conn.sent) == b"".join(b"".join(p.payloads) for p in frames)
    assert len(conn.sent) == 600  # each piece's payloads, as they are
    # ... but one buffer read per interval, not one per piece
    assert conn.buffer_reads <= elapsed_us // Sender.BUFFER_CHECK_US + 1
    stamps = [t for t in conn.srctimes if t is not None]
    assert len(stamps) == len(conn.sent)
    assert stamps == sorted(stamps)
    assert s.sent_bytes == 300 * 9 * 188


async def test_a_full_send_buffer_skips_to_the_next_join_point_billing_only_what_went() -> None:
    conn = CountingConn()
    meter = Usage()
    s = make(conn, limit=1_000_000, meter=meter)
    s.start((0, 0, 0), [])
    keyframe = piece(packet(0x100, rai=True), 0, join=True, totals=(1, 1, 10))
    s.offer(keyframe)
    conn.unacked = 5_000_000  # the link stalls
    await asyncio.sleep(2 * Sender.BUFFER_CHECK_US / 1e6)
    rest = [piece(packet(0x100, fill=i), i * 1000, totals=(1, 1 + i, 10 + i)) for i in range(1, 50)]
    for p in rest:
        s.offer(p)
    assert conn.sent == [keyframe.payloads[0]]  # nothing after the stall
    assert s.skips == 1
    assert s.sent_bytes + s.skipped_ts_bytes == 50 * 188
    conn.unacked = 0
    resume = piece(packet(0x100, rai=True, fill=1), 60_000, join=True, totals=(2, 51, 70))
    s.offer(piece(packet(0x100, fill=7), 55_000, totals=(1, 50, 60)))  # still skipping
    s.offer(resume)
    assert conn.sent == [keyframe.payloads[0], resume.payloads[0]]
    s.source_ended((2, 52, 75), None)  # one more frame read, exported to nobody
    async with asyncio.timeout(1):
        await s.run()
    assert s.ended_by_source
    await s.drain(1)
    s.settle()
    # billed for the two pieces libsrt took and delivered; the rest reported as skipped
    assert (meter.groups, meter.frames, meter.bytes) == (2, 2, 20)
    assert s.ts_bytes == 2 * 188
    skipped = s.skipped
    assert (skipped.groups, skipped.frames, skipped.bytes) == (0, 50, 55)
    assert s.skipped_ts_bytes == 50 * 188
    assert s.dropped.frames == 0


async def test_a_piece_libsrt_refused_in_part_is_not_billed_at_all() -> None:
    conn = CountingConn()
    conn.refuse_after = 2
    meter = Usage()
    s = make(conn, meter=meter)
    s.start((0, 0, 0), [])
    s.offer(piece(packet(0x100, rai=True) + packet(0x100) * 20, 0, join=True, totals=(1, 1, 900)))
    assert len(conn.sent) == 2
    assert s.sent_bytes == 2 * 1316
    assert s.skips == 1
    s.source_ended((1, 1, 900), None)
    await s.drain(1)
    s.settle()
    # two thirds of the frame went out: none of it is billed, all of it is reported skipped
    assert (meter.groups, meter.frames, meter.bytes) == (0, 0, 0)
    assert s.ts_bytes == 0
    assert (s.skipped.groups, s.skipped.frames, s.skipped.bytes) == (1, 1, 900)
    assert s.skipped_ts_bytes == 21 * 188


async def test_a_send_error_ends_the_sender_with_it() -> None:
    conn = CountingConn()
    conn.error = SrtConnectionLost(SrtErrno.SRT_ECONNLOST, "gone", op="srt_sendmsg2")
    s = make(conn)
    s.start((0, 0, 0), [])
    s.offer(piece(packet(0x100, rai=True), 0, join=True))
    s.offer(piece(packet(0x100), 1000))  # ignored: the sender is done
    with pytest.raises(SrtConnectionLost):
        async with asyncio.timeout(1):
            await s.run()
    assert s.sent_bytes == 0


def pat_packet(fill: int = 0) -> bytes:
    return bytes([0x47, 0x40, 0x00, 0x10]) + bytes([fill]) * 184


def frame(data: bytes, ts_us: int) -> TsFrame:
    """A frame as the exporter makes it."""
    return TsFrame(bytearray(data), ts_us)


def test_pieces_top_up_a_short_last_payload_from_the_next_frame() -> None:
    a = packet(0x100, fill=1) * 9  # 1316 + 376
    b = packet(0x101, fill=2) * 3
    c = packet(0x100, fill=3) * 10
    runs = pieces([frame(a, 0), frame(b, 1000), frame(c, 2000)])
    # b fits entirely into a's short payload; c tops it up to 1316 and is cut from there
    assert [ts for _, ts in runs] == [0, 2000]
    assert [len(p) for p in runs[0][0]] == [1316, 1316]
    assert [len(p) for p in runs[1][0]] == [1316, 188]
    assert b"".join(p for payloads, _ in runs for p in payloads) == a + b + c


def test_pieces_never_carry_into_a_frame_that_opens_with_pat() -> None:
    a = packet(0x100, fill=1) * 2
    key = pat_packet() + packet(0x100, rai=True) * 8
    runs = pieces([frame(a, 0), frame(key, 1000)])
    assert runs[0] == ((a,), 0)
    assert runs[1][0][0][:188] == pat_packet()  # the join point starts its own payload
    assert [len(p) for p in runs[1][0]] == [1316, 2 * 188]


@given(
    frames=st.lists(
        st.tuples(st.integers(min_value=1, max_value=30), st.booleans()), min_size=1, max_size=12
    )
)
def test_pieces_keep_every_byte_in_order_in_whole_packet_payloads(
    frames: list[tuple[int, bool]],
) -> None:
    chunks: list[TsFrame] = []
    expected = b""
    pat_led: list[int] = []
    for i, (npackets, pat) in enumerate(frames):
        data = (pat_packet(i) if pat else packet(0x100, fill=i)) + packet(0x100, fill=i) * (
            npackets - 1
        )
        if pat:
            pat_led.append(i * 1000)
        chunks.append(frame(data, i * 1000))
        expected += data
    runs = pieces(chunks)
    payloads = [p for ps, _ in runs for p in ps]
    assert b"".join(payloads) == expected
    assert all(0 < len(p) <= 1316 and len(p) % 188 == 0 for p in payloads)
    assert len(payloads) <= sum(-(-len(f.data) // 1316) for f in chunks)
    stamps = [ts for _, ts in runs]
    assert stamps == sorted(set(stamps))
    for ts in pat_led:  # every PAT-led frame opens its own run, at its own timestamp
        run = next(ps for ps, t in runs if t == ts)
        assert run[0][:188] == pat_packet(ts // 1000)
    # payloads are full except where a PAT-led frame (or the end) follows
    for k, (ps, _) in enumerate(runs):
        for p in ps[:-1]:
            assert len(p) == 1316
        if k + 1 < len(runs) and len(ps[-1]) < 1316:
            assert runs[k + 1][0][0][:188] == pat_packet(runs[k + 1][1] // 1000)


def test_a_keyframe_sharing_its_timestamp_with_the_audio_before_it_still_opens_a_run() -> None:
    audio = packet(0x101, fill=1) * 2
    key = pat_packet() + packet(0x100, rai=True) * 3
    runs = pieces([frame(audio, 5000), frame(key, 5000)])
    assert runs == [((audio,), 5000), ((key,), 5000)]


def drive_pieces(
    s: Sender,
    items: list[tuple[bytes, int]],
    error: BaseException | None = None,
    between: Callable[[int], None] | None = None,
) -> None:
    """Hand `items` (TS bytes, media µs) to `s` as a hub would: one piece each, a keyframe is a
    join point; then end the source with `error`. `between(i)` runs before item i."""
    s.start((0, 0, 0), [])
    for i, (data, ts_us) in enumerate(items):
        if between is not None:
            between(i)
        s.offer(piece(data, ts_us, join=random_access(data)))
    s.source_ended(None, error)


async def test_sender_delivers_every_byte_in_order_in_1316_byte_payloads() -> None:
    frames = [(b"".join(packet(0x100, fill=i) for _ in range(5)), i * 33_000) for i in range(20)]
    conn = CountingConn()
    s = make(conn)
    drive_pieces(s, frames)
    async with asyncio.timeout(1):
        await s.run()
    assert b"".join(conn.sent) == b"".join(data for data, _ in frames)
    assert all(len(p) % 188 == 0 and len(p) <= 1316 for p in conn.sent)
    assert s.sent_bytes == sum(len(data) for data, _ in frames)
    assert s.ended_by_source
    # every payload carries an SRT source time on libsrt's clock, never in the future, in order
    stamps = [t for t in conn.srctimes if t is not None]
    assert len(stamps) == len(conn.sent)
    assert stamps == sorted(stamps)
    assert stamps[-1] <= srt_now_us()


async def test_sender_reraises_the_source_error_after_sending_what_it_had() -> None:
    conn = CountingConn()
    s = make(conn)
    drive_pieces(s, [(packet(0x100, rai=True), 0)], ConnectionResetError("publisher vanished"))
    with pytest.raises(ConnectionResetError):
        async with asyncio.timeout(1):
            await s.run()
    assert conn.sent == [packet(0x100, rai=True)]


def test_slow_viewer_skips_to_the_next_keyframe() -> None:
    # GOP 1: keyframe + 3 frames; GOP 2: keyframe + 1 frame. The link refuses after 2 payloads.
    gop1 = [(packet(0x100, rai=True, fill=1), 0)]
    gop1 += [(packet(0x100, fill=2 + i), (i + 1) * 33_000) for i in range(3)]
    gop2 = [(packet(0x100, rai=True, fill=9), 132_000), (packet(0x100, fill=10), 165_000)]
    conn = CountingConn(refuse_after=2)

    def recover(i: int) -> None:
        if i == len(gop1):
            conn.refuse_after = None  # the link recovers before the next GOP

    s = make(conn)
    drive_pieces(s, gop1 + gop2, between=recover)
    assert conn.sent[:2] == [gop1[0][0], gop1[1][0]]
    # Nothing of GOP 1 after the refusal; GOP 2 from its keyframe on.
    assert conn.sent[2:] == [gop2[0][0], gop2[1][0]]
    assert s.skips == 1
    assert s.skipped_ts_bytes == 2 * 188


def test_viewer_with_too_much_unacknowledged_data_is_skipped() -> None:
    conn = CountingConn(unacked=10_000_000)
    s = make(conn, limit=1_000_000)
    drive_pieces(s, [(packet(0x100, fill=1), 0), (packet(0x100, fill=2), 33_000)])
    assert conn.sent == []
    assert s.skipped_ts_bytes == 2 * 188


def test_random_access_indicator_is_found_in_any_packet_of_a_chunk() -> None:
    assert random_access(packet(0, fill=0) + packet(0x100, rai=True))
    assert not random_access(packet(0x100) * 7)
