"""A viewer is billed only for what libsrt delivered: skips, refusals, too-late drops and the
end of a session, against a fake libsrt sender whose send buffer releases packets in order."""

from __future__ import annotations

from collections import deque

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.egress import Piece, Sender, Totals
from model import Usage
from tests.unit.gateway.test_egress import CountingConn, make, packet, piece

CHECK = Sender.BUFFER_CHECK_US


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


def unit(n: int, totals: Totals, *, join: bool = False) -> list[Piece]:
    """A unit of `n` one-packet pieces (an export turn) ending at `totals`."""
    return [
        piece(
            packet(0x100, rai=join and i == 0, fill=i),
            i * 1000,
            join=join and i == 0,
            totals=totals,
            opens=i == 0,
            closes=i == n - 1,
        )
        for i in range(n)
    ]


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
# ("drop", n), ("tick",), ("stall",), ("unstall",), ("refuse", after n more payloads).
_step = st.one_of(
    st.tuples(
        st.just("unit"),
        st.integers(1, 3),
        st.integers(1, 3),
        st.booleans(),
        st.integers(0, 3),
    ),
    st.tuples(st.sampled_from(["ack", "drop"]), st.integers(1, 6)),
    st.tuples(st.sampled_from(["tick", "stall", "unstall"])),
    st.tuples(st.just("refuse"), st.integers(0, 4)),
)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(_step, max_size=60))
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
    ]
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
    ]
)
def test_a_viewer_is_never_billed_more_than_libsrt_delivered(
    steps: list[tuple[object, ...]],
) -> None:
    conn = CountingConn(hold=True)
    meter = Usage()
    s = make(conn, limit=1_000_000, meter=meter)
    clock = Clock()
    base = (5, 50, 5000)
    s.start(base, [])
    totals = base
    # The truth the sender cannot see: which unit each held packet belongs to, and what
    # became of every unit (all its packets accepted, then acknowledged: delivered).
    fifo: deque[int] = deque()
    units: list[tuple[tuple[int, int, int], int, int]] = []  # (delta, packets, acked)
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
            for i in range(npieces):
                data = packet(0x100, rai=join and i == 0, fill=uid % 200) * (7 * npackets)
                p = piece(
                    data,
                    clock.now_us,
                    join=join and i == 0,
                    totals=totals,
                    opens=i == 0,
                    closes=i == npieces - 1,
                )
                s.offer(p, clock.step())
            accepted = len(conn.sent) - before
            fifo.extend([uid] * accepted)
            whole.append(accepted == npieces * npackets)
        elif kind in ("ack", "drop"):
            n = step[1]
            assert isinstance(n, int)
            n = min(n, len(fifo))
            for _ in range(n):
                uid = fifo.popleft()
                if kind == "ack":
                    delta, packets, acked = units[uid]
                    units[uid] = (delta, packets, acked + 1)
            if kind == "ack":
                conn.ack(n)
            else:
                conn.drop(n)
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
