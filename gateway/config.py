"""Operator configuration for `moqsrt serve`: embedded defaults, an optional TOML file, the
environment (`MOQSRT_PASSPHRASE` only), flags.

Precedence is flag > environment > file > default. `GatewayConfig` is plain data (frozen; its
repr leaves the passphrase out); `load_config` builds it and raises `ConfigError` with the
offending key and the reason in one line, so a typo in a file is a clear message at start-up,
never a silently ignored setting. No message ever contains a passphrase.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gateway.authconfig import UserEntry, load_users
from gateway.errors import GatewayError
from gateway.streamid import normalize_prefix

PASSPHRASE_ENV: Final = "MOQSRT_PASSPHRASE"
"""Environment variable that may hold the default SRT passphrase (kept out of `ps`)."""

LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS: Final = ("auto", "json", "console")
MAX_LATENCY_MS: Final = 60_000
MAX_PEER_IDLE_TIMEOUT_MS: Final = 3_600_000
MAX_PASSPHRASE_FILE_BYTES: Final = 4096
MAX_LEDGER_INTERVAL_MS: Final = 3_600_000
MAX_AUTH_HTTP_TIMEOUT_MS: Final = 60_000
MAX_AUTH_CACHE_MS: Final = 3_600_000
MAX_THUMBNAIL_INTERVAL_S: Final = 86_400
WEBHOOK_SECRET_ENV: Final = "MOQSRT_WEBHOOK_SECRET"
"""The environment variable a webhook secret is read from when no file or value is set."""


class ConfigError(GatewayError, ValueError):
    """A configuration value that cannot be used; `key` names the setting (a TOML key, `config`
    for the file itself, or `MOQSRT_PASSPHRASE`). The message is one line and never holds a
    passphrase."""

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
    `passphrase` is the resolved default SRT passphrase, from whichever source won
    (`passphrase`, `passphrase_file`, `MOQSRT_PASSPHRASE`); it is not in the repr.
    `http` is the operator's HTTP listener (`/metrics`, the JSON API), loopback by default;
    bound anywhere else it requires `http_token` (a bearer token; not in the repr).
    `metrics_path_labels` labels metrics per broadcast path (one series per path ever seen).
    `http_public_page` serves the status page (`/`, its assets, thumbnails) without the token
    (the API and `/metrics` still need it). `http_thumbnail_interval_s` is how often a
    broadcast's status page thumbnail is made at most (seconds; each one decodes a keyframe,
    7-13 ms of CPU at 720p), and so how often the page asks; 0 turns thumbnails off.
    `max_sessions`, `max_peer_sessions` and `max_peer_handshakes_per_s` are the operator's
    limits (`ServerConfig` has their meaning; None = no limit, written 0 or "off").

    MoQ: `moq` is the UDP address of the MoQ listener (raw QUIC and WebTransport). Its TLS
    certificate is `moq_cert`/`moq_key` (PEM, EC key) when both are set, else a self-signed
    ECDSA certificate kept and renewed under `var_dir` (short-lived, so that browsers accept it
    by hash). `upstream` is a MoQ relay URL (`moqt://` or `https://`) every broadcast is also
    published to; `upstream_fingerprint` pins its certificate's SHA-256 (hex) instead of
    trusting the system CAs.

    Usage ledger (`gateway.ledger`): `ledger` is its SQLite file (None: off; by default
    `ledger.sqlite3` in `var_dir`), flushed every `ledger_interval_ms`. `webhook_url` (None:
    off) receives every final session record from the ledger, signed with `webhook_secret`
    (read from `webhook_secret_file` when that is set, or from the environment variable
    `MOQSRT_WEBHOOK_SECRET`; never shown in the repr).

    Authorization (`gateway.authconfig`): `users` is the users table (from the TOML array of
    tables, or the TOML file it names); `auth_http_url` (None: off; not in the repr, a URL may
    carry a token) is asked about callers the table does not know, each answer bounded by
    `auth_http_timeout_ms` and cached `auth_cache_ms` (0: not cached). Neither: every caller
    is accepted.
    """

    srt: tuple[str, int] | None = ("0.0.0.0", 9000)
    moq: tuple[str, int] | None = ("0.0.0.0", 4443)
    http: tuple[str, int] | None = ("127.0.0.1", 8080)
    http_token: str | None = field(default=None, repr=False)
    metrics_path_labels: bool = False
    http_public_page: bool = False
    http_thumbnail_interval_s: float = 60.0
    ledger: Path | None = Path("var") / "ledger.sqlite3"
    ledger_interval_ms: int = 1000
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_secret_file: Path | None = None
    upstream: str | None = None
    upstream_fingerprint: str | None = None
    moq_cert: Path | None = None
    moq_key: Path | None = None
    var_dir: Path = Path("var")
    prefix: str = ""
    latency_ms: int = 120
    passphrase: str | None = field(default=None, repr=False)
    publisher_policy: str = "reject"
    request_timeout_s: float = 10.0
    max_bitrate_bps: int = 100_000_000
    publish_cap_bps: int | None = None
    peer_idle_timeout_ms: int = 5000
    node: str = "gw-1"
    log_format: str = "auto"
    log_level: str = "info"
    max_sessions: int | None = 1000
    max_peer_sessions: int | None = 100
    max_peer_handshakes_per_s: float | None = 20.0
    users: tuple[UserEntry, ...] = ()
    auth_http_url: str | None = field(default=None, repr=False)
    auth_http_timeout_ms: int = 2000
    auth_cache_ms: int = 5000


