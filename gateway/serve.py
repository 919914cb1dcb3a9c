"""`moqsrt serve`: run the gateway with embedded defaults, a TOML file, the environment and
flags.

It builds a `GatewayConfig` (`gateway.config`), sets up logging (`gateway.logs`), creates the
origin and the process-wide `StatsHandle`, binds the SRT server, the MoQ listener
(`gateway.moq.server`, with a kept self-signed certificate unless one is configured) and the
upstream publisher when asked, and serves until SIGINT or SIGTERM, then closes every session
(each one logs its `session.closed` record) and exits 0.
A configuration it cannot use, the listener included, is one line on stderr naming the key,
and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import structlog

from gateway.auth import AuthDecision, AuthHook
from gateway.authconfig import ConfiguredAuth, HttpAuth
from gateway.config import (
    PASSPHRASE_ENV,
    ConfigError,
    GatewayConfig,
    check_webhook,
    load_config,
)
from gateway.errors import GatewayError
from gateway.http import GatewaySources, HttpService, TokenRequired
from gateway.http.app import HTTP_TOKEN_ENV, http_token
from gateway.http.webassets import add_web_routes
from gateway.ledger_service import usage_ledger
from gateway.logs import configure_logging
from gateway.moq.auth import moq_auth_from_srt
from gateway.moq.cert import load_certificate
from gateway.moq.certstore import ensure_self_signed, renew_loop
from gateway.moq.record import MoqSessionSink
from gateway.moq.server import AUTH_TIMEOUT_S, MoqAuthDecision, MoqServer
from gateway.moq.upstream import UPSTREAM_TIER, Upstream
from gateway.moq.webtransport import ConnectRequest
from gateway.server import Server
from gateway.server_config import ServerConfig
from gateway.session import SessionSink
from gateway.srt import SrtError, SrtOptions, set_libsrt_log_level
from gateway.streamid import StreamRequest, normalize_prefix
from model import Origin, PublisherPolicy, StatsHandle

_log = structlog.get_logger("moqsrt.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the `serve` flags (names as in DESIGN.md's contracts) on `parser`."""
    parser.add_argument("--config", type=Path, help="TOML file with the settings below")
    parser.add_argument("--srt", help="SRT listen address host:port (default 0.0.0.0:9000)")
    parser.add_argument("--moq", help="MoQ (QUIC) listen address host:port, or off")
    parser.add_argument(
        "--http",
        help="HTTP listen address host:port for /metrics and the API (default 127.0.0.1:8080), "
        f"or off; a non-loopback address needs http_token in the file or {HTTP_TOKEN_ENV}",
    )
    parser.add_argument(
        "--http-token",
        dest="http_token",
        help=f"bearer token the HTTP listener requires (visible in ps: prefer {HTTP_TOKEN_ENV} "
        "or http_token in the file)",
    )
    parser.add_argument(
        "--metrics-path-labels",
        dest="metrics_path_labels",
        help="on: label metrics per broadcast path (one series per path: for few paths only)",
    )
    parser.add_argument(
        "--http-public-page",
        dest="http_public_page",
        help="on: the status page at / (its assets and thumbnails) needs no token even off "
        "loopback; the API and /metrics still do",
    )
    parser.add_argument(
        "--http-thumbnail-interval",
        dest="http_thumbnail_interval_s",
        help="seconds between a broadcast's status page thumbnails, each a keyframe decode "
        "(7-13 ms of CPU at 720p): default 60, 0 = no thumbnails",
    )
    parser.add_argument(
        "--ledger", help="usage ledger file (SQLite; default var/ledger.sqlite3), or off"
    )
    parser.add_argument(
        "--ledger-interval",
        dest="ledger_interval_ms",
        help="milliseconds between ledger flushes (default 1000)",
    )
    parser.add_argument("--webhook-url", dest="webhook_url", help="POST session records here")
    parser.add_argument(
        "--webhook-secret",
        dest="webhook_secret",
        help="the webhook's HMAC-SHA256 secret (shows in ps: prefer --webhook-secret-file)",
    )
    parser.add_argument(
        "--webhook-secret-file",
        dest="webhook_secret_file",
        help="file holding the webhook's HMAC-SHA256 secret",
    )
    parser.add_argument(
        "--upstream", help="MoQ relay URL (moqt:// or https://) to publish every broadcast to"
    )
    parser.add_argument(
        "--upstream-fingerprint",
        dest="upstream_fingerprint",
        help="pin the relay's certificate by its SHA-256 (hex) instead of the system CAs",
    )
    parser.add_argument(
        "--moq-cert", dest="moq_cert", help="MoQ TLS certificate chain (PEM); default self-signed"
    )
    parser.add_argument("--moq-key", dest="moq_key", help="MoQ TLS private key (PEM, EC)")
    parser.add_argument(
        "--var-dir", dest="var_dir", help="state directory (self-signed MoQ certificate)"
    )
    parser.add_argument("--prefix", help="path prefix every stream id is placed under")
    parser.add_argument("--latency", dest="latency_ms", help="SRT latency in milliseconds")
    parser.add_argument(
        "--passphrase",
        help="default SRT passphrase (10..79 characters; visible in ps: prefer the next two)",
    )
    parser.add_argument(
        "--passphrase-file",
        dest="passphrase_file",
        help=f"file holding the default SRT passphrase (or set {PASSPHRASE_ENV})",
    )
    parser.add_argument(
        "--publisher-policy",
        dest="publisher_policy",
        help="a second publisher on a live path: reject (1409, default) or takeover",
    )
    parser.add_argument(
        "--request-timeout",
        dest="request_timeout_s",
        help="seconds an m=request caller waits for its publisher (default 10)",
    )
    parser.add_argument(
        "--max-bitrate",
        dest="max_bitrate_bps",
        help="highest publisher bit rate the SRT receive buffers absorb (default 100000000)",
    )
    parser.add_argument(
        "--publish-cap",
        dest="publish_cap_bps",
        help="per-publisher TS bit rate cap in bits/s (off by default)",
    )
    parser.add_argument(
        "--peer-idle-timeout",
        dest="peer_idle_timeout_ms",
        help="milliseconds of silence before an SRT peer counts as gone (default 5000; libsrt "
        "1.5.1 needs about 5 s at least, so this lengthens the wait, e.g. for flaky links)",
    )
    parser.add_argument(
        "--max-sessions",
        dest="max_sessions",
        help="sessions the server holds at most, publishers and viewers (default 1000; 0 = off)",
    )
    parser.add_argument(
        "--max-peer-sessions",
        dest="max_peer_sessions",
        help="sessions one peer address may hold (default 100; 0 = off)",
    )
    parser.add_argument(
        "--max-peer-handshakes-per-s",
        dest="max_peer_handshakes_per_s",
        help="SRT handshakes one peer address may start per second, bursts of twice that "
        "(default 20; 0 = off); callers over a limit are refused with 1402",
    )
    parser.add_argument(
        "--users",
        help="TOML file of [[users]] tables: who may publish and read which paths (see README)",
    )
    parser.add_argument(
        "--auth-http-url",
        dest="auth_http_url",
        help="HTTP authorization hook: callers the users table does not know are POSTed here",
    )
    parser.add_argument(
        "--auth-http-timeout",
        dest="auth_http_timeout_ms",
        help="milliseconds the authorization hook has to answer (default 2000; then refused)",
    )
    parser.add_argument(
        "--auth-cache",
        dest="auth_cache_ms",
        help="milliseconds an authorization hook answer is reused (default 5000; 0 = off)",
    )
    parser.add_argument("--node", help="node id carried by every usage record")
    parser.add_argument("--log-format", dest="log_format", help="json, console or auto")
    parser.add_argument(
        "--log-level", dest="log_level", help="debug, info, warning, error or critical"
    )


