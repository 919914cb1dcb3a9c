"""The egress pacer: media timestamps onto the send clock, with an explicit `now`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.pacer import Burst, Pacer

MS = 1000  # microseconds per millisecond


def ts_bytes(npackets: int, fill: int = 0) -> bytes:
    return (bytes([0x47]) + bytes([fill]) * 187) * npackets


def test_first_chunk_is_stamped_now() -> None:
    pacer = Pacer(budget_us=100 * MS)
    assert pacer.stamp(5_000_000, now_us=1_000_000) == 1_000_000


def test_live_input_arriving_late_keeps_media_spacing() -> None:
    # Frames 40 ms apart on the media clock arrive bunched (jitter): the stamps restore the
    # 40 ms spacing as long as they stay within the budget.
    pacer = Pacer(budget_us=100 * MS)
    assert pacer.stamp(0, now_us=10_000 * MS) == 10_000 * MS
    assert pacer.stamp(40 * MS, now_us=10_070 * MS) == 10_040 * MS
    assert pacer.stamp(80 * MS, now_us=10_090 * MS) == 10_080 * MS
    assert pacer.reanchors == 0


def test_instant_in_the_future_reanchors_to_now() -> None:
    # A tune-in burst: the cached GOP arrives at once; nothing is stamped ahead of the clock.
    pacer = Pacer(budget_us=100 * MS)
    now = 50_000 * MS
    stamps = [pacer.stamp(i * 33 * MS, now_us=now) for i in range(30)]
    assert stamps == [now] * 30
    assert pacer.reanchors == 29


def test_after_reanchor_spacing_continues_from_the_new_anchor() -> None:
    pacer = Pacer(budget_us=100 * MS)
    pacer.stamp(0, now_us=0)
    assert pacer.stamp(500 * MS, now_us=100 * MS) == 100 * MS  # future: re-anchored
    assert pacer.stamp(533 * MS, now_us=150 * MS) == 133 * MS  # late by 17 ms: keeps spacing


def test_instant_past_the_budget_reanchors_to_now() -> None:
    pacer = Pacer(budget_us=100 * MS)
    pacer.stamp(0, now_us=0)
    # The publisher stalled: this frame is 2 s late; the receiver would drop an old stamp.
    assert pacer.stamp(40 * MS, now_us=2_040 * MS + 1) == 2_040 * MS + 1
    assert pacer.reanchors == 1
    assert pacer.stamp(80 * MS, now_us=2_090 * MS) == 2_080 * MS + 1


def test_late_within_the_budget_is_stamped_in_the_past() -> None:
    pacer = Pacer(budget_us=100 * MS)
    pacer.stamp(0, now_us=0)
    assert pacer.stamp(40 * MS, now_us=139 * MS) == 40 * MS
    assert pacer.reanchors == 0


def test_reordered_timestamps_may_pace_earlier_but_never_before_the_first_packet() -> None:
    pacer = Pacer(budget_us=500 * MS)
    first = pacer.stamp(1_000 * MS, now_us=7_000 * MS)
    # A B-frame (or audio) stamped before the first packet's media time.
    assert pacer.stamp(900 * MS, now_us=7_010 * MS) == first
    # Later, a reordered timestamp may land earlier than its predecessor, but not before first.
    assert pacer.stamp(1_100 * MS, now_us=7_120 * MS) == 7_100 * MS
    assert pacer.stamp(1_060 * MS, now_us=7_121 * MS) == 7_060 * MS


def test_first_packet_clamp_survives_reset() -> None:
    pacer = Pacer(budget_us=500 * MS)
    first = pacer.stamp(0, now_us=1_000 * MS)
    pacer.reset()
    assert pacer.stamp(0, now_us=990 * MS) == first  # a clock that never goes back, but still


def test_reset_makes_a_timestamp_jump_start_fresh() -> None:
    pacer = Pacer(budget_us=100 * MS)
    pacer.stamp(0, now_us=0)
    pacer.reset()
    assert pacer.stamp(10_000 * MS, now_us=50 * MS) == 50 * MS
    assert pacer.stamp(10_040 * MS, now_us=95 * MS) == 90 * MS
    assert pacer.reanchors == 0


def test_chunks_sharing_an_instant_are_coalesced_into_1316_byte_payloads() -> None:
    pacer = Pacer(budget_us=100 * MS)
    out: list[Burst] = []
    for _ in range(10):  # ten 3-packet chunks of one frame: 30 packets
        out += pacer.push(ts_bytes(3), media_ts_us=0, now_us=0)
    tail = pacer.flush()
    assert tail is not None
    payloads = [p for b in out for p in b.payloads] + list(tail.payloads)
    assert [len(p) for p in payloads] == [1316, 1316, 1316, 1316, 376]
    assert {b.send_at_us for b in out} == {0}


def test_full_payloads_go_out_at_once_and_the_partial_waits() -> None:
    pacer = Pacer(budget_us=100 * MS)
    bursts = pacer.push(ts_bytes(9), media_ts_us=0, now_us=0)
    assert [len(p) for b in bursts for p in b.payloads] == [1316]
    assert pacer.flush() == Burst(send_at_us=0, media_ts_us=0, payloads=(ts_bytes(2),))
    assert pacer.flush() is None


def test_partial_payload_is_flushed_before_the_instant_changes() -> None:
    pacer = Pacer(budget_us=100 * MS)
    assert pacer.push(ts_bytes(2, fill=1), media_ts_us=0, now_us=0) == []
    bursts = pacer.push(ts_bytes(1, fill=2), media_ts_us=40 * MS, now_us=45 * MS)
    assert bursts == [Burst(send_at_us=0, media_ts_us=0, payloads=(ts_bytes(2, fill=1),))]
    tail = pacer.flush()
    assert tail == Burst(send_at_us=40 * MS, media_ts_us=40 * MS, payloads=(ts_bytes(1, 2),))


def test_chunks_with_different_timestamps_but_one_instant_share_a_payload() -> None:
    # During a tune-in burst every frame re-anchors to the same `now`: pack them densely.
    pacer = Pacer(budget_us=100 * MS)
    out: list[Burst] = []
    for i in range(7):
        out += pacer.push(ts_bytes(1), media_ts_us=i * 33 * MS, now_us=0)
    assert [len(p) for b in out for p in b.payloads] == [1316]
    assert pacer.flush() is None


def test_same_timestamp_keeps_its_instant_even_as_the_clock_moves() -> None:
    pacer = Pacer(budget_us=100 * MS)
    pacer.push(ts_bytes(1), media_ts_us=0, now_us=0)
    assert pacer.push(ts_bytes(1), media_ts_us=0, now_us=5 * MS) == []
    tail = pacer.flush()
    assert tail is not None
    assert tail.send_at_us == 0
    assert tail.nbytes == 376


def test_drop_pending_discards_the_partial_payload() -> None:
    pacer = Pacer(budget_us=100 * MS)
    pacer.push(ts_bytes(3), media_ts_us=0, now_us=0)
    assert pacer.drop_pending() == 3 * 188
    assert pacer.flush() is None


def test_rejects_chunks_that_are_not_whole_ts_packets() -> None:
    pacer = Pacer(budget_us=100 * MS)
    with pytest.raises(ValueError, match="188"):
        pacer.push(b"\x47" * 100, media_ts_us=0, now_us=0)


@pytest.mark.parametrize("payload_bytes", [0, 1000, -188])
def test_rejects_payload_sizes_that_are_not_whole_ts_packets(payload_bytes: int) -> None:
    with pytest.raises(ValueError, match="188"):
        Pacer(budget_us=0, payload_bytes=payload_bytes)


@given(
    steps=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=7),  # packets in the chunk
            st.integers(min_value=-200_000, max_value=400_000),  # media ts step (us)
            st.integers(min_value=0, max_value=300_000),  # wall clock step (us)
        ),
        min_size=1,
        max_size=60,
    ),
    budget_us=st.integers(min_value=0, max_value=500_000),
)
def test_stamps_stay_within_the_clock_window_and_bytes_survive(
    steps: list[tuple[int, int, int]], budget_us: int
) -> None:
    pacer = Pacer(budget_us=budget_us)
    now = 1_000_000
    ts = 10_000_000
    sent = bytearray()
    expected = bytearray()
    first: int | None = None
    for npackets, ts_step, now_step in steps:
        now += now_step
        ts += ts_step
        chunk = ts_bytes(npackets, fill=len(expected) % 251)
        expected += chunk
        for burst in pacer.push(chunk, media_ts_us=ts, now_us=now):
            first = burst.send_at_us if first is None else first
            assert burst.send_at_us <= now  # never ahead of the wall clock
            assert burst.send_at_us >= first  # first-packet clamp
            assert all(len(p) == 1316 or p is burst.payloads[-1] for p in burst.payloads)
            sent += b"".join(burst.payloads)
    tail = pacer.flush()
    if tail is not None:
        sent += b"".join(tail.payloads)
    assert sent == expected


def flat(bursts: list[Burst]) -> list[tuple[int, bytes]]:
    return [(b.send_at_us, p) for b in bursts for p in b.payloads]


@given(
    batches=st.lists(
        st.tuples(
            st.lists(
                st.tuples(
                    st.integers(min_value=1, max_value=9),  # packets in the chunk
                    st.integers(min_value=0, max_value=3),  # media ts step (x 40 ms)
                ),
                max_size=12,
            ),
            st.integers(min_value=0, max_value=150_000),  # wall clock step (us)
        ),
        min_size=1,
        max_size=12,
    )
)
def test_push_many_sends_exactly_what_pushing_one_by_one_sends(
    batches: list[tuple[list[tuple[int, int]], int]],
) -> None:
    one, many = Pacer(budget_us=100 * MS), Pacer(budget_us=100 * MS)
    by_one: list[Burst] = []
    by_many: list[Burst] = []
    now, ts, fill = 5_000 * MS, 0, 0
    for chunks, now_step in batches:
        now += now_step
        batch = []
        for npackets, step in chunks:
            ts += step * 40 * MS
            fill += 1
            batch.append((ts_bytes(npackets, fill=fill % 251), ts))
        for data, media_ts in batch:
            by_one += one.push(data, media_ts, now)
        by_many += many.push_many(batch, now)
        assert flat(by_many) == flat(by_one)
    by_one.append(one.flush() or Burst(0, 0, ()))
    by_many.append(many.flush() or Burst(0, 0, ()))
    assert flat(by_many) == flat(by_one)
    assert many.reanchors == one.reanchors


def test_push_many_makes_one_burst_per_instant() -> None:
    pacer = Pacer(budget_us=100 * MS)
    chunks = [(ts_bytes(7, fill=i), 0) for i in range(3)] + [(ts_bytes(3), 40 * MS)]
    bursts = pacer.push_many(chunks, now_us=100 * MS)
    # the 40 ms chunk would be in the future: it re-anchors to now, the same instant
    assert [(b.send_at_us, len(b.payloads)) for b in bursts] == [(100 * MS, 3)]
    assert b"".join(bursts[0].payloads) == b"".join(c for c, _ in chunks[:3])
    assert pacer.flush() == Burst(send_at_us=100 * MS, media_ts_us=40 * MS, payloads=(ts_bytes(3),))


def test_whole_payload_chunks_go_out_uncopied() -> None:
    pacer = Pacer(budget_us=100 * MS)
    full = [ts_bytes(7, fill=i) for i in range(3)]
    bursts = pacer.push_many([(c, 0) for c in [*full, ts_bytes(2)]], now_us=0)
    assert [p is c for p, c in zip(bursts[0].payloads, full, strict=True)] == [True] * 3
    assert pacer.flush() == Burst(send_at_us=0, media_ts_us=0, payloads=(ts_bytes(2),))
