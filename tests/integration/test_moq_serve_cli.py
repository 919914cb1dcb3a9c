"""`moqsrt serve` serves MoQ by default: with no certificate configured it makes a self-signed
ECDSA one under the var directory (at most 14 days, kept across restarts), prints its SHA-256
and a moq-rs client snippet; that snippet, run as printed, reads an SRT-published broadcast.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import moq
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.conftest import (
    HOST,
    ROOT,
    Proc,
    Procs,
    ffmpeg_publish_argv,
    poll_until,
)

PATH = "live/test"  # the path the printed snippet reads


def start_serve(procs: Procs, tmp_path: Path, name: str) -> tuple[Proc, Path]:
    out = tmp_path / f"{name}.stdout"
    with out.open("wb") as stdout:
        proc = procs.start(
            name,
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                "--srt",
                f"{HOST}:0",
                "--moq",
                f"{HOST}:0",
                "--var-dir",
                str(tmp_path / "var"),
                "--http",
                f"{HOST}:0",
                "--log-format",
                "json",
            ],
            stdout=stdout,
            limit_s=120,
        )
    return proc, out


def find(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match is not None, (pattern, text)
    return match.group(1)


def parse_banner(text: str) -> tuple[int, int, str, str]:
    """(SRT port, MoQ port, fingerprint, the Python snippet dedented) from serve's stdout."""
    end = "asyncio.run(main())"
    tail = text.split("in Python:\n", 1)[1]
    return (
        int(find(r"srt://[\d.]+:(\d+)", text)),
        int(find(r"serving MoQ on udp/(\d+)", text)),
        find(r"certificate sha256: ([0-9a-f]{64})", text),
        textwrap.dedent(tail[: tail.index(end) + len(end)]),
    )


async def banner(proc: Proc, out: Path) -> tuple[int, int, str, str]:
    """Wait for both banners and parse them."""
    text = ""

    def complete() -> bool:
        nonlocal text
        assert proc.running(), proc.stderr()
        text = out.read_text()
        return "asyncio.run(main())" in text and "srt://" in text

    await poll_until(complete, 20)
    return parse_banner(text)


async def read_frames(port: int, fingerprint: str, want: int) -> int:
    async with moq.Client(f"moqt://{HOST}:{port}", tls_fingerprints=[fingerprint]) as client:
        async for announced in client.announced():
            if announced.prefix.strip("/") == PATH and announced.active:
                break
        broadcast = await client.request_broadcast(PATH)
        catalog = await broadcast.catalog()
        (video,) = list(catalog.video)
        track = await broadcast.subscribe_track(video)
        got = 0
        async for group in track:
            async for _frame in group:
                got += 1
                if got >= want:
                    return got
    return got


async def test_moq_serve_prints_a_pinned_certificate_and_a_snippet_that_reads_srt_media(
    procs: Procs, tmp_path: Path
) -> None:
    serve, out = start_serve(procs, tmp_path, "serve")
    srt_port, moq_port, fingerprint, snippet = await banner(serve, out)

    # The kept certificate: ECDSA, at most 14 days, and the printed hash is its DER's SHA-256.
    cert = x509.load_pem_x509_certificate((tmp_path / "var" / "moq" / "cert.pem").read_bytes())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 14
    assert cert.fingerprint(hashes.SHA256()).hex() == fingerprint
    assert (tmp_path / "var" / "moq" / "key.pem").stat().st_mode & 0o077 == 0

    publisher = procs.start(
        "ffmpeg-publish", ffmpeg_publish_argv(srt_port, f"#!::r={PATH},m=publish")
    )
    async with asyncio.timeout(20):
        assert await read_frames(moq_port, fingerprint, 30) == 30
    # The printed snippet, run as printed, connects with the printed pin and reads the catalog.
    ran = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", snippet],
        capture_output=True,
        timeout=30,
        cwd=ROOT,
    )
    assert ran.returncode == 0, ran.stderr.decode(errors="replace")
    assert b"avc" in ran.stdout, ran.stdout
    publisher.stop()

    # SIGINT ends serve cleanly; a restart keeps the certificate (same pin).
    serve.stop()
    assert await serve.wait(15) == 0, serve.stderr()
    again, again_out = start_serve(procs, tmp_path, "serve-again")
    assert (await banner(again, again_out))[2] == fingerprint
    again.stop()
    assert await again.wait(15) == 0, again.stderr()