INT32_MAX: Final = 2**31 - 1


def server_config(config: GatewayConfig) -> ServerConfig:
    """Translate the operator configuration into the SRT server's settings.

    Raises ConfigError for `srt = "off"` (nothing else is served yet) and for a
    `max_bitrate_bps` that, with `latency_ms`, needs a receive buffer over libsrt's limit.
    """
    if config.srt is None:
        raise ConfigError("srt", "is off, and this build serves nothing else")
    buffer_bytes = SrtOptions(
        latency_ms=config.latency_ms, max_bitrate_bps=config.max_bitrate_bps
    ).receive_buffer_bytes()
    if buffer_bytes > INT32_MAX:
        raise ConfigError(
            "max_bitrate_bps",
            f"with latency_ms = {config.latency_ms} the SRT receive buffer would be "
            f"{buffer_bytes} bytes, over libsrt's limit of {INT32_MAX}",
        )
    return ServerConfig(
        listen=config.srt,
        latency_ms=config.latency_ms,
        passphrase=config.passphrase,
        prefix=config.prefix,
        publisher_policy=PublisherPolicy(config.publisher_policy),
        request_timeout_s=config.request_timeout_s,
        node=config.node,
        max_bitrate_bps=config.max_bitrate_bps,
        publish_cap_bps=config.publish_cap_bps,
        peer_idle_timeout_ms=config.peer_idle_timeout_ms,
        max_sessions=config.max_sessions,
        max_peer_sessions=config.max_peer_sessions,
        max_peer_handshakes_per_s=config.max_peer_handshakes_per_s,
        auth=auth_hook(config),
        # The HTTP hook's own timeout must fire first: it refuses with 1403, not 1503.
        auth_timeout_s=max(ServerConfig().auth_timeout_s, config.auth_http_timeout_ms / 1000 + 0.5),
    )


