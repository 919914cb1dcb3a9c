"""`GET /certificate.sha256` over plain HTTP on TCP, at the MoQ listener's port number.

Browsers pin a self-signed WebTransport server by the SHA-256 of its certificate
(`serverCertificateHashes`). The MoQ project's web player (`@moq/watch`, through `@moq/net`),
given an `http://host:port/` URL, first fetches `http://host:port/certificate.sha256` (TCP, the
same port number as the UDP listener), pins the hex digest it reads, then dials
`https://host:port/` by WebTransport; moq-rs clients do the same for `http://` URLs. This
endpoint answers that request, with `Access-Control-Allow-Origin: *` since the page that plays
the stream is served from another origin (the operator's HTTP port).

The digest is public (any TLS client sees the certificate); the endpoint serves nothing else
(404) and reads the digest on every request, so a renewed certificate is served at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Self

import structlog
from aiohttp import web

__all__ = ["FINGERPRINT_PATH", "FingerprintEndpoint"]

FINGERPRINT_PATH: Final = "/certificate.sha256"
"""The path `@moq/net` and moq-rs clients fetch."""

_log = structlog.get_logger("moqsrt.moq")


class FingerprintEndpoint:
    """A TCP listener answering `GET /certificate.sha256` with `fingerprint()` (lowercase hex,
    no newline). Made by `start`; owns its listener until `aclose()`."""

    def __init__(self, runner: web.AppRunner, site: web.TCPSite) -> None:
        self._runner = runner
        self._site = site

    @classmethod
    async def start(cls, host: str, port: int, fingerprint: Callable[[], str]) -> Self:
        """Listen on TCP `host:port` (port 0 picks one: `port`). `fingerprint` is called per
        request (cheap: the certificate's digest). Raises `OSError` when the address cannot be
        bound."""

        async def answer(request: web.Request) -> web.Response:
            return web.Response(
                text=fingerprint(),
                content_type="text/plain",
                headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "no-store"},
            )

        app = web.Application()
        app.router.add_get(FINGERPRINT_PATH, answer)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        _log.info("moq.fingerprint_endpoint", host=host, port=port, path=FINGERPRINT_PATH)
        return cls(runner, site)

    @property
    def port(self) -> int:
        """The bound TCP port."""
        server = self._site._server
        assert server is not None
        sockets = getattr(server, "sockets", None)
        assert sockets
        return int(sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        """Stop listening and close open HTTP connections (idempotent)."""
        await self._runner.cleanup()
