"""One shared TS export per broadcast (`ExportHub`): each viewer billed for what it got."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import av

from gateway.egress import HubRegistry, Sender
from gateway.srt import SrtConnection, SrtConnectionLost
from gateway.srt.lib import SrtErrno
from gateway.srt.values import LinkStats
from model import BroadcastProducer, Usage
from mux import TsImporter
from tests.media import expected_counts

FIXTURE = Path(__file__).resolve().parents[3] / "fixtures" / "h264_aac.ts"
STEP = 8 * 1316


class RecordingConn:
    """A link that takes everything and keeps it."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.ended = False

    def send(self, payload: bytes, *, srctime_us: int | None = None) -> bool:
        self.sent.append(payload)
        return True

    def send_many(self, payloads: Sequence[bytes], *, srctime_us: int | None = None) -> int:
        """Like SrtConnection.send_many: how many of `payloads` went, stopping at a refusal."""
        for queued, payload in enumerate(payloads):
            if not self.send(payload, srctime_us=srctime_us):
                return queued
        return len(payloads)

    def peer_latency_ms(self) -> int:
        return 120

    def send_buffer_bytes(self) -> int:
        return 0

    def stats(self) -> LinkStats:
        """No drops (and `send_buffer_bytes()` says everything was acknowledged at once)."""
        return link_stats()


def link_stats(
    *, drops: int = 0, losses: int = 0, retrans: int = 0, rtt_ms: float = 1.0
) -> LinkStats:
    """A libsrt sender's figures: packets dropped, reported lost and resent so far, the
    smoothed RTT, nothing else."""
    return LinkStats(
        rtt_ms=rtt_ms,
        pkt_sent=0,
        pkt_recv=0,
        pkt_sent_loss=losses,
        pkt_recv_loss=0,
        pkt_retrans=retrans,
        pkt_recv_drop=0,
        pkt_send_drop=drops,
        bytes_sent=0,
        bytes_recv=0,
        bytes_retrans=0,
        mbps_send=0.0,
        mbps_recv=0.0,
    )


def viewer(meter: Usage) -> tuple[RecordingConn, Sender]:
    conn = RecordingConn()
    sender = Sender(
        cast(SrtConnection, conn), latency_ms=120, send_buffer_limit_bytes=1 << 40, meter=meter
    )
    return conn, sender


def media_frames(ts: bytes) -> dict[str, int]:
    """Video and audio access units in `ts`, as libavformat demuxes them."""
    counts: dict[str, int] = {}
    with av.open(io.BytesIO(ts), mode="r", format="mpegts") as container:
        for packet in container.demux():
            if packet.size:
                kind = packet.stream.type
                counts[kind] = counts.get(kind, 0) + 1
    return counts


async def feed(importer: TsImporter, data: bytes) -> None:
    for i in range(0, len(data), STEP):
        importer.feed(data[i : i + STEP])
        await asyncio.sleep(0.002)  # a live-ish publisher: the hub keeps up


async def test_viewers_sharing_a_hub_are_billed_exactly_for_what_they_got() -> None:
    data = FIXTURE.read_bytes()
    broadcast = BroadcastProducer()
    importer = TsImporter(broadcast)
    hubs = HubRegistry(latency_ms=120)
    meters = [Usage(), Usage(), Usage()]
    (conn_a, a), (conn_b, b), (conn_c, c) = (viewer(m) for m in meters)
    hub = hubs.attach("live/x", broadcast.consume(), a)
    assert hubs.attach("live/x", broadcast.consume(), b) is hub  # one export for both
    tasks = [asyncio.ensure_future(s.run()) for s in (a, b)]
    half = len(data) // 2 // 188 * 188
    await feed(importer, data[:half])
    await asyncio.sleep(0.3)
    assert hubs.attach("live/x", broadcast.consume(), c) is hub  # joins mid-broadcast
    tasks.append(asyncio.ensure_future(c.run()))
    await feed(importer, data[half:])
    importer.finish()
    async with asyncio.timeout(10):
        await asyncio.gather(*tasks)
        # the books close as a session's do: the drain confirms what libsrt still held
        await asyncio.gather(*(s.drain(2) for s in (a, b, c)))
    for s in (a, b, c):
        s.settle()
    assert len(hubs) == 0  # the broadcast ended: the hub is gone

    whole, early, late = meters
    # The two viewers attached from the start: each billed what one read of the model
    # delivered (the hub's consumer read it once): the fixture's media frames, but for a few
    # audio frames the export subscribes too late for (its catalog comes first). Reads that
    # made no TS (the end of the broadcast) are reported skipped, never billed.
    assert (whole.groups, whole.frames, whole.bytes) == (early.groups, early.frames, early.bytes)
    assert (a.dropped.frames, a.skips) == (0, 0)
    assert (
        whole.groups + a.skipped.groups,
        whole.frames + a.skipped.frames,
        whole.bytes + a.skipped.bytes,
    ) == (hub.usage.groups, hub.usage.frames, hub.usage.bytes)
    assert a.skipped.frames <= 2
    assert a.ts_bytes == len(b"".join(conn_a.sent))
    expected = expected_counts(FIXTURE)
    assert 0.98 * sum(m.frames for m in expected.values()) <= whole.frames
    assert b"".join(conn_a.sent) == b"".join(conn_b.sent)
    # The late viewer got the broadcast from a keyframe in the middle, and is billed for no
    # more than the frames it received (a few read before it joined may go unbilled).
    got = media_frames(b"".join(conn_c.sent))
    received = got["video"] + got["audio"]
    assert 0 < late.frames < whole.frames
    assert 0.95 * received <= late.frames <= received
    assert 0 < late.bytes < whole.bytes
    assert got["video"] < expected["0x100"].frames


