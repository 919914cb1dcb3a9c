"""A viewer is billed only for what libsrt delivered: skips, refusals, too-late drops at either
end and the end of a session, against a fake libsrt sender whose send buffer releases packets
in order."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.egress import Piece, Sender, Totals
from model import Usage
from tests.unit.gateway.test_egress import CountingConn, make, packet, piece

CHECK = Sender.BUFFER_CHECK_US
LATENCY_US = 120_000  # `make()`'s latency; the pacer's budget is half of it
LEAD_US = LATENCY_US // 2  # no packet handed at t plays before t + LEAD_US


def billed(meter: Usage) -> tuple[int, int, int]:
    return meter.groups, meter.frames, meter.bytes


class Clock:
    """Explicit srt_now_us() for `offer`: `tick()` passes a buffer check interval."""

    def __init__(self) -> None:
        self.now_us = 1_000_000

    def step(self) -> int:
        self.now_us += 1000
        return self.now_us

    def tick(self) -> int:
        self.now_us += CHECK
        return self.now_us

    def now(self) -> int:
        return self.now_us


@contextmanager
def srt_clock(clock: Clock) -> Iterator[None]:
    """The sender's own clock readings (`srt_now_us()` after a buffer reading) follow `clock`."""
    with mock.patch("gateway.egress.srt_now_us", clock.now):
        yield


def unit(n: int, totals: Totals, *, join: bool = False, opened_us: int = 0) -> list[Piece]:
    """A unit of `n` one-packet pieces (an export turn) ending at `totals`, handed out from
    `opened_us` on."""
    return [
        piece(
            packet(0x100, rai=join and i == 0, fill=i),
            i * 1000,
            join=join and i == 0,
            totals=totals,
            opens=i == 0,
            closes=i == n - 1,
            opened_us=opened_us,
        )
        for i in range(n)
    ]


def handed(s: Sender, clock: Clock, n: int, totals: Totals, *, join: bool = False) -> None:
    """Offer a unit of `n` pieces now, as the hub would (`opened_us` its first piece's now)."""
    for p in unit(n, totals, join=join, opened_us=clock.now_us):
        s.offer(p, clock.now_us)


def test_a_unit_is_billed_once_it_left_the_send_buffer_and_a_check_saw_no_drop() -> None:
    conn = CountingConn(hold=True)
    meter = Usage()
    s = make(conn, meter=meter)
    clock = Clock()
    s.start((0, 0, 0), [])
    for p in unit(3, (1, 3, 300), join=True):
        s.offer(p, clock.step())
    assert conn.held == 3
    s.offer(unit(1, (1, 4, 400))[0], clock.tick())  # a check: all still in libsrt's buffer
    assert billed(meter) == (0, 0, 0)
    conn.ack()  # the peer acknowledged everything
    s.offer(unit(1, (1, 5, 500))[0], clock.tick())  # a check sees the buffer empty...
    assert billed(meter) == (0, 0, 0)  # ... and bills one check later (a drop may show late)
    s.offer(unit(1, (1, 6, 600))[0], clock.tick())
    assert billed(meter) == (1, 4, 400)  # the first two units; the rest left after that check
    assert s.ts_bytes == 4 * 188


def test_units_lost_to_a_too_late_drop_are_reported_dropped_not_billed() -> None:
    conn = CountingConn(hold=True)
    meter = Usage()
    s = make(conn, meter=meter)
    clock = Clock()
    s.start((0, 0, 0), [])
    for p in unit(2, (1, 2, 200), join=True) + unit(2, (1, 4, 400)):
        s.offer(p, clock.step())
    s.offer(unit(1, (1, 5, 500))[0], clock.tick())  # check 1: 5 packets held
    conn.drop(2)  # libsrt dropped the oldest unit as too late...
    conn.ack(2)  # ... and the peer took the next one
    s.offer(unit(1, (1, 6, 600))[0], clock.tick())  # check 2: drop counter grew
    s.offer(unit(1, (1, 7, 700))[0], clock.tick())  # check 3: settles what left by check 2
    assert billed(meter) == (0, 0, 0)  # both units left in the drop's interval: not billed
    assert (s.dropped.groups, s.dropped.frames, s.dropped.bytes) == (1, 4, 400)
    assert s.dropped_ts_bytes == 4 * 188
    conn.ack()  # later units arrive; two quiet checks and they are billed
    s.offer(unit(1, (1, 8, 800))[0], clock.tick())
    s.offer(unit(1, (1, 9, 900))[0], clock.tick())
    s.offer(unit(1, (1, 10, 1000))[0], clock.tick())
    # frames 5..7 were acknowledged with no drop around: delivered; 8 and 9 are still held
    assert billed(meter) == (0, 3, 300)
    assert s.dropped.frames == 4
    assert conn.drops == 2  # what the fake dropped; the sender reads it, never adds to it


