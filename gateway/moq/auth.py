"""One authorization hook for SRT and MoQ: `moq_auth_from_srt` asks the SRT `AuthHook` about
a MoQ connection, so who may read or publish, and in which tier, is decided in one place.

A MoQ session may both read and publish, so the SRT hook is asked twice, with the same path
and credentials: as an `m=request` caller (may it read? `tier`) and as an `m=publish` caller
(may it publish? `publish_tier`). The path is the URL path (WebTransport; raw QUIC lite-03/04
carries none, so the hook sees the empty resource), joined under the server's prefix; the
connection then only sees and publishes under it. The URL query's token (`jwt` or `token`) is
the request's `password` and the whole query its `params`; neither is ever logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gateway.auth import REJECT_UNAUTHORIZED, AuthDecision, AuthHook
from gateway.moq.server import MoqAuthDecision
from gateway.moq.webtransport import ConnectRequest
from gateway.streamid import StreamRequest, join_path, normalize_prefix
from model import normalize_path

__all__ = ["moq_auth_from_srt"]


def moq_auth_from_srt(
    hook: AuthHook, *, prefix: str = ""
) -> Callable[[ConnectRequest], Awaitable[MoqAuthDecision]]:
    """A `MoqAuthHook` (async) that asks the SRT `hook` (see the module docstring). A connection is
    refused (401 when the read answer was 1401 unauthorized, else 403) when neither reading nor
    publishing is allowed. Raises `ValueError` for a bad `prefix`."""
    root_prefix = normalize_prefix(prefix)

    async def decide(request: ConnectRequest) -> MoqAuthDecision:
        try:
            resource = normalize_path(request.path)
        except ValueError:
            return MoqAuthDecision(accept=False, status=400)
        path = join_path(root_prefix, resource) if resource else root_prefix
        host, _, port = request.peer.rpartition(":")
        peer = (host, int(port) if port.isdigit() else 0)
        # Both at once: a remote hook's round trips overlap inside the listener's time bound.
        read, publish = await asyncio.gather(
            hook(_stream_request(request, "request", resource, path), peer),
            hook(_stream_request(request, "publish", resource, path), peer),
        )
        if not read.accept and not publish.accept:
            return MoqAuthDecision(accept=False, status=_status(read))
        return MoqAuthDecision(
            tier=read.tier if read.accept else publish.tier,
            root=path,
            read=read.accept,
            publish=publish.accept,
            publish_root=path,
            publish_tier=publish.tier,
        )

    return decide


def _stream_request(request: ConnectRequest, mode: str, resource: str, path: str) -> StreamRequest:
    return StreamRequest(
        mode="publish" if mode == "publish" else "request",
        resource=resource,
        path=path,
        password=request.token or "",
        host=request.authority,
        params=dict(request.query),
    )


def _status(decision: AuthDecision) -> int:
    return 401 if decision.code == REJECT_UNAUTHORIZED else 403
