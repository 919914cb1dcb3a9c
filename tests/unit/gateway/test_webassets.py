"""`GET /web/{file}`: the player's bundle from its directory, 404 (logged once) when it was not
built, nothing outside that directory and nothing but `.js`/`.map`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import structlog
from aiohttp import web

from gateway.http.webassets import add_web_routes


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The route over `tmp_path/dist` on a free loopback port: (base URL, directory)."""
    root = tmp_path / "dist"
    app = web.Application()
    add_web_routes(app, root)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield f"http://127.0.0.1:{port}", root
    finally:
        await runner.cleanup()


async def get(url: str) -> tuple[int, str, bytes]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
        http.get(url) as response,
    ):
        return response.status, response.content_type, await response.read()


async def test_the_bundle_is_served_as_javascript(served: tuple[str, Path]) -> None:
    base, root = served
    root.mkdir()
    (root / "player.js").write_text("export const x = 1;\n")
    (root / "player.js.map").write_text("{}")
    assert await get(f"{base}/web/player.js") == (200, "text/javascript", b"export const x = 1;\n")
    assert (await get(f"{base}/web/player.js.map"))[:2] == (200, "application/json")
    # Rebuilt while serving: the new bundle, no restart.
    (root / "player.js").write_text("export const x = 2;\n")
    assert (await get(f"{base}/web/player.js"))[2] == b"export const x = 2;\n"


async def test_an_unbuilt_bundle_is_a_404_that_says_how_to_build_it(
    served: tuple[str, Path],
) -> None:
    base, _ = served
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            status, _, body = await get(f"{base}/web/player.js")
            assert status == 404
            assert b"make deps" in body
    (warning,) = [e for e in logs if e["event"] == "web.not_built"]  # logged once
    assert warning["file"] == "player.js"
    assert "make deps" in warning["hint"]


async def test_nothing_but_bundle_files_in_the_directory(
    served: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = served
    root.mkdir()
    (root / "notes.txt").write_text("x")
    (root / ".hidden.js").write_text("x")
    (tmp_path / "secret.js").write_text("x")
    for name in ("notes.txt", ".hidden.js", "..%2Fsecret.js", "%2E%2E%2Fsecret.js"):
        assert (await get(f"{base}/web/{name}"))[0] == 404, name
    assert (await get(f"{base}/web/../secret.js"))[0] == 404