def test_a_viewer_joining_in_the_middle_of_a_unit_is_not_billed_for_it() -> None:
    conn = CountingConn()
    meter = Usage()
    s = make(conn, meter=meter)
    clock = Clock()
    first, second = unit(2, (1, 2, 200), join=True)
    second = second._replace(join=True)  # the viewer's first piece: a join point mid-unit
    s.start((1, 1, 100), [second])
    for p in unit(1, (1, 3, 300)):
        s.offer(p, clock.step())
    s.source_ended((1, 3, 300), None)
    s.offer(unit(1, (1, 4, 400))[0], clock.tick())  # ignored: the source ended
    assert len(conn.sent) == 2
    assert s.skipped.frames == 1  # the unit it joined in the middle of
    assert first.payloads[0] not in conn.sent


def test_a_unit_acknowledged_before_the_receiver_could_drop_it_is_billed_despite_losses() -> None:
    conn = CountingConn(hold=True)
    meter = Usage()
    s = make(conn, meter=meter)
    clock = Clock()
    with srt_clock(clock):
        s.start((0, 0, 0), [])
        handed(s, clock, 2, (1, 2, 200), join=True)  # the first check ran before it
        conn.losses += 1  # the receiver reported a loss (a retransmission made it)
        conn.ack()
        clock.now_us += LEAD_US - 1000 - 1  # a check sees it gone 1 ms + 1 µs before its deadline
        handed(s, clock, 1, (1, 3, 300))
        clock.tick()
        handed(s, clock, 1, (1, 4, 400))  # settles what the previous check saw gone
    assert billed(meter) == (1, 2, 200)
    assert s.dropped.frames == 0


def test_with_losses_reported_a_unit_that_left_after_its_deadline_is_dropped() -> None:
    conn = CountingConn(hold=True)
    meter = Usage()
    s = make(conn, meter=meter)
    clock = Clock()
    with srt_clock(clock):
        s.start((0, 0, 0), [])
        handed(s, clock, 2, (1, 2, 200), join=True)
        conn.losses += 1
        conn.ack()
        # Seen gone within the deadline, but not by the margin (the largest RTT, 1 ms here).
        clock.now_us += LEAD_US - 1000 + 1
        handed(s, clock, 1, (1, 3, 300))
        clock.tick()
        handed(s, clock, 1, (1, 4, 400))
    assert billed(meter) == (0, 0, 0)
    assert (s.dropped.groups, s.dropped.frames, s.dropped.bytes) == (1, 2, 200)
    assert s.dropped_ts_bytes == 2 * 188


def test_a_loss_taints_the_units_in_the_buffer_when_it_was_reported_not_later_ones() -> None:
    conn = CountingConn(hold=True)
    meter = Usage()
    s = make(conn, meter=meter)
    clock = Clock()
    with srt_clock(clock):
        s.start((0, 0, 0), [])
        handed(s, clock, 2, (1, 2, 200), join=True)
        conn.retrans += 1  # a resend: the receiver missed something of what is held
        clock.tick()
        handed(s, clock, 1, (1, 3, 300))  # after a check that noted it
        clock.tick()
        handed(s, clock, 1, (1, 4, 400))
        conn.ack()
        clock.tick()
        clock.tick()
        handed(s, clock, 1, (1, 5, 500))  # sees them gone, 200 ms after the first unit
        clock.tick()
        handed(s, clock, 1, (1, 6, 600))  # settles them
    # The first unit left too late to be sure; the next two, late too, saw no loss reported.
    assert (s.dropped.groups, s.dropped.frames, s.dropped.bytes) == (1, 2, 200)
    assert billed(meter) == (0, 2, 200)


def test_the_margin_grows_with_the_largest_rtt_seen() -> None:
    conn = CountingConn(hold=True, rtt_ms=30.0)
    meter = Usage()
    s = make(conn, meter=meter)
    clock = Clock()
    with srt_clock(clock):
        s.start((0, 0, 0), [])
        handed(s, clock, 2, (1, 2, 200), join=True)  # the first check saw 30 ms
        conn.rtt_ms = 1.0  # the margin keeps the largest RTT seen
        conn.losses += 1
        conn.ack()
        clock.tick()  # a check sees it gone 10 ms before its deadline: within 30 ms of it
        handed(s, clock, 1, (1, 3, 300))
        clock.tick()
        handed(s, clock, 1, (1, 4, 400))
    assert billed(meter) == (0, 0, 0)
    assert s.dropped.frames == 2


