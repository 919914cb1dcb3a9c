"""`moqsrt serve`: run the SRT gateway with embedded defaults, a TOML file and flags.

It builds a `GatewayConfig` (`gateway.config`), sets up logging (`gateway.logs`), creates the
origin and the process-wide `StatsHandle`, and runs `gateway.server.run` until SIGINT or
SIGTERM, then closes every session (each one logs its `session.closed` record) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from dataclasses import replace
from pathlib import Path

import structlog

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.http import GatewaySources, HttpService, TokenRequired
from gateway.http.app import HTTP_TOKEN_ENV, http_token
from gateway.logs import configure_logging
from gateway.server import Server
from gateway.server import run as run_server
from gateway.server_config import ServerConfig
from model import Origin, PublisherPolicy, StatsHandle

_log = structlog.get_logger("moqsrt.serve")

# Listeners and sinks that the command line already names but this build does not serve yet.
_NOT_YET = ("moq", "ledger", "upstream")


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
        "--metrics-path-labels",
        dest="metrics_path_labels",
        action="store_const",
        const=True,
        help="label metrics per broadcast path (one series per path: for few paths only)",
    )
    parser.add_argument("--ledger", help="usage ledger file (SQLite)")
    parser.add_argument("--upstream", help="MoQ relay URL to publish every broadcast to")
    parser.add_argument("--prefix", help="path prefix every stream id is placed under")
    parser.add_argument("--latency", dest="latency_ms", help="SRT latency in milliseconds")
    parser.add_argument("--passphrase", help="default SRT passphrase (10..79 characters)")
    parser.add_argument(
        "--publisher-policy",
        dest="publisher_policy",
        choices=("reject", "takeover"),
        help="a second publisher on a live path: reject (1409, default) or take over",
    )
    parser.add_argument(
        "--request-timeout",
        dest="request_timeout_s",
        help="seconds an m=request caller waits for its publisher (default 10)",
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
    parser.add_argument("--node", help="node id carried by every usage record")
    parser.add_argument(
        "--log-format", dest="log_format", choices=("json", "console", "auto"), help="log format"
    )
    parser.add_argument("--log-level", dest="log_level", help="debug, info, warning, error")


def server_config(config: GatewayConfig) -> ServerConfig:
    """Translate the operator configuration into the SRT server's settings."""
    assert config.srt is not None
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
    """Run the gateway described by `config` until cancelled."""
    for key in _NOT_YET:
        if getattr(config, key) is not None:
            _log.warning("setting.unsupported", setting=key, detail="not served by this build")
    if config.srt is None:
        _log.error("config.no_listener", detail="srt is off and nothing else is served")
        return
    origin = Origin(publisher_policy=PublisherPolicy(config.publisher_policy))
    stats = StatsHandle(node=config.node)
    sources = GatewaySources(origin, stats)

    def ready(server: Server) -> None:
        sources.add_srt(server)
        host = config.srt[0] if config.srt else "0.0.0.0"
        sys.stdout.write(try_it_commands(host, server.port))
        sys.stdout.flush()

    srt_config = server_config(config)
    srt_config = replace(srt_config, sinks=(*srt_config.sinks, sources.record_session))
    async with contextlib.AsyncExitStack() as stack:
        if config.http is not None:
            http = await HttpService.bind(
                *config.http,
                sources,
                token=http_token(config.http_token),
                path_labels=config.metrics_path_labels,
            )
            stack.push_async_callback(http.aclose)
            shown = "127.0.0.1" if config.http[0] in ("0.0.0.0", "", "::") else config.http[0]
            sys.stdout.write(
                f"  # metrics and the API: curl http://{shown}:{http.port}/api/v1/broadcasts\n"
                f"  #   (also /metrics, /api/v1/sessions; DELETE /api/v1/sessions/ID kicks)\n"
            )
        await run_server(origin, srt_config, stats=stats, ready=ready)


async def _serve_until_signalled(config: GatewayConfig) -> None:
    """Serve until SIGINT/SIGTERM, then cancel the server task and let it close cleanly."""
    task = asyncio.create_task(serve(config))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    _log.info("serve.stopped")


def run(args: argparse.Namespace) -> int:
    """Entry point of `moqsrt serve`; returns the exit status (2 for a configuration error)."""
    overrides = {
        key: getattr(args, key)
        for key in (
            "srt",
            "moq",
            "http",
            "metrics_path_labels",
            "ledger",
            "upstream",
            "prefix",
            "latency_ms",
            "passphrase",
            "publisher_policy",
            "request_timeout_s",
            "publish_cap_bps",
            "peer_idle_timeout_ms",
            "node",
            "log_format",
            "log_level",
        )
    }
    try:
        config = load_config(args.config, overrides)
        if config.http is not None:
            HttpService.check_token(config.http[0], http_token(config.http_token))
    except (ConfigError, TokenRequired) as exc:
        sys.stderr.write(f"moqsrt serve: {exc}\n")
        return 2
    configure_logging(config.log_format, config.log_level)
    try:
        asyncio.run(_serve_until_signalled(config))
    except OSError as exc:
        sys.stderr.write(f"moqsrt serve: cannot serve: {exc}\n")
        return 1
    return 0
