"""Authorization from configuration: the users table, the HTTP hook (a real aiohttp server on
loopback), their combination, the MoQ adaptation, config validation and secret hygiene."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web

from gateway import authconfig
from gateway.authconfig import ConfiguredAuth, HttpAuth, UserEntry, parse_users
from gateway.config import ConfigError, load_config
from gateway.moq.webtransport import ConnectRequest
from gateway.moq.wire import Version
from gateway.serve import auth_hook, moq_auth, server_config, warn_if_open
from gateway.streamid import parse_stream_id

PEER = ("127.0.0.1", 40000)
ALICE_PW = "alice-password"
TOKEN = "viewer-token-123"
USERS: list[dict[str, Any]] = [
    {
        "user": "alice",
        "password": "sha256:" + hashlib.sha256(ALICE_PW.encode()).hexdigest(),
        "paths": ["live/alice"],
        "tier": "pro",
        "passphrase": "alice-srt-secret",
    },
    {"user": "bob", "password": "bob-plain-pw", "paths": ["live/*/hd"], "actions": ["publish"]},
    {"token": TOKEN, "paths": ["live"], "actions": ["read"], "tier": "viewers"},
]


def table() -> ConfiguredAuth:
    return ConfiguredAuth(parse_users(USERS))


async def decide(hook: Any, stream_id: str) -> tuple[bool, int, str, str | None]:
    d = await hook(parse_stream_id(stream_id), PEER)
    return (d.accept, d.code if not d.accept else 0, d.tier, d.passphrase)


async def test_users_table_accepts_known_users_on_their_paths_with_tier_and_passphrase() -> None:
    hook = table()
    assert await decide(hook, f"publish:live/alice:alice:{ALICE_PW}") == (
        True,
        0,
        "pro",
        "alice-srt-secret",
    )
    # Prefix on a segment boundary: live/alice covers live/alice/cam2, not live/alicex.
    assert (await decide(hook, f"read:live/alice/cam2:alice:{ALICE_PW}"))[0]
    assert await decide(hook, f"read:live/alicex:alice:{ALICE_PW}") == (
        False,
        1403,
        "default",
        None,
    )
    # A glob, and a publish-only entry: bob may publish live/x/hd, not read it.
    assert (await decide(hook, "#!::r=live/x/hd,m=publish,u=bob,s=bob-plain-pw"))[:2] == (True, 0)
    assert (await decide(hook, "#!::r=live/x/sd,m=publish,u=bob,s=bob-plain-pw"))[:2] == (
        False,
        1403,
    )
    assert (await decide(hook, "#!::r=live/x/hd,m=request,u=bob,s=bob-plain-pw"))[:2] == (
        False,
        1403,
    )
    # A bearer token, whatever the user: read-only under live.
    assert await decide(hook, f"#!::r=live/a,m=request,s={TOKEN}") == (True, 0, "viewers", None)
    assert (await decide(hook, f"#!::r=live/a,m=request,token={TOKEN}"))[0]
    assert (await decide(hook, f"#!::r=live/a,m=publish,s={TOKEN}"))[:2] == (False, 1403)


@pytest.mark.parametrize(
    "stream_id",
    [
        "#!::r=live/alice,m=publish",  # no credentials
        "#!::r=live/alice,m=publish,u=alice",  # a user, no secret
        "publish:live/alice:alice:wrong-password",  # wrong password
        f"publish:live/alice:bob:{ALICE_PW}",  # alice's password, bob's name
        "publish:live/alice:alice:sha256:"
        + hashlib.sha256(ALICE_PW.encode()).hexdigest(),  # the hash is not the password
    ],
)
async def test_unknown_or_wrong_credentials_get_1401(stream_id: str) -> None:
    assert (await decide(table(), stream_id))[:2] == (False, 1401)


@pytest.mark.parametrize(
    ("users", "fragment"),
    [
        ({"users": "x"}, "cannot read"),
        ({"users": [{"user": "a"}]}, "needs user and password, or token"),
        ({"users": [{"token": "t", "actions": ["watch"]}]}, "actions"),
        ({"users": [{"token": "t", "paths": []}]}, "paths"),
        ({"users": [{"token": "t", "paths": ["a/../b"]}]}, "bad path"),
        ({"users": [{"token": "t", "passphrase": "short"}]}, "10 to 79"),
        ({"users": [{"token": "sha256:abc"}]}, "64 hex digits"),
        ({"users": [{"token": "t", "role": "admin"}]}, "unknown key 'role'"),
        ({"users": 5}, "array of tables"),
        ({"auth_http_url": "ftp://x"}, "http:// or https://"),
        ({"auth_http_timeout_ms": 0}, "positive"),
        ({"auth_cache_ms": -1}, "at least 0"),
    ],
)
def test_bad_auth_settings_are_one_line_errors_naming_the_key(
    tmp_path: Path, users: dict[str, Any], fragment: str
) -> None:
    key, value = next(iter(users.items()))
    file = tmp_path / "moqsrt.toml"
    file.write_text(_toml(key, value))
    with pytest.raises(ConfigError) as info:
        load_config(file, environ={})
    assert info.value.key == key
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def _toml(key: str, value: Any) -> str:
    if key == "users" and isinstance(value, list):
        return "".join(
            "[[users]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in entry.items())
            for entry in value
        )
    return f"{key} = {json.dumps(value)}\n"


def test_users_come_from_the_toml_file_or_a_file_it_names(tmp_path: Path) -> None:
    (tmp_path / "users.toml").write_text(_toml("users", USERS))
    (tmp_path / "moqsrt.toml").write_text('users = "users.toml"\n')
    named = load_config(tmp_path / "moqsrt.toml", environ={})
    (tmp_path / "inline.toml").write_text(_toml("users", USERS))
    inline = load_config(tmp_path / "inline.toml", environ={})
    assert named.users == inline.users == parse_users(USERS)
    assert named.users[0].paths == ("live/alice",)


def test_secrets_never_reach_reprs_or_config_errors(tmp_path: Path) -> None:
    url = "http://127.0.0.1:1/auth?key=url-secret-token"
    config = load_config(None, {"auth_http_url": url}, environ={})
    file = tmp_path / "u.toml"
    file.write_text(_toml("users", USERS))
    config = load_config(file, {"auth_http_url": url}, environ={})
    shown = repr(config) + repr(server_config(config)) + repr(auth_hook(config))
    for secret in (
        "url-secret-token",
        "bob-plain-pw",
        TOKEN,
        "alice-srt-secret",
        USERS[0]["password"],
    ):
        assert secret not in shown
    bad = tmp_path / "bad.toml"
    bad.write_text('[[users]]\nuser = "eve"\npassword = "eve-secret-1"\npassphrase = "short-pw"\n')
    with pytest.raises(ConfigError) as info:
        load_config(bad, environ={})
    assert "short-pw" not in str(info.value)
    assert "eve-secret-1" not in str(info.value)


# --- the HTTP hook, against a real aiohttp server on loopback --------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HookServer:
    """An aiohttp authorization endpoint: records every JSON body, answers with `handler`."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.handler: Handler = self.accept_pro
        self.release = asyncio.Event()  # set at teardown: slow handlers stop waiting

    async def slow(self, request: web.Request) -> web.StreamResponse:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self.release.wait()
        return web.json_response({"accept": True})

    async def accept_pro(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"accept": True, "tier": "pro", "passphrase": "hook-passphrase1"})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        return await self.handler(request)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/auth", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/auth"


