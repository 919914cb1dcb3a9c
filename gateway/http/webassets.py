"""The in-browser player's bundle, served at `GET /web/{file}` by the operator's HTTP listener.

`make deps` installs the MoQ project's web player (`@moq/watch`, pinned in
`web/package-lock.json`) into `web/node_modules` and bundles `web/src/player.js` into
`web/dist/player.js` (both git-ignored). A page plays broadcast `live/cam1` with

```html
<div class="moq-player" data-url="http://HOST:4443/" data-name="live/cam1"></div>
<script type="module" src="/web/player.js"></script>
```

`data-url` is the MoQ listener as `http://`: the player fetches the certificate's hash from
`/certificate.sha256` on that port (`gateway.moq.fingerprint`), then dials `https://` by
WebTransport. `add_web_routes(app, root)` adds the route; a bundle that was not built answers
404 and logs `web.not_built` (once per file) saying how to build it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import structlog
from aiohttp import web

__all__ = ["DEFAULT_WEB_ROOT", "add_web_routes"]

DEFAULT_WEB_ROOT: Final = Path(__file__).resolve().parents[2] / "web" / "dist"
"""Where `make deps` puts the bundle in a source checkout (`web/dist`)."""

_CONTENT_TYPES: Final = {".js": "text/javascript", ".map": "application/json"}
# One plain file name: no directories, no dot files, nothing to climb out of the root with.
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

_log = structlog.get_logger("moqsrt.http")


def add_web_routes(app: web.Application, root: Path = DEFAULT_WEB_ROOT) -> None:
    """Add `GET /web/{file}` to `app`, serving `.js` and `.map` files directly under `root`
    (read per request, so a rebuilt bundle is served without a restart). Anything else, or a
    file that is not there, is a 404."""
    warned: set[str] = set()

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["file"]
        content_type = _CONTENT_TYPES.get(Path(name).suffix)
        if content_type is None or not _NAME.fullmatch(name):
            raise web.HTTPNotFound(text="no such file\n")
        path = root / name
        if not path.is_file():
            if name not in warned:
                warned.add(name)
                _log.warning(
                    "web.not_built",
                    file=name,
                    root=str(root),
                    hint="the player is not built: run `make deps` (npm ci and the bundle)",
                )
            raise web.HTTPNotFound(text=f"{name} is not built: run `make deps`\n")
        return web.FileResponse(
            path, headers={"Content-Type": content_type, "Cache-Control": "no-cache"}
        )

    app.router.add_get("/web/{file}", asset)
