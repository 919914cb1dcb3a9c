"""WebTransport CONNECT handling, the close capsule, certificates and the session record."""

from __future__ import annotations

import datetime
import ipaddress
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.moq.cert import generate_certificate, load_certificate
from gateway.moq.record import BroadcastUsage, MoqSessionRecord
from gateway.moq.transport import QuicFigures
from gateway.moq.webtransport import (
    accept_headers,
    close_capsule,
    parse_close_capsule,
    parse_connect,
    parse_sf_string_list,
)
from gateway.moq.wire import Version

BOTH = (Version.LITE_03, Version.LITE_04)
MOQ_RS_OFFER = (
    b'"moq-lite-06", "moq-lite-05", "moq-lite-04", "moq-lite-03", "moql", "moqt-22", '
    b'"moqt-21", "moqt-20", "moqt-19", "moqt-18", "moqt-17", "moqt-16", "moqt-15", "moq-00"'
)


def connect_headers(
    path: bytes = b"/room/sub?jwt=abc", offer: bytes = MOQ_RS_OFFER
) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"CONNECT"),
        (b":protocol", b"webtransport"),
        (b":scheme", b"https"),
        (b":authority", b"localhost:15003"),
        (b":path", path),
        (b"wt-available-protocols", offer),
    ]


def test_the_captured_moq_rs_connect_picks_the_clients_first_common_version() -> None:
    request = parse_connect(connect_headers(), BOTH, "127.0.0.1:5000")
    assert not isinstance(request, int)
    assert request.version is Version.LITE_04  # the client's preference among ours
    assert request.path == "room/sub"
    assert request.query == {"jwt": "abc"}
    assert request.token == "abc"
    assert request.authority == "localhost:15003"
    assert request.transport == "webtransport"
    only03 = parse_connect(connect_headers(), (Version.LITE_03,), "")
    assert not isinstance(only03, int)
    assert only03.version is Version.LITE_03


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (connect_headers(offer=b'"moq-lite-06", "moql"'), 406),
        ([h for h in connect_headers() if h[0] != b"wt-available-protocols"], 406),
        ([(b":method", b"GET"), (b":path", b"/")], 405),
        (connect_headers(path=b"relative"), 400),
        (connect_headers(path=b"/" + b"a" * 5000), 400),
    ],
)
def test_connects_we_cannot_serve_are_refused_with_a_status(
    headers: list[tuple[bytes, bytes]], status: int
) -> None:
    assert parse_connect(headers, BOTH, "") == status


def test_accept_headers_name_the_protocol_as_a_quoted_sf_string() -> None:
    headers = dict(accept_headers(Version.LITE_03))
    assert headers[b":status"] == b"200"
    assert headers[b"wt-protocol"] == b'"moq-lite-03"'


def test_sf_string_lists_parse_quotes_escapes_and_parameters() -> None:
    assert parse_sf_string_list('"a", "b\\"c";q=1 ,  "d"') == ["a", 'b"c', "d"]
    assert parse_sf_string_list("") == []
    assert parse_sf_string_list('token, "x') == ["x"]


def test_the_close_capsule_is_the_captured_moq_rs_one() -> None:
    assert close_capsule(0, "no error") == bytes.fromhex("68430c00000000") + b"no error"


def test_generated_certificates_are_p256_with_both_sans_valid_at_most_14_days() -> None:
    cert = generate_certificate()
    x = cert.certificate
    key = x.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
    san = x.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    validity = x.not_valid_after_utc - x.not_valid_before_utc
    assert validity <= datetime.timedelta(days=14)
    assert x.not_valid_before_utc <= datetime.datetime.now(datetime.UTC)
    der = x.public_bytes(serialization.Encoding.DER)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    assert cert.fingerprint == digest.finalize().hex()
    assert "PRIVATE" not in repr(cert)


def test_certificate_validity_and_hosts_are_checked() -> None:
    with pytest.raises(ValueError, match="valid_days"):
        generate_certificate(valid_days=15)
    with pytest.raises(ValueError, match="host"):
        generate_certificate(())


def test_certificates_round_trip_through_pem_files(tmp_path: Path) -> None:
    cert = generate_certificate(("example.test",), valid_days=2)
    cert_path, key_path = cert.write(tmp_path)
    assert key_path.stat().st_mode & 0o077 == 0
    loaded = load_certificate(cert_path, key_path)
    assert loaded.fingerprint == cert.fingerprint


def test_the_record_flattens_like_the_srt_one_and_keeps_no_query() -> None:
    record = MoqSessionRecord(
        session="s1",
        node="n",
        path="room",
        tier="pro",
        peer="127.0.0.1:1",
        transport="webtransport",
        version="moq-lite-03",
        started_at=1.0,
        ended_at=2.0,
        duration_s=1.0,
        groups=2,
        frames=3,
        bytes=40,
        subscriptions=2,
        broadcasts=(BroadcastUsage(path="live/a", groups=2, frames=3, bytes=40),),
        quic=QuicFigures(bytes_sent=99, rtt_ms=1.5),
    )
    flat = record.as_dict()
    assert flat["role"] == "egress"
    assert flat["broadcasts"] == "live/a=2/3/40"
    assert flat["quic_bytes_sent"] == 99
    assert flat["wire_bytes"] == 99
    json.dumps(flat)


def test_close_capsules_parse_back_including_long_reasons() -> None:
    assert parse_close_capsule(close_capsule(0, "no error")) == (0, "no error")
    long = "x" * 300
    assert parse_close_capsule(close_capsule(7, long)) == (7, long)
    assert parse_close_capsule(b"\x00\x01") is None
    assert parse_close_capsule(close_capsule(1, "cut")[:-1]) is None


def test_the_request_repr_keeps_the_token_out() -> None:
    request = parse_connect(connect_headers(path=b"/r?jwt=s3cret"), BOTH, "")
    assert "s3cret" not in repr(request)