@pytest.fixture
async def hook_server() -> AsyncIterator[tuple[HookServer, str]]:
    server = HookServer()
    url = await server.start()
    try:
        yield server, url
    finally:
        server.release.set()
        await server.runner.cleanup()


async def test_http_hook_gets_the_request_and_its_answer_decides(
    hook_server: tuple[HookServer, str],
) -> None:
    server, url = hook_server
    hook = HttpAuth(url, timeout_s=2, cache_s=0)
    try:
        request = parse_stream_id("#!::r=cam1,m=request,u=carol,s=carol-token-1", "live")
        decision = await hook(request, PEER)
        assert (decision.accept, decision.tier, decision.passphrase) == (
            True,
            "pro",
            "hook-passphrase1",
        )
        body = server.bodies[-1]
        assert body["action"] == "read"
        assert body["mode"] == "request"
        assert (body["path"], body["resource"], body["user"]) == ("live/cam1", "cam1", "carol")
        assert body["session"] == "carol-token-1"
        assert body["peer"] == "127.0.0.1:40000"

        async def reject_1401(request: web.Request) -> web.StreamResponse:
            return web.json_response({"accept": False, "code": 1401})

        server.handler = reject_1401
        assert (await decide(hook, "#!::r=a,m=publish")) == (False, 1401, "default", None)

        async def bare_403(request: web.Request) -> web.StreamResponse:
            return web.Response(status=403)

        server.handler = bare_403
        assert (await decide(hook, "#!::r=a,m=publish"))[:2] == (False, 1403)
    finally:
        await hook.aclose()