async def test_the_last_viewer_leaving_stops_the_export() -> None:
    broadcast = BroadcastProducer()
    hubs = HubRegistry(latency_ms=120)
    _, a = viewer(Usage())
    _, b = viewer(Usage())
    hub = hubs.attach("live/y", broadcast.consume(), a)
    hubs.attach("live/y", broadcast.consume(), b)
    await asyncio.sleep(0.01)
    await hubs.detach(hub, a)
    assert hub.viewers == 1  # still exporting for b
    assert len(hubs) == 1
    await hubs.detach(hub, b)
    assert hub.done
    assert len(hubs) == 0
    # a new viewer of the same path gets a fresh export
    _, c = viewer(Usage())
    assert hubs.attach("live/y", broadcast.consume(), c) is not hub
    await hubs.aclose()
    broadcast.finish()


class BrokenConn(RecordingConn):
    """A link that broke: every send raises."""

    def send(self, payload: bytes, *, srctime_us: int | None = None) -> bool:
        raise SrtConnectionLost(SrtErrno.SRT_ECONNLOST, "connection lost", op="srt_sendmsg2")


async def test_a_viewer_whose_link_broke_ends_alone_and_the_others_get_everything() -> None:
    data = FIXTURE.read_bytes()
    broadcast = BroadcastProducer()
    importer = TsImporter(broadcast)
    hubs = HubRegistry(latency_ms=120)
    conn_a, a = viewer(Usage())
    broken = Sender(
        cast(SrtConnection, BrokenConn()), latency_ms=120, send_buffer_limit_bytes=1 << 40
    )
    hub = hubs.attach("live/z", broadcast.consume(), a)
    hubs.attach("live/z", broadcast.consume(), broken)
    runs = [asyncio.ensure_future(s.run()) for s in (a, broken)]
    await feed(importer, data)
    importer.finish()
    async with asyncio.timeout(10):
        results = await asyncio.gather(*runs, return_exceptions=True)
    assert results[0] is None
    assert isinstance(results[1], SrtConnectionLost)
    assert hub.done
    got = media_frames(b"".join(conn_a.sent))
    expected = expected_counts(FIXTURE)
    assert got["video"] == expected["0x100"].frames  # the healthy viewer got every video frame


async def test_a_viewer_of_a_taken_over_path_gets_the_new_broadcast_not_the_old_ones_end() -> None:
    old = BroadcastProducer()
    hubs = HubRegistry(latency_ms=120)
    _, a = viewer(Usage())
    old_hub = hubs.attach("live/t", old.consume(), a)
    new = BroadcastProducer()  # a takeover published a new broadcast at the same path
    _, b = viewer(Usage())
    new_hub = hubs.attach("live/t", new.consume(), b)
    assert new_hub is not old_hub
    assert len(hubs) == 2  # the old export goes on for its viewer until its broadcast ends
    _, c = viewer(Usage())
    assert hubs.attach("live/t", new.consume(), c) is new_hub
    run_a = asyncio.ensure_future(a.run())
    old.finish()
    async with asyncio.timeout(5):
        await run_a
    assert a.ended_by_source
    assert [old_hub.done, new_hub.done] == [True, False]
    assert len(hubs) == 1
    await hubs.aclose()
    assert new_hub.done
    assert len(hubs) == 0
    new.finish()
