"""MoQ over QUIC (moq-lite-03/04) with aioquic, beside `gateway/srt/`; meets the SRT edge only
in the model (`model.Origin`).

Modules: `wire` (the codec), `session` (the sans-I/O session: stream routing and state),
`publisher` (serving ANNOUNCE_REQUEST and SUBSCRIBE from the model), `transport` (the aioquic
adapter, raw QUIC and WebTransport), `webtransport` (CONNECT handling, stream allocators),
`server` (`MoqServer`, the embedding API), `record` (session records), `cert` (self-signed
certificates). The names below load their module on first use, so importing the codec or the
session does not start aioquic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.moq.cert import Certificate, generate_certificate, load_certificate
    from gateway.moq.record import MoqSessionRecord, MoqSessionSink
    from gateway.moq.server import MoqAuthDecision, MoqAuthHook, MoqServer, MoqSessionInfo
    from gateway.moq.webtransport import ConnectRequest

__all__ = [
    "Certificate",
    "ConnectRequest",
    "MoqAuthDecision",
    "MoqAuthHook",
    "MoqServer",
    "MoqSessionInfo",
    "MoqSessionRecord",
    "MoqSessionSink",
    "generate_certificate",
    "load_certificate",
]

_HOME = {
    "Certificate": "gateway.moq.cert",
    "generate_certificate": "gateway.moq.cert",
    "load_certificate": "gateway.moq.cert",
    "MoqSessionRecord": "gateway.moq.record",
    "MoqSessionSink": "gateway.moq.record",
    "MoqAuthDecision": "gateway.moq.server",
    "MoqAuthHook": "gateway.moq.server",
    "MoqServer": "gateway.moq.server",
    "MoqSessionInfo": "gateway.moq.server",
    "ConnectRequest": "gateway.moq.webtransport",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'gateway.moq' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