_FIELDS = {f.name: f for f in dataclasses.fields(GatewayConfig)}
PASSPHRASE_FILE_KEY: Final = "passphrase_file"
KEYS: Final = frozenset({*_FIELDS, PASSPHRASE_FILE_KEY})
"""Every key a TOML file (or a flag's destination) may set."""

_ADDRESS_KEYS = {"srt", "moq", "http"}
_INT_RANGES: Final[Mapping[str, tuple[int, int | None]]] = {
    "latency_ms": (1, MAX_LATENCY_MS),
    "max_bitrate_bps": (1, None),
    "publish_cap_bps": (1, None),
    "peer_idle_timeout_ms": (1, MAX_PEER_IDLE_TIMEOUT_MS),
    "ledger_interval_ms": (1, MAX_LEDGER_INTERVAL_MS),
    "auth_http_timeout_ms": (1, MAX_AUTH_HTTP_TIMEOUT_MS),
    "auth_cache_ms": (0, MAX_AUTH_CACHE_MS),
}
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_HOST_NAME = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?\.?"
)
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?")


def _show(value: Any) -> str:
    """A value for an error message: repr (one line), at most about 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_address(key: str, value: str) -> tuple[str, int] | None:
    """Parse `host:port` (or `off`, giving None) into `(host, port)`; ConfigError naming `key`
    otherwise."""
    if value.strip().lower() == "off":
        return None
    return parse_host_port(key, value, expected="host:port or 'off'")


def parse_host_port(key: str, value: str, *, expected: str = "host:port") -> tuple[str, int]:
    """Parse `host:port` (`[v6]:port`; an empty host means 0.0.0.0) into `(host, port)`;
    ConfigError (a ValueError) naming `key` otherwise. The host must be an IP address or a
    syntactically valid host name (whether it resolves is found out when binding)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(key, f"expected {expected}, got {_show(value)}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(key, f"port {port} is out of range 0..65535")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    if host and not (
        _IPV6.fullmatch(host) if bracketed or ":" in host else _HOST_NAME.fullmatch(host)
    ):
        raise ConfigError(key, f"not a host name or IP address: {_show(host)}")
    return (host or "0.0.0.0", port)