def test_a_loss_report_counted_one_check_after_the_acknowledgement_still_counts() -> None:
    conn = CountingConn(hold=True)
    meter = Usage()
    s = make(conn, meter=meter)
    clock = Clock()
    with srt_clock(clock):
        s.start((0, 0, 0), [])
        handed(s, clock, 2, (1, 2, 200), join=True)
        clock.tick()
        handed(s, clock, 1, (1, 3, 300))
        # The receiver gave up on the first unit; its loss report counts a check late.
        conn.receiver_drop(2, report_late=True)
        clock.tick()
        handed(s, clock, 1, (1, 4, 400))  # sees it gone, 100 ms after it was handed
        clock.tick()
        handed(s, clock, 1, (1, 5, 500))  # settles it, and the loss shows now
    assert billed(meter) == (0, 0, 0)
    assert s.dropped.frames == 2


def test_while_units_a_loss_touched_are_unsettled_the_buffer_is_read_more_often() -> None:
    conn = CountingConn(hold=True)
    s = make(conn)
    clock = Clock()
    with srt_clock(clock):
        s.start((0, 0, 0), [])
        handed(s, clock, 1, (1, 1, 100), join=True)
        reads = conn.buffer_reads
        clock.now_us += Sender.LOSSY_CHECK_US
        handed(s, clock, 1, (1, 2, 200))
        assert conn.buffer_reads == reads  # healthy: every BUFFER_CHECK_US only
        conn.losses += 1
        clock.now_us += CHECK - Sender.LOSSY_CHECK_US
        handed(s, clock, 1, (1, 3, 300))  # this check notes the loss
        assert conn.buffer_reads == reads + 1
        clock.now_us += Sender.LOSSY_CHECK_US
        handed(s, clock, 1, (1, 4, 400))
        assert conn.buffer_reads == reads + 2
        conn.ack()
        for _ in range(3):  # seen gone, settled; then back to the healthy interval
            clock.now_us += Sender.LOSSY_CHECK_US
            handed(s, clock, 1, (1, 5, 500))
        reads = conn.buffer_reads
        clock.now_us += Sender.LOSSY_CHECK_US
        handed(s, clock, 1, (1, 6, 600))
        assert conn.buffer_reads == reads
    assert s.meter.frames + s.dropped.frames == 4


async def test_a_drain_after_losses_bills_only_what_left_in_time() -> None:
    conn = CountingConn(hold=True)
    meter = Usage()
    s = make(conn, meter=meter)
    clock = Clock()
    with srt_clock(clock):
        s.start((0, 0, 0), [])
        handed(s, clock, 2, (1, 2, 200), join=True)
        s.source_ended((1, 2, 200), None)
        conn.losses += 2
        conn.ack()
        await s.drain(2)  # it saw the buffer empty at `clock`: in time
    s.settle()
    assert billed(meter) == (1, 2, 200)

    conn = CountingConn(hold=True)
    meter = Usage()
    s = make(conn, meter=meter)
    with srt_clock(clock):
        s.start((0, 0, 0), [])
        handed(s, clock, 2, (1, 2, 200), join=True)
        s.source_ended((1, 2, 200), None)
        conn.receiver_drop(1)
        conn.ack()
        clock.now_us += LEAD_US  # the drain saw the buffer empty too late to tell
        await s.drain(2)
    s.settle()
    assert billed(meter) == (0, 0, 0)
    assert (s.dropped.groups, s.dropped.frames, s.dropped.bytes) == (1, 2, 200)


async def test_the_drain_bills_what_libsrt_delivered_by_the_end_of_the_session() -> None:
    conn = CountingConn(hold=True)
    meter = Usage()
    s = make(conn, meter=meter)
    s.start((0, 0, 0), [])
    for p in unit(3, (1, 3, 300), join=True) + unit(2, (1, 5, 500)):
        s.offer(p)
    s.source_ended((1, 5, 500), None)
    conn.ack()  # the receiver has it all before the drain looks
    await s.drain(2)
    s.settle()
    assert billed(meter) == (1, 5, 500)
    assert s.ts_bytes == 5 * 188
    assert (s.dropped.frames, s.skipped.frames) == (0, 0)


async def test_a_drain_that_sees_a_drop_bills_nothing_it_has_not_confirmed() -> None:
    conn = CountingConn(hold=True)
    meter = Usage()
    s = make(conn, meter=meter)
    s.start((0, 0, 0), [])
    for p in unit(3, (1, 3, 300), join=True):
        s.offer(p)
    s.source_ended((1, 3, 300), None)
    conn.drop(1)
    conn.ack()
    await s.drain(2)
    s.settle()
    assert billed(meter) == (0, 0, 0)
    assert (s.dropped.groups, s.dropped.frames, s.dropped.bytes) == (1, 3, 300)


