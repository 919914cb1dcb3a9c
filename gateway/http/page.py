"""The status page at `/`: what it shows, who may see it, and how it is rendered.

The HTML, CSS and JavaScript are package data (`gateway/http/static/`). `render_index` fills
`index.html` with this server's publishing instructions (SRT port and latency, the host the browser
used) and the first status (as JSON in a `<script type="application/json">`), every value escaped;
`page.js` draws the broadcasts from it, then polls `/status.json` every five seconds while the tab
is visible. Stream names are user input: the script only ever puts them in text nodes and
attributes, never in markup.

`status_view` is that JSON: the API's broadcasts (`GatewaySources.broadcasts`) without who
publishes (session id, peer address, user), plus the codecs, picture size, a thumbnail URL,
the MoQ URL an in-browser player dials, and `thumbnail_interval_s`, the server's thumbnail
interval (`http_thumbnail_interval_s`; 0: off): the page asks a broadcast's thumbnail no more
often than that, and none while its tab is hidden (nor `/status.json`).

Who may see it (`page_allowed`): with no token configured, anyone who reaches the listener
(which is then loopback-only); with one, the page, `/status.json` and thumbnails need it, as
`Authorization: Bearer` or `?token=` (a browser cannot put a header on a page load; the page's
script then sends it as the header and takes it out of the address bar), unless the page is
public (`http_public_page`). The page's static assets (`/static/`, the player bundle at `/web/`)
are the same bytes in every installation and carry no data: they are always served.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Final
from urllib.parse import quote

from mux.catalog import Catalog

__all__ = [
    "ASSET_PREFIXES",
    "STATIC_FILES",
    "PageInfo",
    "browser_host",
    "content_security_policy",
    "is_page_path",
    "moq_url",
    "page_allowed",
    "render_index",
    "static_file",
    "status_view",
    "thumbnail_url",
]

STATIC_FILES: Final = {
    "page.js": "text/javascript",
    "page.css": "text/css",
}
"""The files served under `/static/` (name -> content type); nothing else is."""
ASSET_PREFIXES: Final = ("/static/", "/web/")
"""URL prefixes of the page's code (its own and the MoQ player bundle): never behind the token."""
THUMBNAIL_SUFFIX: Final = "/thumbnail.jpg"
BROADCASTS_PREFIX: Final = "/api/v1/broadcasts/"
DEFAULT_RESOURCE: Final = "live/test"
"""The path the publishing instructions name until another is typed in, without a prefix; under
one, its last segment (prefix `live`: the broadcast `live/test`, not `live/live/test`)."""

_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\.?")


@dataclass(frozen=True, slots=True, kw_only=True)
class PageInfo:
    """What the page says about this server: `srt_port` (None: no SRT instructions),
    `latency_ms` (the SRT latency offered), `encrypted` (publishers need a passphrase),
    `moq_port` (the MoQ UDP port the players dial; None: no players), `authorized` (callers
    must name themselves: a users table or an authorization hook is configured), `prefix`
    (the SRT server's path prefix, normalized, `""`: none: a stream id names the path under
    it, so `r=live/test` publishes the broadcast listed as `PREFIX/live/test`)."""

    srt_port: int | None
    latency_ms: int
    encrypted: bool
    moq_port: int | None
    authorized: bool = False
    prefix: str = ""


def is_page_path(path: str) -> bool:
    """True for the routes the page itself reads: `/`, `/status.json` and thumbnails."""
    return path in ("/", "/status.json") or (
        path.startswith(BROADCASTS_PREFIX) and path.endswith(THUMBNAIL_SUFFIX)
    )


def page_allowed(
    path: str,
    *,
    token: str | None,
    public_page: bool,
    authorization: str | None,
    query_token: str | None,
) -> bool:
    """Whether a request for `path` may be answered: always without a `token`, and for the
    page's assets; for the page's routes with `public_page`, or with the token as a bearer
    header or `?token=` (`query_token`); for every other route (API, `/metrics`) with the
    bearer header only. Compared in constant time."""
    if not token or path.startswith(ASSET_PREFIXES):
        return True
    page = is_page_path(path)
    if page and public_page:
        return True
    expected = f"Bearer {token}".encode()
    if authorization is not None and hmac.compare_digest(authorization.encode(), expected):
        return True
    return (
        page
        and query_token is not None
        and hmac.compare_digest(query_token.encode(), token.encode())
    )