def _integer(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(key, f"expected an integer, got {_show(value)}")
    try:
        number = int(value)
    except ValueError as exc:
        raise ConfigError(key, f"expected an integer, got {_show(value)}") from exc
    low, high = _INT_RANGES[key]
    if number < low:
        raise ConfigError(key, f"must be {'positive' if low else 'at least 0'}, got {number}")
    if high is not None and number > high:
        raise ConfigError(key, f"must be at most {high}, got {number}")
    return number


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {_show(value)}")
    if _CONTROL_CHARS.search(value):
        raise ConfigError(key, "control characters are not allowed")
    return value


def _check_passphrase(key: str, value: Any) -> str | None:
    # Never echo the value: the message says what is wrong, not what was given.
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(key, "expected a string")
    if not 10 <= len(value) <= 79:
        raise ConfigError(key, "an SRT passphrase has 10 to 79 characters")
    return value


def read_passphrase_file(key: str, value: Any, base: Path | None = None) -> str | None:
    """The passphrase held in the file `value` names (one trailing newline dropped; a relative
    name is taken from `base`, the TOML file's directory, when given); None for an empty name.
    ConfigError naming `key` when the file cannot be read or holds no valid passphrase (10..79
    characters); the message names the file, never its content."""
    if value is None or value == "":
        return None
    if not isinstance(value, str | os.PathLike):
        raise ConfigError(key, f"expected a file name, got {_show(value)}")
    path = Path(value)
    if base is not None and not path.is_absolute():
        path = base / path
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_PASSPHRASE_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_PASSPHRASE_FILE_BYTES:
        raise ConfigError(key, f"{path} is too large to hold a passphrase")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(key, f"{path} is not UTF-8 text") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not 10 <= len(text) <= 79 or _CONTROL_CHARS.search(text):
        raise ConfigError(
            key, f"{path} must hold one SRT passphrase of 10 to 79 printable characters"
        )
    return text


_LIMIT_KEYS = {"max_sessions": int, "max_peer_sessions": int, "max_peer_handshakes_per_s": float}


def _limit(key: str, value: Any) -> int | float | None:
    """An operator limit: a positive number, or 0 / "off" for none (None)."""
    if value in ("off", "0") or (not isinstance(value, bool) and value == 0):
        return None
    whole = _LIMIT_KEYS[key] is int
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(key, f"expected a number (0 or 'off' for no limit), got {_show(value)}")
    number: int | float
    try:
        number = int(value) if whole else float(value)
    except ValueError as exc:
        raise ConfigError(
            key, f"expected a number (0 or 'off' for no limit), got {_show(value)}"
        ) from exc
    if whole and isinstance(value, float) and number != value:
        raise ConfigError(key, f"expected a whole number, got {_show(value)}")
    if not 0 < number < 1e9:
        raise ConfigError(
            key, f"must be positive and below 1e9 (0 or 'off' for none), got {_show(value)}"
        )
    return number


def _coerce(key: str, value: Any) -> Any:
    """Convert one raw setting (from TOML or a flag) to the type `GatewayConfig` holds."""
    if key in _LIMIT_KEYS:
        return _limit(key, value)
    if key in _ADDRESS_KEYS:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a 'host:port' string, got {_show(value)}")
        return parse_address(key, value)
    if key in ("moq_cert", "moq_key"):
        return None if value in (None, "", "off") else Path(_text(key, value))
    if key == "var_dir":
        if not isinstance(value, str) or not value:
            raise ConfigError(key, f"expected a directory, got {_show(value)}")
        return Path(_text(key, value))
    if key == "upstream":
        return _upstream_url(value)
    if key == "upstream_fingerprint":
        return _fingerprint(value)
    if key == "ledger":
        return None if value in (None, "", "off") else Path(_text(key, value))
    if key in _WEBHOOK_KEYS:
        return _webhook_value(key, value)
    if key == "users":
        try:
            return load_users(value)
        except ValueError as exc:
            raise ConfigError(key, str(exc)) from None
    if key == "auth_http_url":
        return _auth_http_url(value)
    if key == "http_token":
        if value is None or value == "":
            return None
        if not isinstance(value, str) or len(value) < 16 or not value.isprintable():
            # Never echo the value: it is a secret.
            raise ConfigError(key, "a bearer token has 16 or more printable characters")
        return value
    if key in ("metrics_path_labels", "http_public_page"):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "on", "off", "1", "0"):
            return value.lower() in ("true", "on", "1")
        raise ConfigError(key, f"expected true or false, got {_show(value)}")
    if key == "publish_cap_bps" and value in (None, "", 0, "0", "off"):
        return None
    if key in _INT_RANGES:
        return _integer(key, value)
    if key == "http_thumbnail_interval_s":
        return _thumbnail_interval(value)
    if key == "request_timeout_s":
        if isinstance(value, bool):
            raise ConfigError(key, f"expected a number of seconds, got {_show(value)}")
        try:
            seconds = float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(key, f"expected a number of seconds, got {_show(value)}") from exc
        if not math.isfinite(seconds) or seconds < 0:
            raise ConfigError(key, f"must be a finite number >= 0, got {_show(value)}")
        return seconds
    if key == "publisher_policy":
        if value not in ("reject", "takeover"):
            raise ConfigError(key, f"expected 'reject' or 'takeover', got {_show(value)}")
        return value
    if key == "log_format":
        if value not in LOG_FORMATS:
            raise ConfigError(key, f"expected 'json', 'console' or 'auto', got {_show(value)}")
        return value
    if key == "log_level":
        if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
            raise ConfigError(key, f"expected one of {', '.join(LOG_LEVELS)}, got {_show(value)}")
        return value.lower()
    if key == "passphrase":
        return _check_passphrase(key, value)
    if key == "prefix":
        prefix = _text(key, value)
        try:
            normalize_prefix(prefix)
        except ValueError:
            raise ConfigError(
                key, f"'.' and '..' segments are not allowed: {_show(value)}"
            ) from None
        return prefix
    if key == "node":
        node = _text(key, value)
        if not node.strip() or len(node) > 255:
            raise ConfigError(key, "must be 1 to 255 characters")
        return node
    return _text(key, value)


