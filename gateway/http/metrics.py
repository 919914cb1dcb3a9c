"""Prometheus exposition of the gateway's counters, read at scrape time (no per-frame cost).

`GatewayCollector` is a prometheus_client custom collector: each `collect()` reads
`StatsHandle.snapshot()` and the servers' live sessions through `GatewaySources` and yields
fresh metric families. Labels stay bounded: `node`, `tier`, `role`, `protocol` and a few fixed
kinds, plus `path` only when `path_labels` is on (one series per broadcast path ever seen: turn
it on only where paths are few).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from gateway.http.sources import GatewaySources, LiveSession

__all__ = ["SRT_LINK_FIELDS", "GatewayCollector", "LiveReading", "metrics_registry"]

SRT_LINK_FIELDS = (
    "pkts_sent",
    "pkts_recv",
    "pkts_send_loss",
    "pkts_recv_loss",
    "pkts_retrans",
    "pkts_send_drop",
    "pkts_recv_drop",
    "bytes_sent",
    "bytes_recv",
    "bytes_retrans",
)
"""libsrt figures summed over live SRT connections (`moqsrt_srt_link{kind=...}`)."""

# StatsEntry counter -> (metric name, help); usage counters carry `role`, lifecycle ones too.
_COUNTERS = (
    ("groups", "moqsrt_groups", "Model groups moved (ingress: written once; egress: per viewer)"),
    ("frames", "moqsrt_frames", "Model frames moved (ingress: written once; egress: per viewer)"),
    ("bytes", "moqsrt_bytes", "Model payload bytes moved (ingress once; egress per viewer)"),
    ("announced", "moqsrt_broadcasts_announced", "Publisher sessions that opened a broadcast"),
    ("announced_closed", "moqsrt_broadcasts_ended", "Publisher sessions whose broadcast ended"),
    ("subscriptions", "moqsrt_subscriptions_opened", "Viewer sessions opened"),
    ("subscriptions_closed", "moqsrt_subscriptions_closed", "Viewer sessions closed"),
    ("viewers", "moqsrt_viewers", "Distinct viewers seen"),
    ("sessions", "moqsrt_sessions_opened", "Metered sessions opened"),
    ("sessions_closed", "moqsrt_sessions_closed", "Metered sessions closed"),
)


@dataclass(frozen=True, slots=True)
class LiveReading:
    """What a scrape reads from loop-owned state: live sessions and the live broadcast count."""

    sessions: Sequence[LiveSession]
    broadcasts: int

    @classmethod
    def read(cls, sources: GatewaySources) -> LiveReading:
        """Read it now (on the event loop thread)."""
        return cls(sources.live_sessions(), len(sources.origin.paths()))


class GatewayCollector(Collector):
    """Yields the gateway's metrics from `sources` at each scrape.

    Counters (`_total`, cumulative and monotonic as `StatsHandle` guarantees) per node, tier,
    role (and path when `path_labels`). Gauges of now: live broadcasts, live sessions and
    viewers per protocol, SRT link figures summed over live connections (they fall when a
    session ends: its final figures are in its session record), the largest SRT RTT, MoQ
    sessions and backlog, and the ledger's lag when the ledger set its hook.
    """

    def __init__(
        self,
        sources: GatewaySources,
        *,
        path_labels: bool = False,
        live: LiveReading | None = None,
    ) -> None:
        """`live`: the servers' sessions and the origin's paths, read beforehand on the event
        loop so that `collect()` may run on another thread (None: read them in `collect()`,
        which must then run on the loop)."""
        self._sources = sources
        self._path_labels = path_labels
        self._reading = live

    def collect(self) -> Iterator[Metric]:
        """One scrape's metric families. Reads `StatsHandle.snapshot()` (any thread) and the
        ledger's `ledger_lag_s` hook (which must be thread-safe when `live` was given)."""
        yield from self._usage()
        yield from self._live()
        lag = self._sources.ledger_lag_s
        if lag is not None:
            value = lag()
            if value is not None:
                family = GaugeMetricFamily(
                    "moqsrt_ledger_lag_seconds",
                    "Seconds since the usage ledger last committed a write",
                    labels=["node"],
                )
                family.add_metric([self._sources.stats.node], float(value))
                yield family

    def _labels(self, extra: list[str]) -> list[str]:
        return ["node", *extra, *(["path"] if self._path_labels else [])]

    def _usage(self) -> Iterator[Metric]:
        node = self._sources.stats.node
        sums: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0] * len(_COUNTERS))
        for entry in self._sources.stats.snapshot():
            key = (entry.tier, entry.role, *((entry.path,) if self._path_labels else ()))
            values = sums[key]
            for i, (attr, _, _) in enumerate(_COUNTERS):
                values[i] += getattr(entry, attr)
        for i, (_, name, help_text) in enumerate(_COUNTERS):
            family = CounterMetricFamily(name, help_text, labels=self._labels(["tier", "role"]))
            for key, values in sorted(sums.items()):
                tier, role, *path = key
                family.add_metric([node, tier, role, *path], values[i])
            yield family

    def _live(self) -> Iterator[Metric]:
        node = self._sources.stats.node
        live = self._reading or LiveReading.read(self._sources)
        sessions = live.sessions
        broadcasts = GaugeMetricFamily(
            "moqsrt_live_broadcasts", "Broadcasts live in the origin now", labels=["node"]
        )
        broadcasts.add_metric([node], live.broadcasts)
        yield broadcasts

        live_sessions = GaugeMetricFamily(
            "moqsrt_live_sessions",
            "Sessions open now, per listener and role",
            labels=self._labels(["protocol", "role"]),
        )
        counts: dict[tuple[str, ...], int] = defaultdict(int)
        for s in sessions:
            if self._path_labels:
                for path in s.paths or ("",):
                    counts[(s.protocol, s.role, path)] += 1
            else:
                counts[(s.protocol, s.role)] += 1
        if not self._path_labels:
            for protocol in ("srt", "moq"):
                for role in ("ingress", "egress"):
                    counts.setdefault((protocol, role), 0)
        for key, count in sorted(counts.items()):
            live_sessions.add_metric([node, *key], count)
        yield live_sessions

        link = GaugeMetricFamily(
            "moqsrt_srt_link",
            "libsrt figures (packets, bytes) summed over the live SRT connections",
            labels=self._labels(["role", "kind"]),
        )
        rtt = GaugeMetricFamily(
            "moqsrt_srt_rtt_max_seconds",
            "Largest smoothed RTT among the live SRT connections",
            labels=self._labels(["role"]),
        )
        link_sums: dict[tuple[str, ...], float] = defaultdict(float)
        rtt_max: dict[tuple[str, ...], float] = {}
        for s in sessions:
            if s.protocol != "srt":
                continue
            base = (s.role, *((s.path,) if self._path_labels else ()))
            for kind in SRT_LINK_FIELDS:
                link_sums[(s.role, kind, *base[1:])] += float(s.link.get(kind, 0))
            rtt_s = float(s.link.get("rtt_ms", 0.0)) / 1000.0
            rtt_max[base] = max(rtt_max.get(base, 0.0), rtt_s)
        for key, value in sorted(link_sums.items()):
            link.add_metric([node, *key], value)
        for key, value in sorted(rtt_max.items()):
            rtt.add_metric([node, *key], value)
        yield link
        yield rtt

        moq_sessions = GaugeMetricFamily(
            "moqsrt_moq_sessions",
            "MoQ sessions open now, per transport",
            labels=["node", "transport"],
        )
        moq_backlog = GaugeMetricFamily(
            "moqsrt_moq_backlog_bytes",
            "Stream bytes queued to MoQ sessions and not yet acknowledged",
            labels=["node"],
        )
        transports: dict[str, int] = {"quic": 0, "webtransport": 0}
        backlog = 0
        for s in sessions:
            if s.protocol == "moq":
                transport = str(s.link.get("transport", ""))
                transports[transport] = transports.get(transport, 0) + 1
                backlog += int(s.link.get("backlog_bytes", 0))
        for transport, count in sorted(transports.items()):
            moq_sessions.add_metric([node, transport], count)
        moq_backlog.add_metric([node], backlog)
        yield moq_sessions
        yield moq_backlog


def metrics_registry(
    sources: GatewaySources, *, path_labels: bool = False, live: LiveReading | None = None
) -> CollectorRegistry:
    """A registry holding only the gateway's collector (no process or platform metrics), for
    `prometheus_client.generate_latest`; `live` as for `GatewayCollector`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(sources, path_labels=path_labels, live=live))
    return registry