def auth_hook(config: GatewayConfig) -> ConfiguredAuth | None:
    """The authorization hook the configuration describes (users table, HTTP hook), or None
    when it describes neither (every caller is accepted). The caller closes it (`aclose`)."""
    if not config.users and config.auth_http_url is None:
        return None
    http = None
    if config.auth_http_url is not None:
        http = HttpAuth(
            config.auth_http_url,
            timeout_s=config.auth_http_timeout_ms / 1000,
            cache_s=config.auth_cache_ms / 1000,
        )
    return ConfiguredAuth(config.users, http)


MOQ_AUTH_BOUND_S: Final = AUTH_TIMEOUT_S - 0.25
"""How long `moq_auth` lets the hook think: inside the MoQ listener's own bound (past which
the client would get 503), so that a slow hook fails closed with 403 as it does over SRT."""


def moq_auth(hook: AuthHook, prefix: str) -> Callable[[ConnectRequest], Awaitable[MoqAuthDecision]]:
    """The MoQ listener's hook: `moq_auth_from_srt(hook)`, refusing with 403 (and logging
    `auth.moq_timeout`) when it has not decided within `MOQ_AUTH_BOUND_S`."""
    decide = moq_auth_from_srt(hook, prefix=prefix)

    async def bounded(request: ConnectRequest) -> MoqAuthDecision:
        try:
            async with asyncio.timeout(MOQ_AUTH_BOUND_S):
                return await decide(request)
        except TimeoutError:
            _log.warning("auth.moq_timeout", peer=request.peer, path=request.path)
            return MoqAuthDecision(accept=False, status=403)

    return bounded


async def _admit_everyone(request: StreamRequest, peer: tuple[str, int]) -> AuthDecision:
    """An `AuthHook` that accepts every caller (tier `default`): with no authorization configured
    but a prefix, `moq_auth` of it still scopes MoQ connections under the prefix."""
    return AuthDecision()