def test_units_unconfirmed_when_the_session_ends_without_a_drain_count_as_dropped() -> None:
    conn = CountingConn(hold=True)
    meter = Usage()
    s = make(conn, meter=meter)
    s.start((0, 0, 0), [])
    for p in unit(2, (1, 2, 200), join=True):
        s.offer(p)
    conn.ack()  # maybe delivered, but the caller left before any check could tell
    s.settle()
    s.settle()  # idempotent
    assert billed(meter) == (0, 0, 0)
    assert (s.dropped.groups, s.dropped.frames, s.dropped.bytes) == (1, 2, 200)
    assert s.dropped_ts_bytes == 2 * 188


# One step of a viewer's life: ("unit", pieces, packets per piece, join, frames), ("ack", n),
# ("drop", n), ("rdrop", n, report late), ("nak", n), ("wait", ms), ("lag", ms: media
# timestamps behind the clock, so that source times fall up to the pacer's budget in the
# past), ("tick",), ("stall",), ("unstall",), ("refuse", after n more payloads).
_step = st.one_of(
    st.tuples(
        st.just("unit"),
        st.integers(1, 3),
        st.integers(1, 3),
        st.booleans(),
        st.integers(0, 3),
    ),
    st.tuples(st.sampled_from(["ack", "drop", "nak"]), st.integers(1, 6)),
    st.tuples(st.just("rdrop"), st.integers(1, 6), st.booleans()),
    st.tuples(st.sampled_from(["wait", "lag"]), st.integers(1, 70)),
    st.tuples(st.sampled_from(["tick", "stall", "unstall"])),
    st.tuples(st.just("refuse"), st.integers(0, 4)),
)


@settings(max_examples=400, deadline=None)
@given(steps=st.lists(_step, max_size=60), rtt_ms=st.sampled_from([0.1, 1.0, 25.0]))
# A drop seen while the unit holding it had not wholly left libsrt's buffer yet.
@example(
    steps=[
        ("unit", 1, 1, False, 0),
        ("unit", 2, 3, False, 1),
        *[("ack", 1)] * 5,
        ("drop", 1),
        ("tick",),
        ("unit", 1, 1, False, 0),
        ("tick",),
        ("ack", 1),
        ("unit", 1, 1, False, 0),
        ("tick",),
        ("unit", 1, 1, False, 0),
    ],
    rtt_ms=1.0,
)
# A drop seen while the buffer reading says nothing has left (a stalled link).
@example(
    steps=[
        ("unit", 2, 3, False, 1),
        ("tick",),
        ("stall",),
        *[("ack", 1)] * 5,
        ("drop", 1),
        ("unit", 1, 1, False, 0),
        ("tick",),
        ("unstall",),
        ("unit", 1, 1, False, 0),
        ("tick",),
        ("unit", 1, 1, False, 0),
    ],
    rtt_ms=1.0,
)
# The receiver gives up on a unit as early as it can, and its loss report counts a check late.
@example(
    steps=[
        ("unit", 1, 2, True, 2),
        ("tick",),
        ("unit", 1, 1, False, 1),
        ("rdrop", 2, True),
        ("unit", 1, 1, False, 1),
        ("tick",),
        ("unit", 1, 1, False, 1),
        ("ack", 2),
        ("tick",),
        ("unit", 1, 1, False, 1),
    ],
    rtt_ms=25.0,
)
# A source time a whole budget in the past, the receiver's drift correction at its worst: the
# receiver may drop the unit 12.5 ms before `opened_us + LEAD_US`, which the margin covers.
@example(
    steps=[
        ("unit", 1, 1, True, 0),
        ("ack", 1),
        ("tick",),
        ("tick",),
        ("lag", 59),
        ("unit", 1, 1, False, 1),
        ("rdrop", 1, False),
        ("wait", 2),
        ("unit", 1, 1, False, 1),
        ("tick",),
        ("unit", 1, 1, False, 1),
    ],
    rtt_ms=25.0,
)
def test_a_viewer_is_never_billed_more_than_libsrt_delivered(
    steps: list[tuple[object, ...]], rtt_ms: float
) -> None:
    conn = CountingConn(hold=True, rtt_ms=rtt_ms)
    meter = Usage()
    s = make(conn, limit=1_000_000, meter=meter)
    clock = Clock()
    base = (5, 50, 5000)
    with srt_clock(clock):
        s.start(base, [])
        totals, units, whole = _live(s, conn, clock, steps, base)
        s.source_ended(totals, None)
        s.settle()
    delivered = [0, 0, 0]
    for (delta, packets, acked), ok in zip(units, whole, strict=True):
        if ok and acked == packets:
            for k in range(3):
                delivered[k] += delta[k]
    got = billed(meter)
    assert all(got[k] <= delivered[k] for k in range(3)), (got, delivered)
    skipped, dropped = s.skipped, s.dropped
    # Nothing is lost from the books: billed + skipped + dropped is what the hub read.
    assert (
        got[0] + skipped.groups + dropped.groups,
        got[1] + skipped.frames + dropped.frames,
        got[2] + skipped.bytes + dropped.bytes,
    ) == (totals[0] - base[0], totals[1] - base[1], totals[2] - base[2])
    assert min(*got, *billed(skipped), *billed(dropped)) >= 0
    assert s.ts_bytes + s.skipped_ts_bytes + s.dropped_ts_bytes == sum(
        packets * 7 * 188 for _, packets, _ in units
    )


