"""`ServerConfig`: the settings of one SRT server, plain frozen data.

`Server.bind` keyword arguments override its fields; `gateway.serve` builds one from the
command line and TOML configuration (`gateway.config`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.auth import AuthHook
from gateway.session import SessionSink
from gateway.streamid import Mode
from model import PublisherPolicy

__all__ = ["ServerConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Settings of one SRT server (plain data; `Server.bind` keyword arguments override them).

    - `listen`: `(host, port)` or `"host:port"`; port 0 picks a free port (`Server.port`).
    - `latency_ms`: SRT latency offered to callers (the larger side wins); also the exporter's
      stalled-group skip budget, and half of it the pacer's lateness budget.
    - `passphrase` / `pbkeylen`: default SRT encryption (None: unencrypted unless the hook
      chooses a passphrase for that caller).
    - `prefix`: model path prefix, joined to every stream id's resource on a segment boundary.
    - `publisher_policy`: REJECT refuses a second publisher on a path this server has claimed,
      or that is live in the origin given to `bind`/`serve`, with 1409 at handshake; TAKEOVER
      lets the newcomer replace it (the old publisher's connection is closed).
    - `request_timeout_s`: how long an `m=request` caller waits for its broadcast to appear;
      0 means "must be live now" (1404 at handshake when the origin is known).
    - `auth`: the authorization hook (None accepts every well-formed stream id).
    - `sinks`: every `SessionRecord` is handed to each of them.
    - `node`: node id in records (None: the stats handle's node, else the host name).
    - `send_buffer_limit_bytes`: a viewer whose unsent SRT bytes exceed this is skipped ahead
      to the next keyframe (None: twice latency x `max_bitrate_bps`, at least 1 MB).
    - `publish_cap_bps`: per-publisher input cap (TS bits per second, sustained; bursts of
      `PUBLISH_BURST_S` at that rate are allowed); a publisher above it is disconnected with
      `outcome="error"`. None: no cap.
    - `max_bitrate_bps`: sizes libsrt receive buffers (latency x rate); `maxbw_bytes_s` caps
      what libsrt sends per connection (None: libsrt's default).
    - `peer_idle_timeout_ms`: a silent peer is declared lost after this long.
    - `default_mode`: mode of `#!::` ids without `m=`.
    - `auth_timeout_s`: bound on the authorization hook (then 1503).
    - `claim_timeout_s`: how long a publisher's path stays claimed between its handshake and
      its connection surfacing (a handshake libsrt fails after our callback frees it then).
    - `drain_timeout_s`: bound on handing a viewer the tail of an ended broadcast.
    - `max_sessions`: sessions (publishers and viewers, accepted and not yet ended) the server
      holds at most; `max_peer_sessions`: the same per peer address; `max_peer_handshakes_per_s`:
      handshakes one peer address may start per second (bursts of `HANDSHAKE_BURST_S` worth).
      A caller over any of them is refused at handshake with 1402 (SRT_REJX_OVERLOAD); None
      means no limit.
    """

    listen: tuple[str, int] | str = ("0.0.0.0", 9000)
    latency_ms: int = 120
    passphrase: str | None = field(default=None, repr=False)
    pbkeylen: int = 16
    prefix: str = ""
    publisher_policy: PublisherPolicy = PublisherPolicy.REJECT
    request_timeout_s: float = 10.0
    auth: AuthHook | None = None
    sinks: Sequence[SessionSink] = ()
    node: str | None = None
    send_buffer_limit_bytes: int | None = None
    publish_cap_bps: int | None = None
    max_bitrate_bps: int = 100_000_000
    maxbw_bytes_s: int | None = None
    peer_idle_timeout_ms: int = 5000
    default_mode: Mode = "publish"
    auth_timeout_s: float = 1.5
    claim_timeout_s: float = 2.0
    drain_timeout_s: float = 2.0
    max_sessions: int | None = 1000
    max_peer_sessions: int | None = 100
    max_peer_handshakes_per_s: float | None = 20.0

    def send_buffer_limit(self) -> int:
        """`send_buffer_limit_bytes`, or its default when None (bytes)."""
        if self.send_buffer_limit_bytes is not None:
            return self.send_buffer_limit_bytes
        return max(1_000_000, 2 * self.latency_ms * self.max_bitrate_bps // 8000)