def _moq_hook(
    srt_auth: AuthHook | None, prefix: str
) -> Callable[[ConnectRequest], Awaitable[MoqAuthDecision]] | None:
    """The MoQ listener's hook: `moq_auth` of the SRT hook, or of one admitting everyone when only
    a prefix is configured (so MoQ paths go under it as SRT ones do); None with neither."""
    if srt_auth is None and not normalize_prefix(prefix):
        return None
    return moq_auth(srt_auth if srt_auth is not None else _admit_everyone, prefix)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def warn_if_open(config: GatewayConfig) -> None:
    """Log `auth.open` (a warning) when a listener is bound beyond loopback and no
    authorization is configured: anyone who reaches it may then publish and watch."""
    if config.users or config.auth_http_url is not None:
        return
    exposed = [
        f"{key} {addr[0] or '0.0.0.0'}:{addr[1]}"
        for key, addr in (("srt", config.srt), ("moq", config.moq))
        if addr is not None and not _is_loopback(addr[0])
    ]
    if exposed:
        _log.warning(
            "auth.open",
            listeners=exposed,
            detail="no users table or auth_http_url: anyone who reaches these listeners may "
            "publish and watch any path; configure users or auth_http_url, or bind to 127.0.0.1",
        )


def try_it_commands(host: str, port: int) -> str:
    """The ffmpeg publish and ffplay play commands that work against a gateway at host:port."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    base = f"srt://{shown}:{port}"
    return (
        "moqsrt is serving SRT. Try it:\n"
        "  # publish a test pattern (any TS source works: OBS, an encoder, a file with -re)\n"
        "  ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine \\\n"
        "    -c:v libx264 -preset veryfast -g 60 -c:a aac -f mpegts \\\n"
        f"    '{base}?streamid=#!::r=live/test,m=publish&linger=2'\n"
        "  # play it back\n"
        f"  ffplay '{base}?streamid=#!::r=live/test,m=request'\n"
    )


async def serve(config: GatewayConfig) -> None:
    """Run the gateway described by `config` until cancelled.

    Raises ConfigError (key `srt` / `moq` / `http`) when a listener cannot be opened,
    (`moq_cert`, `var_dir`) when the MoQ certificate cannot be had, (`http_token`) when HTTP is
    bound off loopback without a token, and as `server_config` does.
    """
    srt_config = server_config(config)
    if config.http is not None:
        try:  # before any listener opens: a public HTTP address without a token serves nothing
            HttpService.check_token(config.http[0], http_token(config.http_token))
        except TokenRequired as exc:
            raise ConfigError("http_token", str(exc)) from None
    try:
        await _serve(config, srt_config)
    finally:
        if isinstance(srt_config.auth, ConfiguredAuth):
            await srt_config.auth.aclose()


async def _serve(config: GatewayConfig, srt_config: ServerConfig) -> None:
    if config.moq is not None and (config.moq_cert is None) != (config.moq_key is None):
        raise ConfigError("moq_cert", "moq_cert and moq_key are set together (or neither)")
    check_webhook(config)
    origin = Origin(publisher_policy=PublisherPolicy(config.publisher_policy))
    stats = StatsHandle(node=config.node)
    sources = GatewaySources(origin, stats)  # what the HTTP surface reports on
    srt_config = replace(srt_config, sinks=(*srt_config.sinks, sources.record_session))
    host, port = srt_config.listen if isinstance(srt_config.listen, tuple) else ("", 0)
    # The ledger's sink joins the SRT server's once the ledger is open (after the bind, so that
    # a bind failure is the only line on stderr), and is given to the MoQ server when it binds.
    # Both servers end every session before the ledger closes (it flushes their records).
    srt_sinks: list[SessionSink] = list(srt_config.sinks)
    srt_config = replace(srt_config, sinks=srt_sinks)
    try:
        server = await Server.bind(config=srt_config, origin=origin)
    except (SrtError, socket.gaierror) as exc:  # not OSError: a missing libsrt is no srt value
        raise ConfigError("srt", f"cannot listen on {host}:{port}: {exc}") from None
    async with server, usage_ledger(config, stats) as ledger:
        moq_sinks: list[MoqSessionSink] = []
        if ledger is not None:
            srt_sinks.append(ledger.record_session)
            moq_sinks.append(ledger.record_session)
        sources.add_srt(server)
        sources.srt_port = server.port
        sources.srt_latency_ms = config.latency_ms
        sources.prefix = server.prefix
        sources.srt_encrypted = config.passphrase is not None
        sources.authorized = bool(config.users) or config.auth_http_url is not None
        if ledger is not None:
            sources.usage = ledger
            sources.ledger_lag_s = lambda: time.time() - ledger.committed_at
        # After the bind (libsrt's start-up sets WARNING). Only `debug` opens libsrt's chatty
        # levels: its notices cost CPU on busy links, and each takes the GIL on its thread.
        level = logging.getLevelNamesMapping()[config.log_level.upper()]
        set_libsrt_log_level(level if level == logging.DEBUG else max(level, logging.WARNING))
        server.with_stats(stats)
        sys.stdout.write(try_it_commands(host, server.port))
        sys.stdout.flush()
        async with contextlib.AsyncExitStack() as stack:
            tasks = await stack.enter_async_context(_TaskSet())
            if config.moq is not None:
                await _serve_moq(
                    config, srt_config, origin, stats, stack, tasks, sources, moq_sinks
                )
            http = None
            if config.http is not None:
                http = await _bind_http(config, sources)
                stack.push_async_callback(http.aclose)
            if config.upstream is not None:
                upstream = Upstream(
                    config.upstream, origin, stats=stats, fingerprint=config.upstream_fingerprint
                )
                _log.info("moq.upstream", url=upstream.redacted_url, tier=UPSTREAM_TIER)
                tasks.start(upstream.run())
            warn_if_open(config)  # after the binds: a bind failure stays the only line
            if http is not None and config.http is not None:
                _announce_page(config, http.port)
            await server.serve(origin)


class _TaskSet(contextlib.AbstractAsyncContextManager["_TaskSet"]):
    """Background tasks of `serve` (the upstream, certificate renewal): cancelled and awaited
    on exit (the upstream closes its relay session there)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("serve.task_failed", error=repr(task.exception()))

    async def __aexit__(self, *exc_info: object) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _serve_moq(
    config: GatewayConfig,
    srt_config: ServerConfig,
    origin: Origin,
    stats: StatsHandle,
    stack: contextlib.AsyncExitStack,
    tasks: _TaskSet,
    sources: GatewaySources,
    sinks: Sequence[MoqSessionSink] = (),
) -> None:
    """Bind the MoQ listener on `config.moq` (closed by `stack`), list it in `sources`, and
    print how to reach it."""
    assert config.moq is not None
    if config.moq_cert is not None and config.moq_key is not None:
        try:
            certificate = load_certificate(config.moq_cert, config.moq_key)
        except (OSError, ValueError) as exc:
            raise ConfigError("moq_cert", f"cannot load {config.moq_cert}: {exc}") from None
        self_signed = False
    else:
        try:
            certificate, _ = ensure_self_signed(config.var_dir)
        except OSError as exc:
            raise ConfigError("var_dir", f"cannot keep the MoQ certificate: {exc}") from None
        self_signed = True
    # The SRT authorization hook (when the configuration has one) decides MoQ callers too.
    try:
        moq_server = await MoqServer.bind(
            config.moq,
            certificate=certificate,
            origin=origin,
            node=config.node,
            auth=_moq_hook(srt_config.auth, config.prefix),
            sinks=(sources.record_session, *sinks),
        )
    except OSError as exc:
        host, port = config.moq
        raise ConfigError("moq", f"cannot listen on {host}:{port}: {exc}") from None
    moq_server.with_stats(stats)
    stack.push_async_callback(moq_server.aclose)
    sources.add_moq(moq_server)
    sources.moq_port = moq_server.port
    if self_signed:
        tasks.start(renew_loop(config.var_dir, certificate, moq_server.set_certificate))
    host = config.moq[0]
    sys.stdout.write(moq_try_it(host, moq_server.port, certificate.fingerprint, self_signed))
    sys.stdout.flush()


