"""`moqsrt serve`: every bad setting, as a flag, in the TOML file or in the environment, is one
line on stderr naming the key and exit status 2, never a traceback.

Most cases call the console script's entry (`gateway.cli.main`) in this process, which is what
`moqsrt` runs; a few run it as a real process to check the exit status and stderr end to end.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from gateway import cli
from gateway.auth import AuthDecision
from gateway.moq.server import MoqAuthDecision
from gateway.moq.webtransport import ConnectRequest
from gateway.moq.wire import Version
from gateway.serve import _moq_hook
from gateway.streamid import StreamRequest

ROOT = Path(__file__).resolve().parents[3]
SECRET_SHORT = "tiny-pw"
Serve = Callable[..., subprocess.CompletedProcess[str]]


def run_serve(
    args: list[str], *, env: dict[str, str] | None = None, timeout_s: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """`moqsrt serve ARGS` (the console script's `gateway.cli:main`) from this worktree."""
    environ = {k: v for k, v in os.environ.items() if k != "MOQSRT_PASSPHRASE"}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.fixture
def main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    """`main(args, env)`: `moqsrt serve ARGS` in this process, as a CompletedProcess. Logging
    set-up done by a run that gets that far is undone afterwards."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    saved = structlog.get_config()
    monkeypatch.delenv("MOQSRT_PASSPHRASE", raising=False)

    def call(
        args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        status = cli.main(["serve", *args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, status, out, err)

    try:
        yield call
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**saved)


def assert_one_line_error(result: subprocess.CompletedProcess[str], key: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"moqsrt serve: {key}: "), lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    return lines[0]


# (flag, TOML key, bad value as typed, the same bad value in TOML syntax)
BAD = [
    ("--srt", "srt", "9000", '"9000"'),
    ("--srt", "srt", "127.0.0.1:99999", '"127.0.0.1:99999"'),
    ("--srt", "srt", "bad host:9000", '"bad host:9000"'),
    ("--srt", "srt", "off", '"off"'),
    ("--moq", "moq", "nowhere", "4443"),
    ("--http", "http", "x:y", '"x:y"'),
    ("--ledger", "ledger", "a\tb", "5"),
    ("--upstream", "upstream", "a\nb", "true"),
    ("--prefix", "prefix", "live/../etc", '"../x"'),
    ("--latency", "latency_ms", "fast", "true"),
    ("--latency", "latency_ms", "0", "-5"),
    ("--latency", "latency_ms", "99999999999", "99999999999"),
    ("--passphrase", "passphrase", SECRET_SHORT, f'"{SECRET_SHORT}"'),
    ("--passphrase-file", "passphrase_file", "/nonexistent/srt.key", '"/nonexistent/k"'),
    ("--publisher-policy", "publisher_policy", "merge", '"merge"'),
    ("--request-timeout", "request_timeout_s", "soon", '"soon"'),
    ("--request-timeout", "request_timeout_s", "-1", "-1"),
    ("--request-timeout", "request_timeout_s", "inf", "inf"),
    ("--http-thumbnail-interval", "http_thumbnail_interval_s", "-1", "-1"),
    ("--http-thumbnail-interval", "http_thumbnail_interval_s", "soon", "true"),
    ("--http-thumbnail-interval", "http_thumbnail_interval_s", "0.5", "100000"),
    ("--max-bitrate", "max_bitrate_bps", "100000000000", "100000000000"),
    ("--publish-cap", "publish_cap_bps", "-1", '"fast"'),
    ("--peer-idle-timeout", "peer_idle_timeout_ms", "0", "99999999999"),
    ("--node", "node", "", '"a\\nb"'),
    ("--log-format", "log_format", "xml", '"xml"'),
    ("--log-level", "log_level", "loud", "10"),
    ("--max-sessions", "max_sessions", "many", "-1"),
    ("--max-peer-sessions", "max_peer_sessions", "2.5", "true"),
    ("--max-peer-handshakes-per-s", "max_peer_handshakes_per_s", "inf", '"fast"'),
]


@pytest.mark.parametrize(("flag", "key", "value", "toml"), BAD)
def test_a_bad_flag_value_is_one_line_naming_the_key(
    main: Serve, flag: str, key: str, value: str, toml: str
) -> None:
    line = assert_one_line_error(main([flag, value]), key)
    if key == "passphrase":
        assert SECRET_SHORT not in line


@pytest.mark.parametrize(("flag", "key", "value", "toml"), BAD)
def test_a_bad_toml_value_is_one_line_naming_the_key(
    main: Serve, tmp_path: Path, flag: str, key: str, value: str, toml: str
) -> None:
    config = tmp_path / "moqsrt.toml"
    config.write_text(f"{key} = {toml}\n")
    line = assert_one_line_error(main(["--config", str(config)]), key)
    if key == "passphrase":
        assert SECRET_SHORT not in line


def test_a_bad_passphrase_in_the_environment_names_the_variable(main: Serve) -> None:
    result = main([], env={"MOQSRT_PASSPHRASE": SECRET_SHORT})
    line = assert_one_line_error(result, "MOQSRT_PASSPHRASE")
    assert SECRET_SHORT not in line


def test_a_passphrase_file_with_a_bad_secret_never_shows_it(main: Serve, tmp_path: Path) -> None:
    key_file = tmp_path / "srt.key"
    key_file.write_text("too-short\n")
    line = assert_one_line_error(main(["--passphrase-file", str(key_file)]), "passphrase_file")
    assert "too-short" not in line


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("latencyms = 100\n", "latencyms"),
        ("srt = [unclosed\n", "config"),
        ('passphrase = "aaaaaaaaaaaa"\npassphrase_file = "k"\n', "passphrase_file"),
    ],
)
def test_a_broken_or_unknown_toml_setting_is_one_line(
    main: Serve, tmp_path: Path, toml: str, key: str
) -> None:
    config = tmp_path / "moqsrt.toml"
    config.write_text(toml)
    assert_one_line_error(main(["--config", str(config)]), key)


def test_a_missing_config_file_is_one_line(main: Serve, tmp_path: Path) -> None:
    assert_one_line_error(main(["--config", str(tmp_path / "absent.toml")]), "config")


@pytest.fixture
def busy_udp_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_an_srt_address_in_use_is_one_line_naming_srt(busy_udp_port: int) -> None:
    line = assert_one_line_error(run_serve(["--srt", f"127.0.0.1:{busy_udp_port}"]), "srt")
    assert f"127.0.0.1:{busy_udp_port}" in line


@pytest.mark.parametrize(
    ("args", "env", "key"),
    [
        (["--latency", "fast"], {}, "latency_ms"),
        (["--log-level", "loud"], {}, "log_level"),
        (["--srt", "off"], {}, "srt"),
        ([], {"MOQSRT_PASSPHRASE": SECRET_SHORT}, "MOQSRT_PASSPHRASE"),
    ],
)
def test_the_real_process_exits_2_with_one_line(
    args: list[str], env: dict[str, str], key: str
) -> None:
    line = assert_one_line_error(run_serve(args, env=env), key)
    assert SECRET_SHORT not in line


def test_a_subcommand_imports_only_its_own_module() -> None:
    # `moqsrt probe` must not pay for the server's imports (aiohttp, aioquic: ~1 CPU s).
    code = (
        "import sys\n"
        "from gateway.cli import main\n"
        "try:\n"
        "    main(['probe', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('aiohttp', 'aioquic', 'gateway.serve') if m in sys.modules))\n"
    )
    probe = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.splitlines()[-1] == "[]"
    assert "--json" in probe.stdout  # probe's own options were registered
    # The top-level help still lists every subcommand.
    top = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert all(name in top.stdout for name in ("serve", "probe", "usage")), top.stdout


def _moq_connect(path: str) -> ConnectRequest:
    return ConnectRequest(
        transport="webtransport", version=Version.LITE_03, path=path, query={}, peer="127.0.0.1:5"
    )


async def test_with_a_prefix_and_no_authorization_moq_connections_are_scoped_to_it() -> None:
    # No prefix, no hook: the listener keeps its built-in accept-all decision (no hook at all).
    assert _moq_hook(None, "") is None
    assert _moq_hook(None, "/") is None
    # A prefix alone: every connection is admitted, seeing and publishing only under it.
    hook = _moq_hook(None, "/acme/")
    assert hook is not None
    scoped = MoqAuthDecision(root="acme/cam1", publish_root="acme/cam1", publish_tier="default")
    assert await hook(_moq_connect("cam1")) == scoped
    assert await hook(_moq_connect("")) == MoqAuthDecision(
        root="acme", publish_root="acme", publish_tier="default"
    )


async def test_a_configured_hook_decides_moq_connections_under_the_prefix() -> None:
    asked: list[tuple[str, str]] = []

    async def refuse_publishers(request: StreamRequest, peer: tuple[str, int]) -> AuthDecision:
        asked.append((request.mode, request.path))
        return AuthDecision(accept=not request.is_publish, tier="gold")

    hook = _moq_hook(refuse_publishers, "acme")
    assert hook is not None
    decision = await hook(_moq_connect("cam1"))
    assert (decision.tier, decision.root, decision.read, decision.publish) == (
        "gold",
        "acme/cam1",
        True,
        False,
    )
    assert sorted(asked) == [("publish", "acme/cam1"), ("request", "acme/cam1")]