async def _garbage(request: web.Request) -> web.StreamResponse:
    return web.Response(text="<html>ok</html>", content_type="text/html")


async def _server_error(request: web.Request) -> web.StreamResponse:
    return web.json_response({"accept": True}, status=500)


async def _accept_without_bool(request: web.Request) -> web.StreamResponse:
    return web.json_response({"accept": "yes"})


async def _bad_passphrase(request: web.Request) -> web.StreamResponse:
    return web.json_response({"accept": True, "passphrase": "short"})


@pytest.mark.parametrize(
    "handler", [_garbage, _server_error, _accept_without_bool, _bad_passphrase]
)
async def test_http_hook_answering_nonsense_fails_closed_with_1403(
    hook_server: tuple[HookServer, str], handler: Handler
) -> None:
    server, url = hook_server
    server.handler = handler
    hook = HttpAuth(url, timeout_s=2, cache_s=5)
    try:
        with structlog.testing.capture_logs() as logs:
            assert (await decide(hook, "#!::r=a,m=publish,u=x,s=sekrit-token"))[:2] == (False, 1403)
        assert [e["event"] for e in logs] == ["auth.http_failed"]
        assert "sekrit-token" not in repr(logs)
        # A failure is not cached: the next caller asks again.
        await decide(hook, "#!::r=a,m=publish,u=x,s=sekrit-token")
        assert len(server.bodies) == 2
    finally:
        await hook.aclose()


async def test_http_hook_that_is_slow_fails_closed_within_its_timeout(
    hook_server: tuple[HookServer, str],
) -> None:
    server, url = hook_server
    server.handler = server.slow
    hook = HttpAuth(url, timeout_s=0.3, cache_s=5)
    try:
        started = time.monotonic()
        assert (await decide(hook, "#!::r=a,m=publish"))[:2] == (False, 1403)
        assert time.monotonic() - started < 1.5
    finally:
        await hook.aclose()


async def test_http_hook_that_is_down_fails_closed_with_1403() -> None:
    hook = HttpAuth("http://127.0.0.1:1/auth?key=url-token-x", timeout_s=2, cache_s=5)
    try:
        with structlog.testing.capture_logs() as logs:
            assert (await decide(hook, "#!::r=a,m=publish"))[:2] == (False, 1403)
        assert "url-token-x" not in repr(logs)
    finally:
        await hook.aclose()