async def _bind_http(config: GatewayConfig, sources: GatewaySources) -> HttpService:
    """Open the HTTP listener of `config.http` and print its address (ConfigError when it
    cannot be opened, or is off loopback without a token)."""
    assert config.http is not None
    host, port = config.http
    try:
        http = await HttpService.bind(
            host,
            port,
            sources,
            token=http_token(config.http_token),
            path_labels=config.metrics_path_labels,
            public_page=config.http_public_page,
            thumbnail_interval_s=config.http_thumbnail_interval_s,
            setup=add_web_routes,
        )
    except TokenRequired as exc:
        raise ConfigError("http_token", str(exc)) from None
    except OSError as exc:
        raise ConfigError("http", f"cannot listen on {host}:{port}: {exc}") from None
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    sys.stdout.write(
        f"moqsrt is serving HTTP: curl http://{shown}:{http.port}/api/v1/broadcasts\n"
        "  (also /metrics, /api/v1/sessions; DELETE /api/v1/sessions/ID ends a session)\n"
    )
    sys.stdout.flush()
    return http


def status_page_url(host: str, port: int) -> str:
    """The status page's address for a listener bound to `host:port` (a wildcard address is
    shown as 127.0.0.1, an IPv6 one bracketed)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def _announce_page(config: GatewayConfig, port: int) -> None:
    """Print (last, so that it is seen) and log where the status page is."""
    assert config.http is not None
    url = status_page_url(config.http[0], port)
    token_needed = http_token(config.http_token) is not None and not config.http_public_page
    hint = "  (add ?token=<your http_token> to the address)" if token_needed else ""
    sys.stdout.write(f"\n  status page: {url}{hint}\n\n")
    sys.stdout.flush()
    _log.info("http.status_page", url=url, token_required=token_needed)


def moq_try_it(host: str, port: int, fingerprint: str, self_signed: bool) -> str:
    """The MoQ listener's banner: its certificate's SHA-256 and a moq-rs client (Python) that
    reads a broadcast from it, pinning that hash when the certificate is self-signed."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    pin = f", tls_fingerprints=[{fingerprint!r}]" if self_signed else ""
    return (
        f"moqsrt is serving MoQ on udp/{port} (moqt:// raw QUIC, https:// WebTransport).\n"
        f"  certificate sha256: {fingerprint}\n"
        "  # read the broadcast live/test with moq-rs (pip install moq-rs), in Python:\n"
        "  import asyncio, moq\n"
        "  async def main():\n"
        f'      async with moq.Client("moqt://{shown}:{port}"{pin}) as client:\n'
        '          broadcast = await client.announced_broadcast("live/test")\n'
        "          print(await broadcast.catalog())\n"
        "  asyncio.run(main())\n"
    )


