"""The operator's HTTP listener (aiohttp): the status page, `/metrics` and the JSON API.

`HttpService.bind(host, port, sources, token=...)` serves until `aclose()`:

- `GET /`: the status page (`gateway.http.page`), its assets under `/static/`, and
  `GET /status.json`, what the page polls;
- `GET /api/v1/broadcasts/{path}/thumbnail.jpg`: the latest keyframe of a live broadcast as a
  JPEG (`gateway.http.thumbnails`; 404 while there is none);
- `GET /metrics`: Prometheus text exposition (`gateway.http.metrics`), made at most once per
  `metrics_cache_s` (default 1 s): scrapers asking within that share one reading;
- `GET /api/v1/broadcasts`: live broadcasts, their catalog tracks, publisher, viewers per
  protocol, ingress counters and bit rate;
- `GET /api/v1/sessions`: live sessions and the records of recently ended ones;
- `DELETE /api/v1/sessions/{id}`: end a live session (204; 404 when none is live);
- `GET /api/v1/usage?since=CURSOR&limit=N`: usage records after a cursor, from the ledger
  (503 when no ledger is attached).

Bound to a loopback address the listener is open; bound anywhere else it needs a bearer token
(`Authorization: Bearer <token>`) on every route, and refuses to start without one. The page's
routes also take it as `?token=`, and need none with `public_page` (`page.page_allowed` has the
rule). The service owns its listener, its bit-rate sampler task and its thumbnail cache; the
sources belong to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Self

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.http import page
from gateway.http.metrics import LiveReading, metrics_registry
from gateway.http.sources import GatewaySources
from gateway.http.thumbnails import DEFAULT_REFRESH_S, Thumbnails

__all__ = [
    "DEFAULT_USAGE_LIMIT",
    "HTTP_TOKEN_ENV",
    "MAX_USAGE_LIMIT",
    "METRICS_CACHE_S",
    "HttpService",
    "TokenRequired",
    "http_token",
    "is_loopback",
]

HTTP_TOKEN_ENV: Final = "MOQSRT_HTTP_TOKEN"
"""Environment variable that may hold the HTTP bearer token (kept out of `ps` and files)."""

DEFAULT_USAGE_LIMIT: Final = 1000
"""Records per `/api/v1/usage` page unless `limit` says otherwise."""
MAX_USAGE_LIMIT: Final = 10_000
"""The most records one `/api/v1/usage` page returns."""
RATE_INTERVAL_S: Final = 1.0
"""How often the bit-rate sampler reads the ingress counters."""
RATE_WINDOW: Final = 5
"""Samples kept per path: `bitrate_bps` averages over the last `RATE_WINDOW - 1` intervals."""
METRICS_CACHE_S: Final = 1.0
"""How long one `/metrics` exposition is served again (seconds): a reading costs ~1-2 ms of CPU
(libsrt statistics of every live SRT session, prometheus_client's formatting), so several
scrapers (an HA pair of Prometheus, a dashboard) within a second pay for one."""

_log = structlog.get_logger("moqsrt.http")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TokenRequired(ValueError):
    """The HTTP listener would bind a non-loopback address without a bearer token."""


def http_token(configured: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The bearer token to require: `configured` (the `http_token` setting) or else
    `$MOQSRT_HTTP_TOKEN` (from `environ`, default `os.environ`); None when neither is set."""
    if configured:
        return configured
    return (os.environ if environ is None else environ).get(HTTP_TOKEN_ENV) or None


def is_loopback(host: str) -> bool:
    """True when `host` is a loopback address (127.0.0.0/8, ::1) or `localhost`."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


class HttpService:
    """The running HTTP listener; make one with `bind`, end it with `aclose()` (or `async
    with`)."""

    def __init__(
        self,
        runner: web.AppRunner,
        sources: GatewaySources,
        port: int,
        sampler: asyncio.Task[None],
        rates: dict[str, deque[tuple[float, int]]],
        thumbnails: Thumbnails | None,
    ) -> None:
        """Use `HttpService.bind`."""
        self._runner = runner
        self.sources = sources
        """What the routes read."""
        self.port = port
        """The bound TCP port."""
        self.thumbnails = thumbnails
        """The thumbnail cache (None: thumbnails are off)."""
        self._sampler = sampler
        self._rates = rates
        self._closed = False

    @classmethod
    async def bind(
        cls,
        host: str,
        port: int,
        sources: GatewaySources,
        *,
        token: str | None = None,
        path_labels: bool = False,
        rate_interval_s: float = RATE_INTERVAL_S,
        public_page: bool = False,
        thumbnail_interval_s: float = DEFAULT_REFRESH_S,
        metrics_cache_s: float = METRICS_CACHE_S,
        setup: Callable[[web.Application], None] | None = None,
    ) -> HttpService:
        """Listen on TCP `host:port` (port 0 picks one: `port`) and serve `sources`.

        `token`: the bearer token every request must carry (None or `""`: none; only allowed on a
        loopback `host`). `path_labels`: label metrics per broadcast path. `public_page`: the status
        page needs no token. `thumbnail_interval_s`: a broadcast's thumbnail is made (a keyframe
        decoded) at most this often, and the page is told to ask no more often; 0: none are made,
        the thumbnail route answers 404 and the page asks none. `metrics_cache_s`: how long a
        `/metrics` answer is served again (0: every scrape reads afresh). `setup` may add routes
        (e.g. the player bundle's) before the listener starts. Raises `TokenRequired` for a
        non-loopback `host` without a token, `OSError` when the address cannot be bound.
        """
        token = token or None
        cls.check_token(host, token)
        rates: dict[str, deque[tuple[float, int]]] = {}
        app = web.Application(middlewares=[_auth_middleware(token, public_page)] if token else [])
        if not thumbnail_interval_s >= 0:
            raise ValueError(f"thumbnail_interval_s must be >= 0, got {thumbnail_interval_s}")
        thumbs = (
            Thumbnails(sources.origin, sources.stats, refresh_s=thumbnail_interval_s)
            if thumbnail_interval_s > 0
            else None
        )
        routes = _Routes(sources, path_labels, rates, thumbs, host, metrics_cache_s)
        app.router.add_get("/", routes.index)
        app.router.add_get("/status.json", routes.status)
        app.router.add_get("/static/{name}", routes.static)
        app.router.add_get("/api/v1/broadcasts/{path:.+}/thumbnail.jpg", routes.thumbnail)
        app.router.add_get("/metrics", routes.metrics)
        app.router.add_get("/api/v1/broadcasts", routes.broadcasts)
        app.router.add_get("/api/v1/sessions", routes.sessions)
        app.router.add_delete("/api/v1/sessions/{session}", routes.kick)
        app.router.add_get("/api/v1/usage", routes.usage)
        if setup is not None:
            setup(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            if thumbs is not None:
                await thumbs.aclose()
            raise
        bound = next((a[1] for a in runner.addresses if isinstance(a, tuple) and len(a) >= 2), port)
        sampler = asyncio.create_task(_sample_rates(sources, rates, rate_interval_s, thumbs))
        _log.info(
            "http.listening",
            host=host,
            port=bound,
            token_required=token is not None,
            public_page=public_page,
        )
        return cls(runner, sources, int(bound), sampler, rates, thumbs)

    @staticmethod
    def check_token(host: str, token: str | None) -> None:
        """Raise `TokenRequired` when `host` is not loopback and `token` is empty."""
        if not token and not is_loopback(host):
            raise TokenRequired(
                f"the HTTP listener on {host} is not loopback-only: set http_token "
                f"(or {HTTP_TOKEN_ENV}) so that /metrics and the API require it"
            )

    async def aclose(self) -> None:
        """Stop the sampler and the listener (open requests get `aiohttp`'s shutdown grace).
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sampler
        await self._runner.cleanup()
        if self.thumbnails is not None:
            await self.thumbnails.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _auth_middleware(token: str, public_page: bool) -> Middleware:
    @web.middleware
    async def check_token(request: web.Request, handler: _Handler) -> web.StreamResponse:
        allowed = page.page_allowed(
            request.path,
            token=token,
            public_page=public_page,
            authorization=request.headers.get("Authorization"),
            query_token=request.query.get("token"),
        )
        if allowed:
            return await handler(request)
        challenge = {"WWW-Authenticate": 'Bearer realm="moqsrt"'}
        if request.path == "/":
            return web.Response(
                status=401,
                text=_TOKEN_PAGE,
                content_type="text/html",
                headers={**challenge, **_PAGE_HEADERS},
            )
        return _json_error(401, "a bearer token is required", **challenge)

    return check_token


_TOKEN_PAGE: Final = (
    "<!doctype html><meta charset=utf-8><title>moqsrt: token required</title>"
    "<p>This status page needs the server's HTTP token: open it as <code>/?token=...</code>"
    " (the <code>http_token</code> setting or <code>MOQSRT_HTTP_TOKEN</code>).</p>"
)
# The page's own answers: never cached (it may carry a token in its address), no referrer
# (its address may hold `?token=`), no sniffing, no framing, and a Content-Security-Policy
# (the page itself gets the one that lets it and its player run: `page.content_security_policy`).
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": page.PLAIN_CSP,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


async def _sample_rates(
    sources: GatewaySources,
    rates: dict[str, deque[tuple[float, int]]],
    interval_s: float,
    thumbnails: Thumbnails | None = None,
) -> None:
    """Read each live path's ingress bytes every `interval_s` (one snapshot per interval), and
    let `thumbnails` forget the broadcasts that ended."""
    while True:
        if thumbnails is not None:
            thumbnails.prune()
        now = time.monotonic()
        try:
            current = sources.ingress_bytes()
        except Exception as exc:  # noqa: BLE001  (a bad reading must not end the sampling)
            _log.warning("http.rate_sample_failed", error=repr(exc))
            current = {}
        for path in list(rates):
            if path not in current:
                del rates[path]
        for path, nbytes in current.items():
            rates.setdefault(path, deque(maxlen=RATE_WINDOW)).append((now, nbytes))
        await asyncio.sleep(interval_s)


def _bitrates(rates: dict[str, deque[tuple[float, int]]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for path, samples in rates.items():
        if len(samples) >= 2:
            (t0, b0), (t1, b1) = samples[0], samples[-1]
            if t1 > t0:
                out[path] = round(8 * (b1 - b0) / (t1 - t0), 1)
    return out


class _Routes:
    """The route handlers over one `GatewaySources`."""

    def __init__(
        self,
        sources: GatewaySources,
        path_labels: bool,
        rates: dict[str, deque[tuple[float, int]]],
        thumbnails: Thumbnails | None,
        bound_host: str,
        metrics_cache_s: float = METRICS_CACHE_S,
    ) -> None:
        self._sources = sources
        self._path_labels = path_labels
        self._rates = rates
        self._thumbnails = thumbnails
        self._metrics_cache_s = metrics_cache_s
        self._metrics_body: tuple[float, bytes] | None = None  # (monotonic time read, body)
        self._metrics_lock = asyncio.Lock()
        # What the page names when a request's Host header is unusable.
        self._fallback_host = (
            "127.0.0.1"
            if bound_host in ("", "0.0.0.0", "::")
            else f"[{bound_host}]"
            if ":" in bound_host
            else bound_host
        )

    def _status(self, host: str) -> dict[str, Any]:
        broadcasts = self._sources.broadcasts(_bitrates(self._rates))
        moq = page.moq_url(host, self._sources.moq_port)
        interval = 0.0 if self._thumbnails is None else self._thumbnails.refresh_s
        return page.status_view(broadcasts, moq=moq, now=time.time(), thumbnail_interval_s=interval)

    async def index(self, request: web.Request) -> web.Response:
        host = page.browser_host(request.host, self._fallback_host)
        sources = self._sources
        info = page.PageInfo(
            srt_port=sources.srt_port,
            latency_ms=sources.srt_latency_ms,
            encrypted=sources.srt_encrypted,
            moq_port=sources.moq_port,
            authorized=sources.authorized,
            prefix=sources.prefix,
        )
        body = page.render_index(info, host=host, status=self._status(host))
        csp = page.content_security_policy(host, sources.moq_port)
        headers = {**_PAGE_HEADERS, "Content-Security-Policy": csp}
        return web.Response(text=body, content_type="text/html", headers=headers)

    async def status(self, request: web.Request) -> web.Response:
        host = page.browser_host(request.host, self._fallback_host)
        return web.json_response(self._status(host), headers=_PAGE_HEADERS)

    async def static(self, request: web.Request) -> web.Response:
        found = page.static_file(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, kind = found
        return web.Response(
            body=body,
            content_type=kind,
            charset="utf-8",
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    async def thumbnail(self, request: web.Request) -> web.Response:
        if self._thumbnails is None:
            return _json_error(404, "no thumbnail: thumbnails are off on this gateway")
        jpeg = await self._thumbnails.jpeg(request.match_info["path"])
        if jpeg is None:
            return _json_error(
                404, "no thumbnail: the broadcast is not live or has no keyframe yet"
            )
        return web.Response(
            body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"}
        )

    async def metrics(self, request: web.Request) -> web.Response:
        async with self._metrics_lock:  # concurrent scrapers wait for one reading
            cached = self._metrics_body
            if cached is None or time.monotonic() - cached[0] >= self._metrics_cache_s:
                cached = self._metrics_body = (time.monotonic(), await self._read_metrics())
        return web.Response(body=cached[1], headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _read_metrics(self) -> bytes:
        # Loop-owned state is read here; the stats snapshot and the formatting (about 25 us
        # per (path, tier, role) entry, 40 us per sample) run on a thread, off the data path.
        live = LiveReading.read(self._sources)
        registry = metrics_registry(self._sources, path_labels=self._path_labels, live=live)
        return await asyncio.to_thread(generate_latest, registry)

    async def broadcasts(self, request: web.Request) -> web.Response:
        return web.json_response({"broadcasts": self._sources.broadcasts(_bitrates(self._rates))})

    async def sessions(self, request: web.Request) -> web.Response:
        now = time.time()
        live = [s.as_dict(now) for s in self._sources.live_sessions()]
        return web.json_response({"live": live, "recent": self._sources.recent()})

    async def kick(self, request: web.Request) -> web.Response:
        session = request.match_info["session"]
        if not self._sources.kick(session):
            return _json_error(404, "no such live session")
        _log.info("http.session_kicked", session=session)
        return web.Response(status=204)

    async def usage(self, request: web.Request) -> web.Response:
        reader = self._sources.usage
        if reader is None:
            return _json_error(503, "no usage ledger is attached to this gateway")
        try:
            since = int(request.query.get("since", "0"))
            limit = int(request.query.get("limit", str(DEFAULT_USAGE_LIMIT)))
        except ValueError:
            return _json_error(400, "since and limit must be integers")
        if since < 0 or not 1 <= limit <= MAX_USAGE_LIMIT:
            return _json_error(400, f"since >= 0 and 1 <= limit <= {MAX_USAGE_LIMIT}")
        records = [dict(r.as_dict()) for r in await reader.read_since(since, limit=limit)]
        cursor = records[-1].get("seq", since) if records else since
        return web.json_response({"records": records, "cursor": cursor})