def _live(
    s: Sender, conn: CountingConn, clock: Clock, steps: list[tuple[object, ...]], base: Totals
) -> tuple[Totals, list[tuple[tuple[int, int, int], int, int]], list[bool]]:
    """Play `steps` on `s`; return the hub's totals and the truth the sender cannot see: each
    unit's (delta, packets, packets acknowledged, not dropped by either end) and whether
    libsrt accepted it whole."""
    totals = base
    lag_us = 0
    fifo: deque[int] = deque()  # the unit of each held packet
    units: list[tuple[tuple[int, int, int], int, int]] = []
    whole: list[bool] = []
    for step in steps:
        kind = step[0]
        if kind == "unit":
            _, npieces, npackets, join, frames = step
            assert isinstance(npieces, int)
            assert isinstance(npackets, int)
            assert isinstance(frames, int)
            assert isinstance(join, bool)
            groups = int(join)
            delta = (groups, frames, frames * 100 + groups)
            totals = (totals[0] + delta[0], totals[1] + delta[1], totals[2] + delta[2])
            uid = len(units)
            units.append((delta, npieces * npackets, 0))
            before = len(conn.sent)
            opened_us = clock.now_us + 1000  # the hub's now for the first piece
            for i in range(npieces):
                data = packet(0x100, rai=join and i == 0, fill=uid % 200) * (7 * npackets)
                p = piece(
                    data,
                    clock.now_us - lag_us,
                    join=join and i == 0,
                    totals=totals,
                    opens=i == 0,
                    closes=i == npieces - 1,
                    opened_us=opened_us,
                )
                s.offer(p, clock.step())
            accepted = len(conn.sent) - before
            fifo.extend([uid] * accepted)
            whole.append(accepted == npieces * npackets)
        elif kind in ("ack", "drop", "rdrop"):
            n = step[1]
            assert isinstance(n, int)
            n = min(n, len(fifo))
            if kind == "rdrop" and n:
                # The receiver drops a packet once one after it is due to play: at the
                # earliest, the smallest source time from it on, plus the latency, less what
                # libsrt's drift correction may take off (half a round trip).
                head = len(conn.sent) - len(conn.buffer)
                earliest = min(t for t in conn.srctimes[head:] if t is not None)
                earliest += LATENCY_US - int(conn.rtt_ms * 1000) // 2
                clock.now_us = max(clock.now_us, earliest)
            for _ in range(n):
                uid = fifo.popleft()
                if kind == "ack":
                    delta, packets, acked = units[uid]
                    units[uid] = (delta, packets, acked + 1)
            if kind == "ack":
                conn.ack(n)
            elif kind == "drop":
                conn.drop(n)
            else:
                late = step[2]
                assert isinstance(late, bool)
                conn.receiver_drop(n, report_late=late)
        elif kind == "nak":
            n = step[1]
            assert isinstance(n, int)
            conn.losses += min(n, len(fifo))  # reported lost, resent in time (acked later)
        elif kind in ("wait", "lag"):
            ms = step[1]
            assert isinstance(ms, int)
            if kind == "wait":
                clock.now_us += ms * 1000
            else:
                lag_us = ms * 1000
        elif kind == "tick":
            clock.tick()
        elif kind == "stall":
            conn.unacked = 10_000_000
        elif kind == "unstall":
            conn.unacked = 0
        else:
            after = step[1]
            assert isinstance(after, int)
            conn.refuse_after = len(conn.sent) + after
    return totals, units, whole