async def test_http_answers_are_cached_per_request_for_cache_ms_and_the_cache_is_bounded(
    hook_server: tuple[HookServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url = hook_server
    hook = HttpAuth(url, timeout_s=2, cache_s=0.3)
    try:
        for _ in range(3):
            assert (await decide(hook, "#!::r=a,m=request,s=tok-1"))[0]
        assert len(server.bodies) == 1
        await decide(hook, "#!::r=a,m=request,s=tok-2")  # other credentials: asked
        await decide(hook, "#!::r=a,m=publish,s=tok-1")  # other action: asked
        assert len(server.bodies) == 3
        await asyncio.sleep(0.35)
        await decide(hook, "#!::r=a,m=request,s=tok-1")  # expired: asked again
        assert len(server.bodies) == 4
        assert "tok-1" not in repr(hook._cache)  # keyed by a hash
        monkeypatch.setattr(authconfig, "CACHE_MAX_ENTRIES", 2)
        for i in range(5):
            await decide(hook, f"#!::r=b{i},m=request")
        assert len(hook._cache) == 2
    finally:
        await hook.aclose()


async def test_users_table_first_then_the_http_hook_for_unknown_callers(
    hook_server: tuple[HookServer, str],
) -> None:
    server, url = hook_server
    hook = ConfiguredAuth(parse_users(USERS), HttpAuth(url, timeout_s=2, cache_s=0))
    try:
        assert (await decide(hook, f"publish:live/alice:alice:{ALICE_PW}"))[2] == "pro"
        # Known credentials, forbidden path: the table's 1403, the hook is not asked.
        assert (await decide(hook, f"publish:live/bob:alice:{ALICE_PW}"))[:2] == (False, 1403)
        assert server.bodies == []
        assert (await decide(hook, "#!::r=live/z,m=publish,u=zed,s=z-token"))[:3] == (
            True,
            0,
            "pro",
        )
        assert server.bodies[0]["user"] == "zed"
    finally:
        await hook.aclose()


# --- MoQ and serve ------------------------------------------------------------------------


def _connect(path: str, **query: str) -> ConnectRequest:
    return ConnectRequest(
        transport="webtransport",
        version=Version.LITE_03,
        path=path,
        query=query,
        peer="127.0.0.1:5",
    )


async def test_moq_connections_are_decided_by_the_same_table() -> None:
    hook = moq_auth(table(), "")
    assert (await hook(_connect("live/a"))).status == 401  # no token
    assert (await hook(_connect("live/a", jwt="wrong"))).status == 401
    viewer = await hook(_connect("live/a", jwt=TOKEN))
    assert (viewer.accept, viewer.read, viewer.publish, viewer.tier) == (
        True,
        True,
        False,
        "viewers",
    )
    assert viewer.root == "live/a"
    bob = parse_users([{"token": "bob-token-1", "paths": ["live/bob"], "actions": ["publish"]}])
    bob_hook = moq_auth(ConfiguredAuth(bob), "")
    assert (await bob_hook(_connect("live/other", token="bob-token-1"))).status == 403
    publisher = await bob_hook(_connect("live/bob", token="bob-token-1"))
    assert (publisher.accept, publisher.read, publisher.publish) == (True, False, True)


async def test_moq_refuses_with_403_when_the_hook_outlasts_the_listeners_bound(
    hook_server: tuple[HookServer, str],
) -> None:
    server, url = hook_server
    server.handler = server.slow
    http = HttpAuth(url, timeout_s=3, cache_s=0)
    try:
        decision = await moq_auth(ConfiguredAuth((), http), "")(_connect("live/a", jwt="x"))
        assert (decision.accept, decision.status) == (False, 403)
    finally:
        await http.aclose()


def test_serve_warns_when_listening_beyond_loopback_without_authorization(tmp_path: Path) -> None:
    def events(overrides: dict[str, str]) -> list[MutableMapping[str, Any]]:
        with structlog.testing.capture_logs() as logs:
            warn_if_open(load_config(None, overrides, environ={}))
        return [e for e in logs if e["event"] == "auth.open"]

    assert events({"srt": "127.0.0.1:9000", "moq": "[::1]:4443"}) == []
    [open_] = events({"srt": "0.0.0.0:9000", "moq": "off"})
    assert open_["log_level"] == "warning"
    assert open_["listeners"] == ["srt 0.0.0.0:9000"]
    assert "anyone" in open_["detail"]
    (tmp_path / "u.toml").write_text(_toml("users", USERS))
    assert events({"srt": "0.0.0.0:9000", "users": str(tmp_path / "u.toml")}) == []
    assert events({"srt": "0.0.0.0:9000", "auth_http_url": "http://127.0.0.1:1/a"}) == []


def test_server_config_carries_the_hook_and_outwaits_the_http_timeout() -> None:
    assert server_config(load_config(None, {}, environ={})).auth is None
    config = load_config(
        None, {"auth_http_url": "http://127.0.0.1:1/a", "auth_http_timeout_ms": "3000"}, environ={}
    )
    srt = server_config(config)
    assert isinstance(srt.auth, ConfiguredAuth)
    assert srt.auth_timeout_s > 3.0


def test_user_entry_repr_hides_secrets() -> None:
    entry = UserEntry(
        user="u", password="pw-secret-1", token="tk-secret-1", passphrase="pp-secret-12"
    )
    assert "secret" not in repr(entry)


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["--users", "/nonexistent/users.toml"], "users"),
        (["--auth-http-url", "not-a-url?token=cli-secret-1"], "auth_http_url"),
        (["--auth-http-timeout", "0"], "auth_http_timeout_ms"),
        (["--auth-cache", "soon"], "auth_cache_ms"),
    ],
)
def test_a_bad_auth_flag_is_one_line_naming_the_key_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], key: str
) -> None:
    from gateway.cli import main

    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"moqsrt serve: {key}: ")
    assert "cli-secret-1" not in err


async def test_entries_sharing_credentials_give_per_path_tiers_and_passphrases() -> None:
    users = parse_users(
        [
            {
                "user": "cam",
                "password": "cam-pw",
                "paths": ["live/a"],
                "passphrase": "key-for-path-a",
            },
            {"user": "cam", "password": "cam-pw", "paths": ["live/b"], "tier": "b-tier"},
        ]
    )
    hook = ConfiguredAuth(users)
    assert await decide(hook, "publish:live/a:cam:cam-pw") == (True, 0, "default", "key-for-path-a")
    assert await decide(hook, "publish:live/b:cam:cam-pw") == (True, 0, "b-tier", None)
    assert (await decide(hook, "publish:live/c:cam:cam-pw"))[:2] == (False, 1403)
