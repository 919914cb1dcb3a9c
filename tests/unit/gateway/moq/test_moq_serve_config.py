"""`moqsrt serve`'s MoQ settings and its kept self-signed certificate."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from gateway.moq.cert import MAX_PINNED_VALIDITY_DAYS
from gateway.moq.certstore import RENEW_BEFORE_S, ensure_self_signed
from gateway.moq.client import parse_moq_url
from gateway.serve import moq_try_it


def test_moq_is_served_on_udp_4443_by_default_and_off_turns_it_off() -> None:
    assert load_config().moq == ("0.0.0.0", 4443)
    assert load_config(None, {"moq": "off"}).moq is None


def test_upstream_urls_are_checked_without_echoing_them() -> None:
    assert load_config(None, {"upstream": "moqt://relay:4443/x"}).upstream == "moqt://relay:4443/x"
    assert load_config(None, {"upstream": ""}).upstream is None
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"upstream": "rtmp://relay/live?token=s3cret"})
    assert caught.value.key == "upstream"
    assert "s3cret" not in str(caught.value)


def test_the_upstream_fingerprint_is_64_hex_digits_colons_allowed() -> None:
    hexed = "AB:" * 31 + "AB"
    assert load_config(None, {"upstream_fingerprint": hexed}).upstream_fingerprint == "ab" * 32
    with pytest.raises(ConfigError, match="64 hex"):
        load_config(None, {"upstream_fingerprint": "abc"})


async def test_a_moq_certificate_needs_its_key_before_anything_is_bound() -> None:
    from gateway.serve import serve

    with pytest.raises(ConfigError, match="together") as caught:
        await serve(load_config(None, {"moq_cert": "cert.pem", "srt": "127.0.0.1:0"}))
    assert caught.value.key == "moq_cert"


def test_moq_certificate_settings_are_paths() -> None:
    config = load_config(None, {"moq_cert": "c.pem", "moq_key": "k.pem", "var_dir": "/tmp/v"})
    assert (config.moq_cert, config.moq_key, config.var_dir) == (
        Path("c.pem"),
        Path("k.pem"),
        Path("/tmp/v"),
    )


def test_the_self_signed_certificate_is_kept_then_renewed_before_it_expires(
    tmp_path: Path,
) -> None:
    first, new = ensure_self_signed(tmp_path)
    assert new
    validity = first.certificate.not_valid_after_utc - first.certificate.not_valid_before_utc
    assert validity <= datetime.timedelta(days=MAX_PINNED_VALIDITY_DAYS)
    kept, new = ensure_self_signed(tmp_path)
    assert not new
    assert kept.fingerprint == first.fingerprint
    due = first.certificate.not_valid_after_utc - datetime.timedelta(seconds=RENEW_BEFORE_S - 60)
    renewed, new = ensure_self_signed(tmp_path, now=due)
    assert new
    assert renewed.fingerprint != first.fingerprint
    assert ensure_self_signed(tmp_path)[0].fingerprint == renewed.fingerprint


def test_an_unreadable_kept_certificate_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "moq").mkdir()
    (tmp_path / "moq" / "cert.pem").write_text("garbage")
    (tmp_path / "moq" / "key.pem").write_text("garbage")
    cert, new = ensure_self_signed(tmp_path)
    assert new
    assert (tmp_path / "moq" / "cert.pem").read_bytes() == cert.certificate_pem()


def test_the_banner_pins_only_a_self_signed_certificate() -> None:
    pinned = moq_try_it("0.0.0.0", 4443, "ab" * 32, self_signed=True)
    assert 'moq.Client("moqt://127.0.0.1:4443", tls_fingerprints=[' + repr("ab" * 32) in pinned
    assert "tls_fingerprints" not in moq_try_it("gw.example", 4443, "ab" * 32, self_signed=False)


@pytest.mark.parametrize(
    ("url", "webtransport", "port", "path_query"),
    [
        ("moqt://relay.example:4443", False, 4443, "/"),
        ("moql://relay.example/a", False, 443, "/a"),
        ("https://relay.example:8443/live?jwt=x", True, 8443, "/live?jwt=x"),
    ],
)
def test_moq_urls_parse_into_transport_port_and_path(
    url: str, webtransport: bool, port: int, path_query: str
) -> None:
    parsed = parse_moq_url(url)
    assert (parsed.webtransport, parsed.port, parsed.path_query) == (webtransport, port, path_query)
    assert "jwt" not in parsed.redacted


@pytest.mark.parametrize("url", ["http://relay/", "moqt:///nohost", "relay:4443"])
def test_bad_moq_urls_are_value_errors(url: str) -> None:
    with pytest.raises(ValueError, match="MoQ URL"):
        parse_moq_url(url)


def test_a_moq_address_in_use_is_one_line_naming_moq_and_exit_2(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        argv = ["serve", "--srt", "127.0.0.1:0", "--moq", f"127.0.0.1:{port}"]
        ran = subprocess.run(
            [sys.executable, "-m", "gateway.cli", *argv, "--var-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[4],
        )
    assert ran.returncode == 2, ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert lines[-1].startswith("moqsrt serve: moq: cannot listen on 127.0.0.1:"), lines
