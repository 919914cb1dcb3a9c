"""The status page with a real model and fake servers: who may see it (the token, `?token=`,
`http_public_page`), what it says (this server's ports, the host the browser used, nothing
about who publishes), that stream names and Host headers cannot inject markup, and the
thumbnail route on a real fixture."""

from __future__ import annotations

import asyncio
import html
import io
import json
import re
from importlib import resources
from pathlib import Path

import aiohttp
import av
import pytest

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.http import HttpService
from gateway.http.page import (
    PageInfo,
    browser_host,
    moq_url,
    page_allowed,
    render_index,
    status_view,
    thumbnail_url,
)
from gateway.serve import status_page_url
from gateway.streamid import normalize_prefix, parse_stream_id
from model import BroadcastProducer
from mux import TsImporter
from tests.unit.gateway.test_http import FakeSrtSession, World, publish
from tests.unit.gateway.test_http import world as world  # the fixture, used by name

TOKEN = "page-token-0123456789"
FIXTURES = Path(__file__).resolve().parents[3] / "fixtures"
EVIL = 'live/</script><script>alert("x")</script><img src=x onerror=alert(1)>'


async def fetch(
    port: int, path: str, *, token: str | None = None, host: str | None = None
) -> tuple[int, str, bytes]:
    """(status, content type, body) of GET `path`, with a bearer token and Host if given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if host is not None:
        headers["Host"] = host
    async with (
        asyncio.timeout(10),
        aiohttp.ClientSession() as client,
        client.get(f"http://127.0.0.1:{port}{path}", headers=headers) as response,
    ):
        return response.status, response.content_type, await response.read()


@pytest.fixture
def page_world(world: World) -> World:
    world.sources.srt_port = 9123
    world.sources.srt_latency_ms = 200
    world.sources.moq_port = 4567
    return world


def config_json(page: str) -> dict[str, object]:
    """The JSON the page embeds for its script."""
    match = re.search(r'<script id="moqsrt-config" type="application/json">(.*?)</script>', page)
    assert match is not None
    return dict(json.loads(match.group(1)))


def test_the_host_the_browser_used_is_the_host_header_without_its_port() -> None:
    assert browser_host("gw.example:8080", "fb") == "gw.example"
    assert browser_host("gw.example", "fb") == "gw.example"
    assert browser_host("192.0.2.7:80", "fb") == "192.0.2.7"
    assert browser_host("[2001:db8::1]:8080", "fb") == "[2001:db8::1]"
    for bad in (None, "", '"><script>:80', "a b:80", "[nope]:1", "x/y"):
        assert browser_host(bad, "fb") == "fb", bad
    assert moq_url("[::1]", 4443) == "http://[::1]:4443/"
    assert moq_url("gw", None) is None


def test_the_page_rule_token_header_query_and_public_page() -> None:
    def allowed(
        path: str,
        *,
        token: str | None = TOKEN,
        public: bool = False,
        header: str | None = None,
        query: str | None = None,
    ) -> bool:
        return page_allowed(
            path, token=token, public_page=public, authorization=header, query_token=query
        )

    thumb = thumbnail_url("live/a")
    pages = ("/", "/status.json", thumb)
    api = ("/metrics", "/api/v1/broadcasts", "/api/v1/sessions", "/api/v1/usage")
    for path in (*pages, *api):
        assert allowed(path, token=None)  # no token configured: loopback, open
        assert not allowed(path)
        assert allowed(path, header=f"Bearer {TOKEN}")
        assert not allowed(path, header=f"Bearer {TOKEN}x")
        assert not allowed(path, query="wrong")
    for path in pages:
        assert allowed(path, query=TOKEN)  # a browser's page load
        assert allowed(path, public=True)
    for path in api:
        assert not allowed(path, query=TOKEN)  # the API takes the header only
        assert not allowed(path, public=True)  # and is never public
    for asset in ("/static/page.js", "/web/player.js"):
        assert allowed(asset)


def test_names_and_hosts_cannot_inject_markup_into_the_page() -> None:
    broadcasts = [{"path": EVIL, "catalog": None, "viewers": {"srt": 1, "moq": 0}}]
    status = status_view(broadcasts, moq=moq_url("gw", 4443), now=1.0, thumbnail_interval_s=30)
    info = PageInfo(srt_port=9000, latency_ms=120, encrypted=True, moq_port=4443)
    page = render_index(info, host='gw"><b>', status=status)
    assert "<script>alert" not in page
    assert "<img src=x" not in page
    assert '"><b>' not in page
    assert "gw&quot;&gt;&lt;b&gt;" in page  # the host, escaped, in the instructions
    assert page.count("</script>") == 3  # the config, page.js and player.js elements only
    embedded = config_json(page)
    assert embedded["status"] == json.loads(json.dumps(status))  # the name survives intact
    assert "YOUR_PASSPHRASE" in page  # an encrypted server says where the passphrase goes
    assert "u=USER,s=SECRET" not in page
    info = PageInfo(srt_port=9000, latency_ms=120, encrypted=False, moq_port=None, authorized=True)
    page = render_index(info, host="gw", status=status)
    assert "u=USER,s=SECRET" in page  # so does one that checks who publishes
    assert "YOUR_PASSPHRASE" not in page


def shown(page: str, element_id: str) -> str:
    """The text of the element `element_id` of the rendered page (no markup inside)."""
    match = re.search(rf'<(\w+) id="{element_id}"[^>]*>([^<]*)</\1>', page)
    assert match is not None, element_id
    return html.unescape(match.group(2))


@pytest.mark.parametrize(
    ("configured", "prefix", "resource"),
    [("", "", "live/test"), ("/acme/live/", "acme/live", "test"), ("live", "live", "test")],
)
async def test_the_instructions_publish_what_the_page_says_under_the_servers_prefix(
    page_world: World, configured: str, prefix: str, resource: str
) -> None:
    # What serve does with the SRT server's (normalized) prefix.
    page_world.sources.prefix = normalize_prefix(configured)
    async with await HttpService.bind("127.0.0.1", 0, page_world.sources) as http:
        page = (await fetch(http.port, "/", host="gw.example:8080"))[2].decode()
    listed = shown(page, "listed-path")
    assert listed == (f"{prefix}/{resource}" if prefix else resource)
    assert shown(page, "path-prefix") == (f"{prefix}/" if prefix else "")
    assert f'<input id="stream-path" value="{resource}"' in page
    assert config_json(page)["prefix"] == prefix
    for element, mode in (("ffmpeg-command", "publish"), ("obs-server", "publish")):
        url = re.search(r"srt://gw\.example:9123\?streamid=([^&']*)", shown(page, element))
        assert url is not None, element
        # What the SRT server makes of that stream id under its prefix is the listed path.
        request = parse_stream_id(url.group(1), configured)
        assert (request.mode, request.path) == (mode, listed)
    url = re.search(r"streamid=([^&']*)", shown(page, "play-command"))
    assert url is not None
    request = parse_stream_id(url.group(1), configured)
    assert (request.mode, request.path) == ("request", listed)


async def headers_of(port: int, path: str, host: str) -> tuple[int, dict[str, str]]:
    async with (
        asyncio.timeout(10),
        aiohttp.ClientSession() as client,
        client.get(f"http://127.0.0.1:{port}{path}", headers={"Host": host}) as response,
    ):
        return response.status, dict(response.headers)


def directives(policy: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *values = part.split()
        assert name not in out, name
        out[name] = values
    return out


async def test_the_page_has_a_content_security_policy_for_itself_and_its_moq_endpoint(
    page_world: World,
) -> None:
    async with await HttpService.bind("127.0.0.1", 0, page_world.sources) as http:
        status, headers = await headers_of(http.port, "/", "gw.example:8080")
        assert status == 200
        policy = directives(headers["Content-Security-Policy"])
        assert policy == {
            "default-src": ["'none'"],
            "script-src": ["'self'", "blob:"],  # the player's audio worklet is a blob URL
            "style-src": ["'self'"],
            "img-src": ["'self'", "blob:"],
            "connect-src": [
                "'self'",
                "http://gw.example:4567",  # the certificate hash, at the MoQ port
                "https://gw.example:4567",  # WebTransport
                "ws://gw.example:4567",  # the player's WebSocket fallback
            ],
            "worker-src": ["'none'"],
            "object-src": ["'none'"],
            "base-uri": ["'none'"],
            "form-action": ["'none'"],
            "frame-ancestors": ["'none'"],
        }
        assert headers["X-Frame-Options"] == "DENY"
        # An IPv6 literal cannot be named in a policy: the MoQ port on any host.
        _, headers = await headers_of(http.port, "/", "[::1]:8080")
        assert directives(headers["Content-Security-Policy"])["connect-src"] == [
            "'self'",
            "http://*:4567",
            "https://*:4567",
            "ws://*:4567",
        ]
        # Without MoQ, the page connects to this server only.
        page_world.sources.moq_port = None
        _, headers = await headers_of(http.port, "/", "gw.example:8080")
        assert directives(headers["Content-Security-Policy"])["connect-src"] == ["'self'"]
        # What runs nothing may load nothing.
        _, headers = await headers_of(http.port, "/status.json", "gw.example:8080")
        assert directives(headers["Content-Security-Policy"])["default-src"] == ["'none'"]
    async with await HttpService.bind("127.0.0.1", 0, page_world.sources, token=TOKEN) as http:
        status, headers = await headers_of(http.port, "/", "gw.example:8080")
        assert status == 401  # the token page
        policy = directives(headers["Content-Security-Policy"])
        assert policy["default-src"] == policy["frame-ancestors"] == ["'none'"]
    # The page runs no inline script and has no inline style, which the policy would block.
    index = static_index()
    assert "style=" not in index
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", index, re.S)
    assert scripts == [
        (' id="moqsrt-config" type="application/json"', "$config_json"),  # data, never run
        (' type="module" src="/static/page.js"', ""),
        (' type="module" src="/web/player.js"', ""),
    ]
    assert not re.search(r"\son[a-z]+=", index)  # no event handler attributes


def static_index() -> str:
    return (resources.files("gateway.http") / "static" / "index.html").read_text()


async def test_the_page_names_this_servers_ports_and_the_browsers_host(
    page_world: World,
) -> None:
    publish(page_world, "live/a", "pro", 3)
    page_world.srt.live.append(
        FakeSrtSession(session="v1", role="egress", live_path="live/a", peer=("10.9.8.7", 5))
    )
    async with await HttpService.bind("127.0.0.1", 0, page_world.sources) as http:
        status, kind, body = await fetch(http.port, "/", host="gw.example:8080")
        assert (status, kind) == (200, "text/html")
        page = body.decode()
        unescaped = html.unescape(page)
        assert "srt://gw.example:9123?streamid=#!::r=live/test,m=publish&latency=200000" in (
            unescaped
        )
        assert "YOUR_PASSPHRASE" not in page
        (listed,) = config_json(page)["status"]["broadcasts"]  # type: ignore[index]
        assert listed["path"] == "live/a"
        assert listed["video"] == {
            "codec": "avc3.64001f",
            "width": 320,
            "height": 240,
            "framerate": None,
        }
        assert listed["codecs"] == ["avc3.64001f", "mp4a.40.2"]
        assert listed["viewers"] == {"srt": 1, "moq": 0}
        assert listed["ingress"]["frames"] == 4  # the catalog and 3 video frames
        assert config_json(page)["status"]["moq_url"] == "http://gw.example:4567/"  # type: ignore[index]

        status, kind, body = await fetch(http.port, "/status.json", host="[::1]:8080")
        assert (status, kind) == (200, "application/json")
        data = json.loads(body)
        assert data["moq_url"] == "http://[::1]:4567/"
        assert data["broadcasts"][0]["thumbnail"] == "/api/v1/broadcasts/live/a/thumbnail.jpg"
        # The page is told how often the server makes a thumbnail: the default, 60 s.
        assert data["thumbnail_interval_s"] == 60
        assert config_json(page)["status"]["thumbnail_interval_s"] == 60  # type: ignore[index]
        # Who publishes or watches is the API's business, not the page's.
        for secret in ("pub-live-a", "10.9.8.7", "127.0.0.1:40000", '"peer"', '"session"'):
            assert secret not in body.decode(), secret

        status, kind, body = await fetch(http.port, "/static/page.js")
        assert (status, kind) == (200, "text/javascript")
        assert b"/status.json" in body
        assert (await fetch(http.port, "/static/page.css"))[:2] == (200, "text/css")
        assert (await fetch(http.port, "/static/index.html"))[0] == 404
        assert (await fetch(http.port, "/static/..%2Fpage.py"))[0] == 404


async def test_with_a_token_the_page_takes_it_as_query_or_header_the_api_as_header_only(
    page_world: World,
) -> None:
    async with await HttpService.bind("127.0.0.1", 0, page_world.sources, token=TOKEN) as http:
        status, kind, body = await fetch(http.port, "/")
        assert (status, kind) == (401, "text/html")
        assert TOKEN.encode() not in body
        assert (await fetch(http.port, f"/?token={TOKEN}"))[0] == 200
        assert (await fetch(http.port, "/?token=wrong-token-0123456789"))[0] == 401
        assert (await fetch(http.port, "/", token=TOKEN))[0] == 200
        assert (await fetch(http.port, "/status.json"))[0] == 401
        assert (await fetch(http.port, "/status.json", token=TOKEN))[0] == 200
        assert (await fetch(http.port, thumbnail_url("live/a")))[0] == 401
        assert (await fetch(http.port, thumbnail_url("live/a"), token=TOKEN))[0] == 404
        assert (await fetch(http.port, f"/api/v1/broadcasts?token={TOKEN}"))[0] == 401
        assert (await fetch(http.port, f"/metrics?token={TOKEN}"))[0] == 401
        assert (await fetch(http.port, "/static/page.js"))[0] == 200  # code, no data


async def test_a_public_page_needs_no_token_while_the_api_and_metrics_still_do(
    page_world: World,
) -> None:
    async with await HttpService.bind(
        "127.0.0.1", 0, page_world.sources, token=TOKEN, public_page=True
    ) as http:
        assert (await fetch(http.port, "/"))[0] == 200
        assert (await fetch(http.port, "/status.json"))[0] == 200
        assert (await fetch(http.port, thumbnail_url("live/none")))[0] == 404  # not 401
        for path in ("/metrics", "/api/v1/broadcasts", "/api/v1/sessions", "/api/v1/usage"):
            assert (await fetch(http.port, path))[0] == 401, path
            assert (await fetch(http.port, f"{path}?token={TOKEN}"))[0] == 401, path


async def test_the_thumbnail_route_serves_a_jpeg_of_a_live_fixture_even_with_an_odd_name(
    page_world: World,
) -> None:
    path = "live/a b<c>%d"
    broadcast = BroadcastProducer()
    page_world.origin.publish(path, broadcast)
    importer = TsImporter(broadcast)
    importer.feed((FIXTURES / "h264_aac.ts").read_bytes())
    try:
        async with await HttpService.bind(
            "127.0.0.1", 0, page_world.sources, rate_interval_s=0.05
        ) as http:
            status, kind, body = await fetch(http.port, thumbnail_url(path))
            assert (status, kind) == (200, "image/jpeg")
            with av.open(io.BytesIO(body), mode="r") as container:
                frame = next(container.decode(video=0))
            assert (frame.width, frame.height) == (320, 180)
            assert (await fetch(http.port, thumbnail_url("live/other")))[0] == 404
            assert (await fetch(http.port, "/api/v1/broadcasts/../x/thumbnail.jpg"))[0] == 404
            # The page's reader is the gateway's own: metered in tier internal, not billed.
            (internal,) = [e for e in page_world.stats.snapshot() if e.role == "egress"]
            assert (internal.tier, internal.sessions, internal.sessions_closed) == (
                "internal",
                1,
                0,
            )
            # The broadcast ends and nobody asks again: its reader is let go all the same.
            importer.finish()
            assert http.thumbnails is not None
            async with asyncio.timeout(5):
                while len(http.thumbnails):  # noqa: ASYNC110  (no event to wait on)
                    await asyncio.sleep(0.02)
            (internal,) = [e for e in page_world.stats.snapshot() if e.role == "egress"]
            assert internal.sessions_closed == 1
    finally:
        importer.finish()


async def test_the_page_is_told_the_configured_thumbnail_interval(page_world: World) -> None:
    publish(page_world, "live/a", "pro", 3)
    async with await HttpService.bind(
        "127.0.0.1", 0, page_world.sources, thumbnail_interval_s=5
    ) as http:
        assert http.thumbnails is not None
        assert http.thumbnails.refresh_s == 5
        embedded = config_json((await fetch(http.port, "/"))[2].decode())["status"]
        assert embedded["thumbnail_interval_s"] == 5  # type: ignore[index]
        data = json.loads((await fetch(http.port, "/status.json"))[2])
        assert data["thumbnail_interval_s"] == 5
        assert data["broadcasts"][0]["thumbnail"] == thumbnail_url("live/a")
    with pytest.raises(ValueError, match="thumbnail_interval_s"):
        await HttpService.bind("127.0.0.1", 0, page_world.sources, thumbnail_interval_s=-1)


async def test_thumbnails_off_decode_nothing_answer_404_and_the_page_is_told_0(
    page_world: World,
) -> None:
    path = "live/off"
    broadcast = BroadcastProducer()
    page_world.origin.publish(path, broadcast)
    importer = TsImporter(broadcast)  # a decodable keyframe is there to be taken
    importer.feed((FIXTURES / "h264_aac.ts").read_bytes())
    try:
        async with await HttpService.bind(
            "127.0.0.1", 0, page_world.sources, thumbnail_interval_s=0
        ) as http:
            assert http.thumbnails is None  # no cache, no decoder thread
            status, kind, body = await fetch(http.port, thumbnail_url(path))
            assert (status, kind) == (404, "application/json")
            assert "thumbnails are off" in json.loads(body)["error"]
            data = json.loads((await fetch(http.port, "/status.json"))[2])
            assert data["thumbnail_interval_s"] == 0
            (listed,) = data["broadcasts"]
            assert listed["path"] == path
            assert listed["thumbnail"] is None  # the page shows and asks none
            embedded = config_json((await fetch(http.port, "/"))[2].decode())["status"]
            assert embedded["thumbnail_interval_s"] == 0  # type: ignore[index]
            assert embedded["broadcasts"][0]["thumbnail"] is None  # type: ignore[index]
            # Nothing read the broadcast for a thumbnail: no internal egress at all.
            assert [e for e in page_world.stats.snapshot() if e.role == "egress"] == []
    finally:
        importer.finish()


@pytest.mark.parametrize(("given", "expected"), [(None, 60.0), ("0", 0.0), ("off", 0.0), ("7", 7)])
async def test_serve_hands_the_thumbnail_setting_to_the_http_service(
    page_world: World, given: str | None, expected: float
) -> None:
    from gateway.serve import _bind_http

    overrides = {"http": "127.0.0.1:0", "http_thumbnail_interval_s": given}
    config = load_config(None, overrides, environ={})
    http = await _bind_http(config, page_world.sources)
    async with http:
        refresh = 0.0 if http.thumbnails is None else http.thumbnails.refresh_s
        assert refresh == expected
        data = json.loads((await fetch(http.port, "/status.json"))[2])
        assert data["thumbnail_interval_s"] == expected


def test_http_public_page_is_a_validated_setting(tmp_path: Path) -> None:
    assert GatewayConfig().http_public_page is False
    assert load_config(None, {"http_public_page": "on"}).http_public_page is True
    file = tmp_path / "c.toml"
    file.write_text("http_public_page = true\n")
    assert load_config(file).http_public_page is True
    with pytest.raises(ConfigError, match="http_public_page"):
        load_config(None, {"http_public_page": "maybe"})
    file.write_text('http_public_page = "yes please"\n')
    with pytest.raises(ConfigError, match="http_public_page"):
        load_config(file)


def test_serve_announces_the_page_address() -> None:
    assert status_page_url("0.0.0.0", 8080) == "http://127.0.0.1:8080/"
    assert status_page_url("127.0.0.1", 18080) == "http://127.0.0.1:18080/"
    assert status_page_url("::1", 8080) == "http://[::1]:8080/"
