"""Egress pacing for SRT viewers, sans-I/O: media timestamps in, stamped 1316-byte payloads out.

`Pacer` maps each TS chunk's media timestamp onto the sender's clock (`anchor + (ts - base)`)
and coalesces chunks that share one instant into full SRT payloads. The resulting instant is
the SRT source time of the payloads: the receiver's TSBPD releases each packet at source time
plus latency, so stamping on the media clock lets the receiver reproduce the media spacing even
when our pipeline delivers frames in bunches. The adapter (`gateway.server`) supplies `now_us`
and sends each `Burst` as soon as it is returned; nothing here sleeps.

Rules (moq-srt `serve_subscribe`, reference section 3.5):
- never ahead of the wall clock: an instant in the future re-anchors to now (tune-in bursts and
  faster-than-real-time input are sent at once, not held);
- never later than the latency budget allows: an instant more than `budget_us` in the past
  re-anchors to now (the receiver would drop it as too late);
- first-packet clamp: no instant earlier than the first payload's (an earlier SRT timestamp
  underflows the receiver's 32-bit clock and stalls TSBPD);
- a partial payload is flushed before the instant changes, and by `flush()` when the caller has
  nothing more to push right now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

TS_PACKET_BYTES: Final = 188
DEFAULT_PAYLOAD_BYTES: Final = 7 * TS_PACKET_BYTES  # 1316, the SRT live-mode norm


@dataclass(frozen=True, slots=True, kw_only=True)
class Burst:
    """SRT payloads that share one send instant, in send order.

    `send_at_us` is the SRT source time for every payload (microseconds, the clock `now_us` was
    read from); `media_ts_us` is the media timestamp that produced it; each payload is a whole
    number of TS packets, at most the pacer's `payload_bytes`.
    """

    send_at_us: int
    media_ts_us: int
    payloads: tuple[bytes, ...]

    @property
    def nbytes(self) -> int:
        """Total bytes in the payloads."""
        return sum(len(p) for p in self.payloads)


class Pacer:
    """Stamps TS chunks on the media clock and coalesces them into SRT payloads.

    One `Pacer` per viewer connection; it owns no resource. `budget_us` is how far in the past
    an instant may land before the pacer re-anchors (choose it below the SRT latency, so that
    stamped packets still reach the receiver in time). `payload_bytes` is a multiple of 188.
    """

    def __init__(self, *, budget_us: int, payload_bytes: int = DEFAULT_PAYLOAD_BYTES) -> None:
        if budget_us < 0:
            raise ValueError("budget_us must not be negative")
        if payload_bytes <= 0 or payload_bytes % TS_PACKET_BYTES:
            raise ValueError("payload_bytes must be a positive multiple of 188")
        self.budget_us = budget_us
        self.payload_bytes = payload_bytes
        self.reanchors = 0
        """How many times the anchor moved after the first payload (for stats and tests)."""
        self._anchor_us: int | None = None
        self._base_ts_us = 0
        self._first_us: int | None = None
        self._pending = bytearray()
        self._pending_at_us = 0
        self._pending_ts_us = 0
        self._last_ts_us: int | None = None

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

    def push(self, data: bytes, media_ts_us: int, now_us: int) -> list[Burst]:
        """Queue TS bytes (a multiple of 188) stamped `media_ts_us`; return bursts ready to send.

        Consecutive chunks with the same media timestamp share one instant. Full payloads go
        out at once; a partial one waits for more bytes at the same instant, and is returned
        first (at its own instant) when the instant changes.
        """
        if len(data) % TS_PACKET_BYTES:
            raise ValueError("TS chunk is not a multiple of 188 bytes")
        out: list[Burst] = []
        if self._last_ts_us is not None and media_ts_us == self._last_ts_us:
            instant = self._pending_at_us
        else:
            instant = self.stamp(media_ts_us, now_us)
            self._last_ts_us = media_ts_us
        if self._pending and instant != self._pending_at_us:
            flushed = self.flush()
            if flushed is not None:
                out.append(flushed)
        self._pending_at_us = instant
        self._pending_ts_us = media_ts_us
        self._pending += data
        size = self.payload_bytes
        full = len(self._pending) // size * size
        if full:
            payloads = tuple(bytes(self._pending[i : i + size]) for i in range(0, full, size))
            del self._pending[:full]
            out.append(Burst(send_at_us=instant, media_ts_us=media_ts_us, payloads=payloads))
        return out

    def flush(self) -> Burst | None:
        """Return the partial payload waiting for more bytes at its instant, or None."""
        if not self._pending:
            return None
        burst = Burst(
            send_at_us=self._pending_at_us,
            media_ts_us=self._pending_ts_us,
            payloads=(bytes(self._pending),),
        )
        self._pending.clear()
        return burst

    def drop_pending(self) -> int:
        """Discard the partial payload (a slow viewer skipping ahead); return bytes dropped."""
        dropped = len(self._pending)
        self._pending.clear()
        return dropped

    def reset(self) -> None:
        """Forget the anchor: the next chunk anchors at its own `now_us`.

        The first-packet clamp survives, because the receiver's clock origin does too. Call it
        after skipping media, so that the jump in timestamps does not count as lateness.
        """
        self._anchor_us = None
        self._last_ts_us = None
