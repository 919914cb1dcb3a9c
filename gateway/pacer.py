"""Egress pacing for SRT viewers, sans-I/O: media timestamps in, SRT source times out.

`Pacer` maps each piece's media timestamp onto the sender's clock (`anchor + (ts - base)`).
The resulting instant is the SRT source time (srctime) of the piece's payloads: the receiver's
TSBPD releases each packet at source time plus latency, so stamping on the media clock lets
the receiver reproduce the media spacing even when our pipeline delivers frames in bunches.
The adapter (`gateway.egress.Sender`) supplies `now_us` and sends at once; nothing here sleeps.

Rules (moq-srt `serve_subscribe`, reference section 3.5):
- never ahead of the wall clock: an instant in the future re-anchors to now (tune-in bursts and
  faster-than-real-time input are sent at once, not held);
- never later than the latency budget allows: an instant more than `budget_us` in the past
  re-anchors to now (the receiver would drop it as too late);
- first-packet clamp: no instant earlier than the first one returned (an earlier SRT timestamp
  underflows the receiver's 32-bit clock and stalls TSBPD).

Payloads are not made here: the broadcast's hub (`gateway.egress.pieces`) cuts each exported
frame into 1316-byte payloads once for all its viewers; each viewer's pacer stamps them.
"""

from __future__ import annotations


class Pacer:
    """Stamps pieces of TS on the media clock (SRT source times, microseconds).

    One `Pacer` per viewer connection; it owns no resource. `budget_us` is how far in the past
    an instant may land before the pacer re-anchors (choose it below the SRT latency, so that
    stamped packets still reach the receiver in time).
    """

    def __init__(self, *, budget_us: int) -> None:
        if budget_us < 0:
            raise ValueError("budget_us must not be negative")
        self.budget_us = budget_us
        self.reanchors = 0
        """How many times the anchor moved after the first payload (for stats and tests)."""
        self._anchor_us: int | None = None
        self._base_ts_us = 0
        self._first_us: int | None = None

    def stamp(self, media_ts_us: int, now_us: int) -> int:
        """Return the send instant for `media_ts_us` at wall time `now_us` (both microseconds).

        Moves the anchor when the instant would be in the future or more than `budget_us` in
        the past; never returns less than the first instant ever returned.
        """
        if self._anchor_us is None:
            self._anchor_us, self._base_ts_us = now_us, media_ts_us
            if self._first_us is None:
                self._first_us = now_us
            return max(now_us, self._first_us)
        instant = self._anchor_us + (media_ts_us - self._base_ts_us)
        if instant > now_us or instant < now_us - self.budget_us:
            self._anchor_us, self._base_ts_us = now_us, media_ts_us
            self.reanchors += 1
            instant = now_us
        assert self._first_us is not None
        return max(instant, self._first_us)

    def reset(self) -> None:
        """Forget the anchor: the next piece anchors at its own `now_us`.

        The first-packet clamp survives, because the receiver's clock origin does too. Call it
        after skipping media, so that the jump in timestamps does not count as lateness.
        """
        self._anchor_us = None
