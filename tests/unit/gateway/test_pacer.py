"""The egress pacer: media timestamps onto the send clock, with an explicit `now`."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.pacer import Pacer

MS = 1000  # microseconds per millisecond


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


@given(
    steps=st.lists(
        st.tuples(
            st.integers(min_value=-200_000, max_value=400_000),  # media ts step (us)
            st.integers(min_value=0, max_value=300_000),  # wall clock step (us)
        ),
        min_size=1,
        max_size=60,
    ),
    budget_us=st.integers(min_value=0, max_value=500_000),
)
def test_stamps_stay_within_the_clock_window(steps: list[tuple[int, int]], budget_us: int) -> None:
    pacer = Pacer(budget_us=budget_us)
    now = 1_000_000
    ts = 10_000_000
    first: int | None = None
    unclamped = 0  # the instant before the first-packet clamp, modelled independently
    for ts_step, now_step in steps:
        now += now_step
        ts += ts_step
        reanchors = pacer.reanchors
        instant = pacer.stamp(ts, now)
        if first is None or pacer.reanchors != reanchors:
            unclamped = now  # anchored (again) at the wall clock
        else:
            unclamped += ts_step  # the media spacing is kept
            assert now - budget_us <= unclamped <= now  # else it would have re-anchored
        first = instant if first is None else first
        assert instant == max(unclamped, first)
        assert instant <= now  # never ahead of the wall clock