def browser_host(host_header: str | None, fallback: str) -> str:
    """The host name or address the browser used (the `Host` header without its port), or
    `fallback` when the header is missing or is no host name or IP address. An IPv6 address
    comes back bracketed (`[::1]`), ready to put in a URL."""
    value = (host_header or "").strip()
    if value.startswith("["):
        inner, sep, _ = value[1:].partition("]")
        try:
            return f"[{ipaddress.IPv6Address(inner)}]" if sep else fallback
        except ValueError:
            return fallback
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        host = value
    if host and _HOST_NAME.fullmatch(host):
        return host
    return fallback


def moq_url(host: str, moq_port: int | None) -> str | None:
    """The URL an in-browser player dials: `http://HOST:PORT/` (plain http: the player fetches
    the certificate's hash there, then dials https/WebTransport); None without MoQ."""
    return None if moq_port is None else f"http://{host}:{moq_port}/"


PLAIN_CSP: Final = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
"""The Content-Security-Policy of the page's answers that run nothing (`/status.json`, the
token page): nothing may load, nothing may frame them."""


def content_security_policy(host: str, moq_port: int | None) -> str:
    """The page's Content-Security-Policy for a browser that reached it as `host` (from
    `browser_host`), allowing what the page and its player need and nothing else.

    Scripts and style sheets only from this server (no inline script runs: the embedded
    status is `type="application/json"`; no inline style), plus `blob:` scripts: the player
    (@moq/watch) loads its audio worklet from a blob URL it makes. Images from this server and
    `blob:` (the thumbnails the page fetches). Connections to this server (`/status.json`,
    thumbnails) and, with MoQ (`moq_port`), to the MoQ endpoint the player dials at the same
    host: `http://` for the certificate's hash, `https://` for WebTransport, `ws://` for the
    WebSocket it falls back on when WebTransport is slow to connect. No workers, frames,
    plugins, fonts, media elements or forms; no `<base>`; never framed. An IPv6 `host` cannot
    be named in a policy: any host on the MoQ port is allowed then."""
    connect = ["'self'"]
    if moq_port is not None:
        moq_host = "*" if host.startswith("[") else host
        connect += [f"{scheme}://{moq_host}:{moq_port}" for scheme in ("http", "https", "ws")]
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self' blob:",
            "style-src 'self'",
            "img-src 'self' blob:",
            f"connect-src {' '.join(connect)}",
            "worker-src 'none'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


def thumbnail_url(path: str) -> str:
    """The URL of a broadcast's thumbnail (each path segment percent-encoded)."""
    return BROADCASTS_PREFIX + quote(path, safe="/") + THUMBNAIL_SUFFIX


def _media(catalog: Mapping[str, Any] | None) -> dict[str, Any]:
    """Codecs and the first video rendition's picture size and frame rate, from a catalog."""
    if catalog is None:
        return {"codecs": [], "video": None, "audio": None}
    parsed = Catalog.from_dict(catalog)
    codecs = [parsed.video[n].codec for n in sorted(parsed.video)]
    codecs += [parsed.audio[n].codec for n in sorted(parsed.audio)]
    video = audio = None
    if parsed.video:
        v = parsed.video[min(parsed.video)]
        video = {
            "codec": v.codec,
            "width": v.coded_width,
            "height": v.coded_height,
            "framerate": v.framerate,
        }
    if parsed.audio:
        a = parsed.audio[min(parsed.audio)]
        audio = {"codec": a.codec, "sample_rate": a.sample_rate, "channels": a.channels}
    return {"codecs": codecs, "video": video, "audio": audio}


