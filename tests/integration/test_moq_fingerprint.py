"""`GET /certificate.sha256` on TCP at the MoQ port: what browsers (`@moq/watch`) and moq-rs
clients fetch for an `http://` URL before they dial WebTransport pinned to that hash.

The digest is computed here from the certificate's DER (hashlib), not taken from the gateway;
a moq-rs client given only `http://host:port/` (no fingerprint, no CA) must get through.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib

import aiohttp
import moq
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.moq.cert import Certificate, generate_certificate
from gateway.moq.server import MoqServer, is_self_signed
from model import BroadcastProducer, Origin
from tests.integration.moq_helpers import HOST, run_moq
from tests.integration.test_moq_server import announced_paths


def der_sha256(cert: Certificate) -> str:
    return hashlib.sha256(cert.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def ca_issued() -> Certificate:
    """A leaf signed by a (throwaway) CA, with the CA in its chain: not self-signed."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])

    def build(subject: x509.Name, public: ec.EllipticCurvePublicKey) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=5))
            .sign(ca_key, hashes.SHA256())
        )

    ca = build(ca_name, ca_key.public_key())
    return Certificate(build(leaf_name, key.public_key()), key, (ca,))


async def fetch(port: int) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
        http.get(f"http://{HOST}:{port}/certificate.sha256") as response,
    ):
        return (
            response.status,
            await response.text(),
            response.headers.get("Access-Control-Allow-Origin", ""),
        )


async def test_a_self_signed_listener_serves_its_hash_and_an_http_url_gets_through() -> None:
    origin, broadcast = Origin(), BroadcastProducer()
    origin.publish("live/a", broadcast)
    broadcast.create_track("data")
    async with run_moq(origin) as mq:
        assert mq.server.fingerprint_port == mq.port  # TCP, the same port number as UDP
        status, body, cors = await fetch(mq.port)
        assert (status, body, cors) == (200, der_sha256(mq.certificate), "*")

        # moq-rs, told nothing but the http:// URL, fetches the hash and pins it.
        client = moq.Client(f"http://{HOST}:{mq.port}/", reconnect=False, websocket_enabled=False)
        async with asyncio.timeout(20), client as connected:
            assert await announced_paths(connected, 1) == ["live/a"]

        # A renewed certificate is served at once.
        renewed = generate_certificate()
        mq.server.set_certificate(renewed)
        assert (await fetch(mq.port))[1] == der_sha256(renewed) != der_sha256(mq.certificate)

        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.get(f"http://{HOST}:{mq.port}/cert.pem") as other,
        ):
            assert other.status == 404  # nothing else is served
        broadcast.finish()


@pytest.mark.parametrize(
    ("certificate", "fingerprint_http"),
    [(ca_issued(), None), (generate_certificate(), False)],
    ids=["ca-issued", "turned-off"],
)
async def test_no_endpoint_for_a_ca_issued_certificate_or_when_turned_off(
    certificate: Certificate, fingerprint_http: bool | None
) -> None:
    assert is_self_signed(certificate) is (fingerprint_http is False)
    server = await MoqServer.bind(
        (HOST, 0), certificate=certificate, origin=Origin(), fingerprint_http=fingerprint_http
    )
    async with server:
        assert server.fingerprint_port is None
        with pytest.raises(aiohttp.ClientConnectionError):
            await fetch(server.port)


async def test_a_taken_tcp_port_leaves_moq_served_without_the_endpoint() -> None:
    blocker = await asyncio.start_server(lambda r, w: w.close(), HOST, 0)
    port = blocker.sockets[0].getsockname()[1]
    try:
        async with await MoqServer.bind(
            (HOST, port), certificate=generate_certificate(), origin=Origin()
        ) as server:
            assert server.port == port
            assert server.fingerprint_port is None
    finally:
        blocker.close()
        await blocker.wait_closed()
