"""Operator configuration for `moqsrt serve`: embedded defaults, an optional TOML file, flags.

Precedence is flag > file > default. `GatewayConfig` is plain data (frozen); `load_config`
builds it and raises `ConfigError` with the offending key and the reason, so a typo in a file
is a clear message at start-up, never a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import os
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

    Usage ledger (`gateway.ledger`): `ledger` is its SQLite file (None: off), flushed every
    `ledger_interval_ms`. `webhook_url` (None: off) receives every final session record from
    the ledger, signed with `webhook_secret` (read from `webhook_secret_file` when that is set,
    or from the environment variable `MOQSRT_WEBHOOK_SECRET`; never shown in the repr).
    """

    srt: tuple[str, int] | None = ("0.0.0.0", 9000)
    moq: tuple[str, int] | None = None
    http: tuple[str, int] | None = None
    ledger: Path | None = Path("var") / "ledger.sqlite3"
    ledger_interval_ms: int = 1000
    webhook_url: str | None = None
    webhook_secret: str | None = dataclasses.field(default=None, repr=False)
    webhook_secret_file: Path | None = None
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
    if key in _WEBHOOK_KEYS:
        return _webhook_value(key, value)
    if key == "publish_cap_bps" and value in (None, "", 0, "0", "off"):
        return None
    if key in {
        "latency_ms",
        "max_bitrate_bps",
        "publish_cap_bps",
        "peer_idle_timeout_ms",
        "ledger_interval_ms",
    }:
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


_WEBHOOK_KEYS = {"webhook_url", "webhook_secret", "webhook_secret_file"}
WEBHOOK_SECRET_ENV = "MOQSRT_WEBHOOK_SECRET"
"""The environment variable a webhook secret is read from when no file or value is set."""


def _webhook_value(key: str, value: Any) -> Any:
    if value in (None, "", "off"):
        return None
    if not isinstance(value, str):
        raise ConfigError(key, "expected a string")
    if key == "webhook_secret_file":
        return Path(value)
    if key == "webhook_url":
        scheme, sep, rest = value.partition("://")
        if not sep or scheme.lower() not in ("http", "https") or not rest.strip("/"):
            # Never echo the value: a receiver URL may carry a token.
            raise ConfigError(key, "expected an http:// or https:// URL with a host")
    return value


def _resolve_webhook(values: dict[str, Any]) -> None:
    """Read the webhook secret (file, else environment) and require one when a URL is set."""
    file = values.get("webhook_secret_file")
    if file is not None:
        try:
            values["webhook_secret"] = file.read_text().strip() or None
        except OSError as exc:
            raise ConfigError("webhook_secret_file", f"cannot read {file}: {exc.strerror}") from exc
    if values.get("webhook_url") is None:
        return
    if values.get("webhook_secret") is None and os.environ.get(WEBHOOK_SECRET_ENV):
        values["webhook_secret"] = os.environ[WEBHOOK_SECRET_ENV]
    if not values.get("webhook_secret"):
        sources = f"webhook_secret_file, webhook_secret or ${WEBHOOK_SECRET_ENV}"
        raise ConfigError("webhook_secret", f"webhook_url needs a secret ({sources})")


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
    _resolve_webhook(values)
    return GatewayConfig(**values)
