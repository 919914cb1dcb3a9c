"""Operator configuration for `moqsrt serve`: embedded defaults, an optional TOML file, flags.

Precedence is flag > file > default. `GatewayConfig` is plain data (frozen); `load_config`
builds it and raises `ConfigError` with the offending key and the reason, so a typo in a file
is a clear message at start-up, never a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError


class ConfigError(GatewayError, ValueError):
    """A configuration value that cannot be used; `key` names the setting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    """Everything `moqsrt serve` needs; defaults serve SRT on port 9000 out of the box.

    Addresses are `(host, port)` tuples, or None where a listener is off. `latency_ms` is the
    SRT latency the listener offers (milliseconds); `request_timeout_s` bounds how long an
    `m=request` caller waits for its publisher to appear; `publish_cap_bps` (None = off) is the
    sustained TS bit rate above which a publisher is disconnected; `peer_idle_timeout_ms` is how
    long a silent SRT peer (a publisher whose host died) has before its session is ended
    (SRTO_PEERIDLETIMEO: libsrt 1.5.1 takes about 5 s at least whatever it says, so values
    above 5000 lengthen the wait, e.g. for encoders on flaky links; lower ones change nothing).
    `http` is the operator's HTTP listener (`/metrics`, the JSON API), loopback by default;
    bound anywhere else it requires `http_token` (a bearer token; not in the repr).
    `metrics_path_labels` labels metrics per broadcast path (one series per path ever seen).
    """

    srt: tuple[str, int] | None = ("0.0.0.0", 9000)
    moq: tuple[str, int] | None = None
    http: tuple[str, int] | None = ("127.0.0.1", 8080)
    http_token: str | None = dataclasses.field(default=None, repr=False)
    metrics_path_labels: bool = False
    ledger: Path | None = None
    upstream: str | None = None
    prefix: str = ""
    latency_ms: int = 120
    passphrase: str | None = None
    publisher_policy: str = "reject"
    request_timeout_s: float = 10.0
    max_bitrate_bps: int = 100_000_000
    publish_cap_bps: int | None = None
    peer_idle_timeout_ms: int = 5000
    node: str = "gw-1"
    log_format: str = "auto"
    log_level: str = "info"


_FIELDS = {f.name: f for f in dataclasses.fields(GatewayConfig)}
_ADDRESS_KEYS = {"srt", "moq", "http"}


def parse_address(key: str, value: str) -> tuple[str, int] | None:
    """Parse `host:port` (or `off`, giving None) into `(host, port)`; ConfigError naming `key`
    otherwise."""
    if value.strip().lower() == "off":
        return None
    return parse_host_port(key, value, expected="host:port or 'off'")


def parse_host_port(key: str, value: str, *, expected: str = "host:port") -> tuple[str, int]:
    """Parse `host:port` (`[v6]:port`; an empty host means 0.0.0.0) into `(host, port)`;
    ConfigError (a ValueError) naming `key` otherwise."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(key, f"expected {expected}, got {value!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(key, f"port {port} is out of range 0..65535")
    return (host.strip("[]") or "0.0.0.0", port)


def _coerce(key: str, value: Any) -> Any:
    """Convert one raw setting (from TOML or a flag) to the type `GatewayConfig` holds."""
    if key in _ADDRESS_KEYS:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a 'host:port' string, got {value!r}")
        return parse_address(key, value)
    if key == "ledger":
        return None if value in (None, "", "off") else Path(str(value))
    if key == "http_token":
        if value is None or value == "":
            return None
        if not isinstance(value, str) or len(value) < 16 or not value.isprintable():
            # Never echo the value: it is a secret.
            raise ConfigError(key, "a bearer token has 16 or more printable characters")
        return value
    if key == "metrics_path_labels":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "on", "off", "1", "0"):
            return value.lower() in ("true", "on", "1")
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if key == "publish_cap_bps" and value in (None, "", 0, "0", "off"):
        return None
    if key in {"latency_ms", "max_bitrate_bps", "publish_cap_bps", "peer_idle_timeout_ms"}:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        try:
            number = int(value)
        except ValueError as exc:
            raise ConfigError(key, f"expected an integer, got {value!r}") from exc
        if number <= 0:
            raise ConfigError(key, f"must be positive, got {number}")
        return number
    if key == "request_timeout_s":
        try:
            seconds = float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(key, f"expected a number of seconds, got {value!r}") from exc
        if seconds < 0:
            raise ConfigError(key, f"must not be negative, got {seconds}")
        return seconds
    if key == "publisher_policy":
        if value not in ("reject", "takeover"):
            raise ConfigError(key, f"expected 'reject' or 'takeover', got {value!r}")
        return value
    if key == "log_format":
        if value not in ("auto", "json", "console"):
            raise ConfigError(key, f"expected 'json', 'console' or 'auto', got {value!r}")
        return value
    if key == "passphrase":
        if value is None or value == "":
            return None
        if not isinstance(value, str) or not 10 <= len(value) <= 79:
            raise ConfigError(key, "an SRT passphrase has 10 to 79 characters")
        return value
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {value!r}")
    return value


def load_config(
    file: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> GatewayConfig:
    """Build the configuration: defaults, then the TOML `file` (if any), then `overrides`.

    `overrides` maps field names to raw values (strings as typed on the command line); None
    values are ignored. Raises ConfigError for unknown keys, bad values and unreadable files.
    """
    raw: dict[str, Any] = {}
    if file is not None:
        try:
            with file.open("rb") as handle:
                data = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError("config", f"cannot read {file}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config", f"{file} is not valid TOML: {exc}") from exc
        raw.update(data)
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _FIELDS:
            known = ", ".join(sorted(_FIELDS))
            raise ConfigError(key, f"unknown setting (known: {known})")
        values[key] = _coerce(key, value)
    return GatewayConfig(**values)
