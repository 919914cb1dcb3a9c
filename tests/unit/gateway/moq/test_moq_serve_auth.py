"""The SRT authorization hook decides MoQ connections: asked once as a reader and once as a
publisher, with the URL path under the prefix and the query token as the password."""

from __future__ import annotations

import pytest

from gateway.auth import AuthDecision
from gateway.moq.auth import moq_auth_from_srt
from gateway.moq.server import MoqAuthDecision
from gateway.moq.webtransport import ConnectRequest
from gateway.moq.wire import Version
from gateway.streamid import StreamRequest


class Hook:
    """Readers need token `r`, publishers token `p`; tiers say which answer was used."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str, tuple[str, int]]] = []

    async def __call__(self, request: StreamRequest, peer: tuple[str, int]) -> AuthDecision:
        self.asked.append((request.mode, request.path, request.password, peer))
        want = "p" if request.is_publish else "r"
        if request.password not in (want, "both"):
            return AuthDecision(accept=False, code=1401)
        return AuthDecision(tier=f"{request.mode}-tier")


def connect_request(path: str, token: str | None) -> ConnectRequest:
    return ConnectRequest(
        transport="webtransport",
        version=Version.LITE_03,
        path=path,
        query={} if token is None else {"jwt": token},
        peer="10.0.0.7:5000",
    )


async def test_the_hook_is_asked_as_reader_and_publisher_with_path_and_token() -> None:
    hook = Hook()
    decide = moq_auth_from_srt(hook, prefix="tenant")
    decision = await decide(connect_request("cam1", "both"))
    assert hook.asked == [
        ("request", "tenant/cam1", "both", ("10.0.0.7", 5000)),
        ("publish", "tenant/cam1", "both", ("10.0.0.7", 5000)),
    ]
    assert decision == MoqAuthDecision(
        tier="request-tier",
        root="tenant/cam1",
        read=True,
        publish=True,
        publish_root="tenant/cam1",
        publish_tier="publish-tier",
    )


@pytest.mark.parametrize(("token", "read", "publish"), [("r", True, False), ("p", False, True)])
async def test_a_connection_may_read_only_or_publish_only(
    token: str, read: bool, publish: bool
) -> None:
    decision = await moq_auth_from_srt(Hook())(connect_request("cam1", token))
    assert decision.accept
    assert (decision.read, decision.publish) == (read, publish)


async def test_neither_refuses_with_401_for_an_unauthorized_answer() -> None:
    decision = await moq_auth_from_srt(Hook())(connect_request("cam1", None))
    assert (decision.accept, decision.status) == (False, 401)
