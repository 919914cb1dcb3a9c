"""The in-browser player end to end: ffmpeg publishes the fixture over SRT; headless Chromium
(Debian's `chromium`, driven by playwright) opens a page holding a `div.moq-player`, and the
MoQ project's own web player (`@moq/watch`, bundled by `make deps` into `web/dist/player.js`,
served by `gateway.http.webassets`) plays the broadcast over WebTransport from the gateway's
MoQ listener, pinning its self-signed certificate through `/certificate.sha256`.

What is checked comes from the browser, not from the gateway: the player's own state (its
connection and broadcast status, video frames fed to its WebCodecs decoder, decoded frames
painted on the canvas, the decoded picture size against PyAV's view of the fixture) and the
canvas read back as pixels. The gateway's egress record for that viewer must then cover at
least what the player counted, and at most what the fixture holds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from gateway.http.webassets import DEFAULT_WEB_ROOT, add_web_routes
from gateway.moq.record import MoqSessionRecord
from tests.integration.conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    FIXTURE,
    HOST,
    Procs,
    ffmpeg_publish_argv,
    run_gateway,
)
from tests.integration.moq_helpers import run_moq
from tests.media import expected_counts

# Chromium decoding video takes a core: never two browser tests (or other CPU-heavy ones) at once.
pytestmark = pytest.mark.xdist_group("cpu_heavy")

PATH = "live/cam1"

# The player's state (web/src/player.js) and the canvas read back: a copy drawn into a fresh 2D
# canvas (so it does not matter which context the player renders with), then the mean and
# variance of the pixels' luma, sampled on a grid.
STATE_JS = """() => window.moqPlayers.map((p) => ({
    connection: p.connection, broadcast: p.broadcast, received: p.received,
    rendered: p.rendered, bytes: p.bytes, audioBytes: p.audioBytes,
    width: p.width, height: p.height,
}))[0]"""
CANVAS_JS = """() => {
    const source = window.moqPlayers[0].canvas;
    const w = source.width, h = source.height;
    if (!w || !h) return { width: w, height: h, mean: 0, variance: 0 };
    const copy = document.createElement("canvas");
    copy.width = w;
    copy.height = h;
    const ctx = copy.getContext("2d");
    ctx.drawImage(source, 0, 0);
    const data = ctx.getImageData(0, 0, w, h).data;
    let n = 0, sum = 0, squares = 0;
    for (let y = 0; y < h; y += 4) {
        for (let x = 0; x < w; x += 4) {
            const i = (y * w + x) * 4;
            const luma = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
            n += 1; sum += luma; squares += luma * luma;
        }
    }
    const mean = sum / n;
    return { width: w, height: h, mean, variance: squares / n - mean * mean };
}"""


@contextlib.asynccontextmanager
async def serve_page(moq_port: int) -> AsyncIterator[str]:
    """A minimal page with one player placeholder, and the bundle at /web/, on a free port of
    127.0.0.1 (another origin than the MoQ listener, as the status page is)."""
    html = (
        "<!doctype html><html><head><meta charset='utf-8'><title>player</title></head><body>"
        f'<div class="moq-player" data-url="http://{HOST}:{moq_port}/" data-name="{PATH}"></div>'
        '<script type="module" src="/web/player.js"></script></body></html>'
    )

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    add_web_routes(app, DEFAULT_WEB_ROOT)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield f"http://{HOST}:{port}/"
    finally:
        await runner.cleanup()


async def _state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = await page.evaluate(STATE_JS)
    return state


async def _canvas(page: Page) -> dict[str, float]:
    canvas: dict[str, float] = await page.evaluate(CANVAS_JS)
    return canvas


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def test_chromium_plays_an_srt_published_broadcast_with_moq_watch(procs: Procs) -> None:
    bundle = DEFAULT_WEB_ROOT / "player.js"
    assert bundle.is_file(), f"{bundle} is not built: run `make deps`"
    expected = expected_counts(FIXTURE)
    (video,) = [c for c in expected.values() if c.kind == "video"]
    published_frames = sum(c.frames for c in expected.values())

    console: list[str] = []
    async with (
        run_gateway() as gw,
        run_moq(gw.origin, gw.stats) as mq,
        serve_page(mq.port) as url,
        chromium() as browser,
    ):
        page = await browser.new_page()
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        try:
            await page.goto(url, timeout=10_000)
            # The player connects (fingerprint fetched, WebTransport up) before anything is
            # live, then finds the broadcast through the announcement when ffmpeg publishes.
            await page.wait_for_function(
                "window.moqPlayers?.[0]?.connection === 'connected'", timeout=10_000
            )
            procs.start("ffmpeg-pub", ffmpeg_publish_argv(gw.port, f"#!::r={PATH},m=publish"))
            await page.wait_for_function(
                "window.moqPlayers[0].broadcast === 'live' && window.moqPlayers[0].rendered >= 10",
                timeout=15_000,
            )
            first, first_canvas = await _state(page), await _canvas(page)
            await asyncio.sleep(1.0)
            second, second_canvas = await _state(page), await _canvas(page)
        except Exception as exc:
            exc.add_note("browser console:\n" + "\n".join(console[-60:]))
            raise
        finally:
            await page.close()  # ends the WebTransport session: the gateway's record follows

        async with asyncio.timeout(10):
            while not [r for r in mq.records if r.transport == "webtransport"]:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        (record,) = [r for r in mq.records if r.transport == "webtransport"]
        egress = [e for e in gw.stats.snapshot() if e.role == "egress" and e.path == PATH]

    # The player's own state: connected, live, decoding and painting more frames as time goes.
    assert first["connection"] == second["connection"] == "connected"
    assert second["broadcast"] == "live"
    assert (second["width"], second["height"]) == (video.width, video.height)
    assert second["rendered"] > first["rendered"] >= 10
    assert second["received"] > first["received"] >= first["rendered"] > 0
    assert second["audioBytes"] == 0  # muted: no audio fetched (nor billed)
    # The canvas holds the picture: its size, and pixels that are not one flat colour.
    for canvas in (first_canvas, second_canvas):
        assert (canvas["width"], canvas["height"]) == (video.width, video.height)
        assert canvas["variance"] > 100.0, canvas
    assert first_canvas != second_canvas  # and the picture moves

    # The gateway metered one MoQ egress viewer for it: at least what the player received
    # (plus the catalog frame), never more than the fixture holds.
    assert isinstance(record, MoqSessionRecord)
    assert record.role == "egress"
    assert record.version in ("moq-lite-03", "moq-lite-04")
    assert record.subscriptions >= 2  # the catalog and the video track
    assert second["received"] + 1 <= record.frames <= published_frames + 1
    assert second["bytes"] < record.bytes
    assert [b.path for b in record.broadcasts] == [PATH]
    assert sum(e.frames for e in egress) == record.frames  # the stats saw the same viewer