_WEBHOOK_KEYS = {"webhook_url", "webhook_secret", "webhook_secret_file"}


def _thumbnail_interval(value: Any) -> float:
    """Seconds between a broadcast's thumbnails: 0 (or "off") for none, else 1 to a day."""
    key = "http_thumbnail_interval_s"
    expected = "a number of seconds (0 or 'off': no thumbnails)"
    if value == "off":
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(key, f"expected {expected}, got {_show(value)}")
    try:
        seconds = float(value)
    except ValueError as exc:
        raise ConfigError(key, f"expected {expected}, got {_show(value)}") from exc
    if seconds != 0 and not 1 <= seconds <= MAX_THUMBNAIL_INTERVAL_S:
        raise ConfigError(
            key, f"must be 0 (off) or 1 to {MAX_THUMBNAIL_INTERVAL_S} seconds, got {_show(value)}"
        )
    return seconds


def _auth_http_url(value: Any) -> str | None:
    # Never echo the value: the URL may carry a token.
    if value in (None, "", "off"):
        return None
    if not isinstance(value, str) or _CONTROL_CHARS.search(value):
        raise ConfigError("auth_http_url", "expected an http:// or https:// URL")
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest.strip("/"):
        raise ConfigError("auth_http_url", "expected an http:// or https:// URL with a host")
    return value


def _webhook_value(key: str, value: Any) -> Any:
    # Never echo a value: a URL may carry a token, and the secret is a secret.
    if value in (None, "", "off"):
        return None
    if not isinstance(value, str):
        raise ConfigError(key, "expected a string")
    if key == "webhook_secret_file":
        return Path(value)
    if key == "webhook_url":
        scheme, sep, rest = value.partition("://")
        if not sep or scheme.lower() not in ("http", "https") or not rest.strip("/"):
            raise ConfigError(key, "expected an http:// or https:// URL with a host")
    return value