async def _serve_until_signalled(config: GatewayConfig) -> None:
    """Serve until SIGINT/SIGTERM, then cancel the server task and let it close cleanly."""
    task = asyncio.create_task(serve(config))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    _log.info("serve.stopped")


def _fail(message: str) -> None:
    # One line, whatever the message holds (a libsrt or OS message may not be).
    sys.stderr.write("moqsrt serve: " + " ".join(message.split()) + "\n")


def run(args: argparse.Namespace) -> int:
    """Entry point of `moqsrt serve`; returns the exit status: 2 for a configuration error
    (one line on stderr naming the key), 1 when serving fails otherwise."""
    overrides = {
        key: value
        for key, value in vars(args).items()
        if key not in ("config", "command", "_module")
    }
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        _fail(str(exc))
        return 2
    configure_logging(config.log_format, config.log_level)
    if args.http_token is not None:
        _log.warning(
            "setting.visible",
            setting="http_token",
            detail=f"--http-token shows in ps; use {HTTP_TOKEN_ENV} or http_token in the file",
        )
    if args.passphrase is not None:
        _log.warning(
            "setting.visible",
            setting="passphrase",
            detail=f"--passphrase shows in ps; use --passphrase-file or {PASSPHRASE_ENV}",
        )
    try:
        asyncio.run(_serve_until_signalled(config))
    except ConfigError as exc:
        _fail(str(exc))
        return 2
    except (OSError, GatewayError) as exc:  # GatewayError: e.g. a LedgerError
        _fail(f"cannot serve: {exc}")
        return 1
    return 0
