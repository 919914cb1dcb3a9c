"""The MoQ listener's self-signed certificate, kept on disk and renewed before it expires.

Browsers accept a WebTransport server by certificate hash only for an ECDSA certificate valid
at most 14 days, so `moqsrt serve` without a configured certificate keeps one under
`<var_dir>/moq/` (`cert.pem`, `key.pem` mode 0600): `ensure_self_signed` reuses it while it
has more than `RENEW_BEFORE_S` left and writes a fresh one otherwise (at start-up, and from
`renew_loop` while serving, which hands each new one to the listener).
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Final

import structlog

from gateway.moq.cert import Certificate, generate_certificate, load_certificate

__all__ = ["RENEW_BEFORE_S", "SELF_SIGNED_DAYS", "ensure_self_signed", "renew_loop"]

SELF_SIGNED_DAYS: Final = 13
"""Validity of a generated certificate (days; under the 14-day browser limit)."""

RENEW_BEFORE_S: Final = 3 * 86400.0
"""A kept certificate with less than this left (seconds) is replaced."""

_CHECK_EVERY_S: Final = 3600.0
_log = structlog.get_logger("moqsrt.moq.cert")


def _remaining_s(cert: Certificate, now: datetime.datetime) -> float:
    return (cert.certificate.not_valid_after_utc - now).total_seconds()


def ensure_self_signed(
    var_dir: Path,
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    *,
    now: datetime.datetime | None = None,
) -> tuple[Certificate, bool]:
    """The certificate kept under `var_dir/moq/`, renewed when missing, unreadable or within
    `RENEW_BEFORE_S` of expiry; returns it and whether it is new. Raises `OSError` when the
    directory cannot be written."""
    now = now or datetime.datetime.now(datetime.UTC)
    directory = var_dir / "moq"
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if cert_path.exists() and key_path.exists():
        try:
            kept = load_certificate(cert_path, key_path)
        except (ValueError, OSError) as exc:
            _log.warning("moq.cert_unreadable", path=str(cert_path), error=str(exc))
        else:
            if _remaining_s(kept, now) > RENEW_BEFORE_S:
                return kept, False
    directory.mkdir(parents=True, exist_ok=True)
    fresh = generate_certificate(hosts, valid_days=SELF_SIGNED_DAYS)
    key_path.unlink(missing_ok=True)  # write() creates it with mode 0600
    fresh.write(directory)
    _log.info("moq.cert_generated", path=str(cert_path), fingerprint=fresh.fingerprint)
    return fresh, True


async def renew_loop(
    var_dir: Path,
    current: Certificate,
    install: Callable[[Certificate], None],
    *,
    check_every_s: float = _CHECK_EVERY_S,
) -> None:
    """While serving: check every `check_every_s` and, when `current` is due, renew it and
    `install` the new one (new connections get it; the SHA-256 changes, so clients pinning
    the old hash must fetch the new one). Runs until cancelled."""
    while True:
        await asyncio.sleep(check_every_s)
        now = datetime.datetime.now(datetime.UTC)
        if _remaining_s(current, now) > RENEW_BEFORE_S:
            continue
        current, _ = ensure_self_signed(var_dir, now=now)
        install(current)
        _log.info("moq.cert_renewed", fingerprint=current.fingerprint)