def _resolve_webhook(values: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Read the webhook secret: `webhook_secret_file`, else `webhook_secret`, else the
    environment (only when a URL is set). Messages name the file, never its content. A URL
    without any secret is refused by `check_webhook` when serving starts."""
    file = values.get("webhook_secret_file")
    if file is not None:
        try:
            with file.open("rb") as handle:
                data = handle.read(MAX_PASSPHRASE_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(
                "webhook_secret_file", f"cannot read {file}: {exc.strerror}"
            ) from None
        if len(data) > MAX_PASSPHRASE_FILE_BYTES:
            raise ConfigError("webhook_secret_file", f"{file} is too large to hold a secret")
        values["webhook_secret"] = data.decode("utf-8", "replace").strip() or None
    if values.get("webhook_url") is None:
        return
    if values.get("webhook_secret") is None and environ.get(WEBHOOK_SECRET_ENV):
        values["webhook_secret"] = environ[WEBHOOK_SECRET_ENV]


def check_webhook(config: GatewayConfig) -> None:
    """Raise ConfigError (key `webhook_secret`) when `config` names a webhook URL but no
    secret to sign with."""
    if config.webhook_url is not None and not config.webhook_secret:
        sources = f"webhook_secret_file, webhook_secret or ${WEBHOOK_SECRET_ENV}"
        raise ConfigError("webhook_secret", f"webhook_url needs a secret ({sources})")


def _anchor_to_file(raw: dict[str, Any], flags: Mapping[str, Any], file: Path | None) -> None:
    """A relative `webhook_secret_file` (or `users` file name) in the TOML file is relative to
    that file's directory (as `passphrase_file` is)."""
    for key in ("webhook_secret_file", "users"):
        name = raw.get(key)
        if file is None or key in flags or not isinstance(name, str) or name in ("", "off"):
            continue
        if not Path(name).is_absolute():
            raw[key] = str(file.parent / name)


def _passphrase_source(level: str, values: Mapping[str, Any]) -> tuple[str, Any] | None:
    """The passphrase setting `values` (one level: file or flags) holds, as (key, raw value)."""
    given = [k for k in ("passphrase", PASSPHRASE_FILE_KEY) if values.get(k) is not None]
    if len(given) == 2:
        raise ConfigError(PASSPHRASE_FILE_KEY, f"{level} sets both passphrase and passphrase_file")
    return (given[0], values[given[0]]) if given else None


def _upstream_url(value: Any) -> str | None:
    if value in (None, "", "off"):
        return None
    if not isinstance(value, str):
        raise ConfigError("upstream", f"expected a URL, got {type(value).__name__}")
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("moqt", "moql", "https") or not rest.strip("/"):
        # Never echo the value: a relay URL may carry a token in its query.
        raise ConfigError("upstream", "expected a moqt://, moql:// or https:// URL with a host")
    return value


def _fingerprint(value: Any) -> str | None:
    if value in (None, ""):
        return None
    text = str(value).replace(":", "").strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ConfigError("upstream_fingerprint", "expected 64 hex digits (a SHA-256)")
    return text


def load_config(
    file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> GatewayConfig:
    """Build the configuration: defaults, then the TOML `file` (if any), then `environ`
    (`os.environ` when None; only `MOQSRT_PASSPHRASE` is read), then `overrides`.

    `overrides` maps keys to raw values (strings as typed on the command line); None values
    are ignored. The passphrase comes from the highest level that sets one: flags
    (`passphrase` or `passphrase_file`, not both), the environment, then the file (likewise);
    an empty value there means unencrypted. Raises ConfigError for unknown keys, bad values and
    unreadable files.
    """
    raw: dict[str, Any] = {}
    if file is not None:
        try:
            with file.open("rb") as handle:
                data = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError("config", f"cannot read {file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config", f"{file} is not valid TOML: {exc}") from None
        raw.update(data)
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    for key in (*raw, *flags):
        if key not in KEYS:
            known = ", ".join(sorted(KEYS))
            raise ConfigError(key, f"unknown setting (known: {known})")
    source = _passphrase_source("the command line", flags)
    base: Path | None = None
    env_value = (os.environ if environ is None else environ).get(PASSPHRASE_ENV, "")
    if source is None and env_value:
        source = (PASSPHRASE_ENV, env_value)
    if source is None:
        source = _passphrase_source("the file", raw)
        base = None if file is None else file.parent
    _anchor_to_file(raw, flags, file)
    raw.update(flags)
    raw.pop("passphrase", None)
    raw.pop(PASSPHRASE_FILE_KEY, None)
    values: dict[str, Any] = {key: _coerce(key, value) for key, value in raw.items()}
    if source is not None:
        key, value = source
        if key == PASSPHRASE_FILE_KEY:
            values["passphrase"] = read_passphrase_file(key, value, base)
        else:
            values["passphrase"] = _check_passphrase(key, value)
    if "ledger" not in raw and "var_dir" in values:
        values["ledger"] = values["var_dir"] / "ledger.sqlite3"
    _resolve_webhook(values, os.environ if environ is None else environ)
    return GatewayConfig(**values)