def status_view(
    broadcasts: Sequence[Mapping[str, Any]],
    *,
    moq: str | None,
    now: float,
    thumbnail_interval_s: float,
) -> dict[str, Any]:
    """The page's JSON (`/status.json` and the first render): for each broadcast of the API's
    list, its path, codecs, picture size, bit rate, viewers per protocol, usage so far, how
    long it has been published and its thumbnail URL (None when thumbnails are off); `moq` is
    the players' URL; `now` (Unix seconds) is when it was read; `thumbnail_interval_s` is how
    often the server makes a broadcast's thumbnail at most, so how often the page asks for one
    (0: thumbnails are off, the page asks none). Nothing about who publishes."""
    thumbnails = thumbnail_interval_s > 0
    out = []
    for b in broadcasts:
        publisher = b.get("publisher") or {}
        out.append(
            {
                "path": b["path"],
                **_media(b.get("catalog")),
                "bitrate_bps": b.get("bitrate_bps"),
                "viewers": dict(b.get("viewers") or {}),
                "ingress": b.get("ingress"),
                "egress": b.get("egress"),
                "protocol": publisher.get("protocol"),
                "duration_s": publisher.get("duration_s"),
                "thumbnail": thumbnail_url(b["path"]) if thumbnails else None,
            }
        )
    return {
        "broadcasts": out,
        "moq_url": moq,
        "time": now,
        "thumbnail_interval_s": thumbnail_interval_s if thumbnails else 0,
    }


def static_file(name: str) -> tuple[bytes, str] | None:
    """The bytes and content type of the page asset `name` (one of `STATIC_FILES`), or None."""
    kind = STATIC_FILES.get(name)
    if kind is None:
        return None
    return _static_bytes(name), kind


@cache  # the package's own files, a few kB each: read once, not per request
def _static_bytes(name: str) -> bytes:
    return (resources.files(__package__) / "static" / name).read_bytes()


@cache
def _index_template() -> string.Template:
    return string.Template(_static_bytes("index.html").decode("utf-8"))


def _script_json(value: object) -> str:
    """JSON that cannot end its `<script>` element nor open a comment inside it."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_index(info: PageInfo, *, host: str, status: Mapping[str, Any]) -> str:
    """The page's HTML for a browser that reached this server as `host` (from
    `browser_host`), with the first `status` (from `status_view`). Every value is escaped.

    The instructions publish `DEFAULT_RESOURCE` (the path field's default; `test` under a
    prefix): the stream id's `r=` names it as is, the server puts it under its `prefix`, and
    the page says the broadcast is listed (and played) as `PREFIX/test`."""
    template = _index_template()
    latency_us = info.latency_ms * 1000
    secret = "&passphrase=YOUR_PASSPHRASE&pbkeylen=16" if info.encrypted else ""
    resource = DEFAULT_RESOURCE.rpartition("/")[2] if info.prefix else DEFAULT_RESOURCE
    if info.srt_port is not None:
        base = f"srt://{host}:{info.srt_port}"
        publish = f"{base}?streamid=#!::r={resource},m=publish&latency={latency_us}{secret}"
        play = f"{base}?streamid=#!::r={resource},m=request&latency={latency_us}{secret}"
    else:
        publish = play = "(SRT is not served)"
    config = {
        "status": status,
        "srt": None if info.srt_port is None else {"host": host, "port": info.srt_port},
        "latency_us": latency_us,
        "encrypted": info.encrypted,
        "prefix": info.prefix,
        "resource": resource,
    }
    values = {
        "resource": resource,
        "path_prefix": f"{info.prefix}/" if info.prefix else "",
        "listed_path": f"{info.prefix}/{resource}" if info.prefix else resource,
        "publish_url": publish,
        "play_url": play,
        "host": host,
        "srt_port": "-" if info.srt_port is None else str(info.srt_port),
        "latency_ms": str(info.latency_ms),
        "latency_us": str(latency_us),
        "passphrase_note": " ".join(
            note
            for note, shown in (
                (
                    "This server requires an SRT passphrase: replace YOUR_PASSPHRASE.",
                    info.encrypted,
                ),
                (
                    "This server checks who publishes and watches: add your user and secret "
                    f"to the stream id (#!::r={resource},u=USER,s=SECRET,m=publish).",
                    info.authorized,
                ),
            )
            if shown
        ),
    }
    escaped = {key: html.escape(value, quote=True) for key, value in values.items()}
    return template.substitute(escaped, config_json=_script_json(config))
