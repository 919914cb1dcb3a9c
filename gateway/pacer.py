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

from collections.abc import Iterable
from typing import Any, Final, NamedTuple

TS_PACKET_BYTES: Final = 188
DEFAULT_PAYLOAD_BYTES: Final = 7 * TS_PACKET_BYTES  # 1316, the SRT live-mode norm


class Burst(NamedTuple):
    """SRT payloads that share one send instant, in send order.

    `send_at_us` is the SRT source time for every payload (microseconds, the clock `now_us` was
    read from); `media_ts_us` is the media timestamp that produced it; each payload is a whole
    number of TS packets, at most the pacer's `payload_bytes`. A named tuple, not a frozen
    dataclass: the sender makes one per instant of every viewer, and a tuple is cheaper to build.
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
        return self.push_many(((data, media_ts_us),), now_us)

    def push_many(self, chunks: Iterable[tuple[Any, ...]], now_us: int) -> list[Burst]:
        """`push` every chunk of `chunks` at one wall time `now_us`, in one pass.

        A chunk is a tuple whose first two items are the TS bytes and their media timestamp
        (`(data, media_ts_us)`, a `TsChunk`, a `gateway.egress.Piece`).

        The payloads and their instants are exactly those of pushing the chunks one by one;
        chunks sharing an instant are joined once and cut into payloads, so a run of them makes
        one `Burst` (not one per chunk). Raises ValueError, before queuing anything of that
        chunk, for a chunk that is not whole TS packets.
        """
        out: list[Burst] = []
        parts: list[bytes] = []
        at_us = self._pending_at_us
        at_ts_us = self._pending_ts_us
        last_ts_us = self._last_ts_us
        try:
            for chunk in chunks:
                data: bytes = chunk[0]
                media_ts_us: int = chunk[1]
                if len(data) % TS_PACKET_BYTES:
                    raise ValueError("TS chunk is not a multiple of 188 bytes")
                if media_ts_us == last_ts_us:
                    instant = at_us
                else:
                    instant = self.stamp(media_ts_us, now_us)
                    last_ts_us = media_ts_us
                if instant != at_us and (parts or self._pending):
                    self._cut(parts, at_us, at_ts_us, out, keep_partial=False)
                    parts = []
                at_us = instant
                at_ts_us = media_ts_us
                parts.append(data)
        finally:
            self._last_ts_us = last_ts_us
            self._pending_at_us = at_us
            self._pending_ts_us = at_ts_us
            if parts:
                self._cut(parts, at_us, at_ts_us, out, keep_partial=True)
        return out

    def _cut(
        self, parts: list[bytes], at_us: int, ts_us: int, out: list[Burst], *, keep_partial: bool
    ) -> None:
        """Join the pending bytes and `parts`, append their payloads at `at_us` to `out`; the
        trailing partial payload stays pending when `keep_partial`."""
        pending = self._pending
        size = self.payload_bytes
        lead: list[bytes] = []
        if not pending:
            # Whole-payload chunks (most of a video frame's) go out as they are, uncopied.
            n = 0
            for part in parts:
                if len(part) != size:
                    break
                n += 1
            if n:
                lead, parts = parts[:n], parts[n:]
        if pending:
            for part in parts:
                pending += part
            buf = bytes(pending)
            pending.clear()
        elif len(parts) == 1:
            buf = parts[0]
        else:
            buf = b"".join(parts)
        end = len(buf)
        if keep_partial:
            full = end - end % size
            if full < end:
                pending += buf[full:]
            end = full
        if end == len(buf) and end <= size:
            rest = [buf] if end else []
        else:
            # `end` is the length of `buf` or a multiple of `size`: no slice runs past it
            rest = [buf[i : i + size] for i in range(0, end, size)]
        if lead:
            lead += rest
            rest = lead
        if not rest:
            return
        payloads = tuple(rest)
        out.append(Burst(at_us, ts_us, payloads))

    def flush(self) -> Burst | None:
        """Return the partial payload waiting for more bytes at its instant, or None."""
        if not self._pending:
            return None
        burst = Burst(self._pending_at_us, self._pending_ts_us, (bytes(self._pending),))
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
