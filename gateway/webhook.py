"""The webhook sink: final session records POSTed from the ledger, signed, in order, retried.

`WebhookSink` reads session records from the `Ledger` after a durable cursor and POSTs each as
JSON, one per request, in ledger order. A 2xx answer moves the cursor (stored in the ledger),
anything else (or no answer) is retried with exponential backoff, so a receiver that was down
gets every record once it is back. It runs as its own task and only reads the ledger, so it
never blocks the data path. Delivery is at least once: a receiver that answered 2xx but whose
answer was lost gets that record again; `X-Moqsrt-Delivery` (node/session) is its dedup key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from urllib.parse import urlsplit

import aiohttp
import structlog

from gateway.ledger import Ledger
from gateway.ledger_db import LedgerRecord

__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "WebhookSink",
    "redact_url",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "X-Moqsrt-Signature"
"""`sha256=<hex HMAC-SHA256 of the raw request body under the shared secret>`."""

DELIVERY_HEADER = "X-Moqsrt-Delivery"
"""`<node>/<session>`: the record's unique key (a receiver deduplicates on it)."""

_log = structlog.get_logger("moqsrt.webhook")


def sign(secret: bytes, body: bytes) -> str:
    """The `X-Moqsrt-Signature` value of `body` under `secret`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    """True when `header` is the signature of `body` under `secret` (constant-time compare);
    what a receiver runs on every request."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


def redact_url(url: str) -> str:
    """`scheme://host[:port]/path` of `url`: credentials and query (tokens) left out, for
    logs and cursor names."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class WebhookSink:
    """POSTs every final session record of `ledger` to `url`, signed with `secret`.

    The body is `LedgerRecord.as_dict()` of a session record (`seq`, `kind`, `node`, `run`,
    `session`, `path`, `tier`, `role`, times, `groups`/`frames`/`bytes`, and `record`: the
    whole session record). Headers: `X-Moqsrt-Signature`, `X-Moqsrt-Delivery`,
    `Content-Type: application/json`. The cursor is stored in the ledger under
    `webhook:<redacted url>`, so a new URL starts from the ledger's first record.

    Retries wait `backoff_min_s`, doubling up to `backoff_max_s`; each request is bounded by
    `timeout_s`. `run()` delivers until `stop()` or cancellation; neither loses anything (the
    cursor only moves after a 2xx). The secret never appears in logs or reprs.
    """

    def __init__(
        self,
        ledger: Ledger,
        url: str,
        secret: bytes,
        *,
        timeout_s: float = 10.0,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 60.0,
        poll_s: float = 5.0,
        batch: int = 100,
    ) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise ValueError("webhook URL must be http:// or https:// with a host")
        if not secret:
            raise ValueError("webhook secret must not be empty")
        self._ledger = ledger
        self._url = url
        self._secret = secret
        self._timeout_s = timeout_s
        self._backoff = (backoff_min_s, backoff_max_s)
        self._poll_s = poll_s
        self._batch = batch
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self.cursor_name = f"webhook:{redact_url(url)}"
        """The name of this sink's cursor in the ledger."""
        self.delivered = 0
        """Records delivered (2xx) by this process."""
        self.attempts_failed = 0
        """Deliveries that failed and were retried."""
        ledger.on_write(self._wake.set)

    def __repr__(self) -> str:
        return f"WebhookSink({redact_url(self._url)!r})"

    async def run(self) -> None:
        """Deliver records as the ledger gets them, until `stop()` (after the record in hand
        is delivered and its cursor stored) or cancellation (the record in hand may then be
        sent again by the next run)."""
        timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            cursor = await self._ledger.get_cursor(self.cursor_name)
            while not self._stop.is_set():
                self._wake.clear()
                records = await self._ledger.read_since(cursor, limit=self._batch, kind="session")
                for record in records:
                    if not await self._deliver(http, record):
                        return
                    cursor = record.seq
                    await self._ledger.set_cursor(self.cursor_name, cursor)
                    if self._stop.is_set():
                        return
                if len(records) < self._batch:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._poll_s):
                            await self._wake.wait()

    async def stop(self) -> None:
        """Ask `run()` to return once the record in hand is delivered (a receiver that is down
        is not retried further). Await the run task afterwards, bounded by the request
        timeout, and cancel it past that."""
        self._stop.set()
        self._wake.set()

    async def _deliver(self, http: aiohttp.ClientSession, record: LedgerRecord) -> bool:
        """POST `record` until the receiver answers 2xx (True), with backoff between
        attempts; False when stopped while waiting to retry."""
        body = json.dumps(record.as_dict(), sort_keys=True, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, body),
            DELIVERY_HEADER: f"{record.node}/{record.session}",
        }
        delay, delay_max = self._backoff
        while True:
            try:
                async with http.post(self._url, data=body, headers=headers) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        self.delivered += 1
                        return True
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = type(exc).__name__
            self.attempts_failed += 1
            _log.warning(
                "webhook.retry",
                url=redact_url(self._url),
                seq=record.seq,
                session=record.session,
                problem=problem,
                retry_in_s=delay,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()
            if self._stop.is_set():
                return False
            delay = min(delay * 2, delay_max)
