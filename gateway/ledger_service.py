"""The ledger and webhook as `moqsrt serve` runs them, around the servers' sessions.

`usage_ledger(config, stats)` is an async context manager that opens the configured `Ledger`,
starts its periodic flushes (on the ledger's own thread), runs the `WebhookSink` as a task and
yields the `Ledger` (None with the ledger off), whose `record_session` the servers take as a
session sink. `serve` enters it once the SRT listener is bound, and leaves it after the SRT and
MoQ servers have ended every session (SIGTERM/SIGINT), so that on exit it stops the webhook,
then flushes their records a last time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog

from gateway.config import GatewayConfig
from gateway.ledger import Ledger
from gateway.webhook import WebhookSink, redact_url
from model import StatsHandle

__all__ = ["usage_ledger"]

_log = structlog.get_logger("moqsrt.ledger")

WEBHOOK_STOP_S = 5.0
"""How long shutdown waits for a webhook request in flight before cancelling it."""


@contextlib.asynccontextmanager
async def usage_ledger(config: GatewayConfig, stats: StatsHandle) -> AsyncIterator[Ledger | None]:
    """Run the ledger (and webhook) of `config` around the block; yield the ledger (None when
    off). Raises `LedgerError` when the ledger file cannot be used."""
    if config.ledger is None:
        if config.webhook_url is not None:
            _log.warning("webhook.off", detail="the webhook sends from the ledger, which is off")
        yield None
        return
    ledger = await Ledger.open(
        config.ledger, stats, node=config.node, interval_s=config.ledger_interval_ms / 1000
    )
    tasks: list[asyncio.Task[None]] = []
    webhook: WebhookSink | None = None
    try:
        ledger.start()
        if config.webhook_url is not None and config.webhook_secret:
            webhook = WebhookSink(ledger, config.webhook_url, config.webhook_secret.encode())
            _log.info("webhook.sending", url=redact_url(config.webhook_url))
            tasks.append(asyncio.create_task(webhook.run(), name="webhook"))
        yield ledger
    finally:
        if webhook is not None:
            # Let a request in flight finish, so that its cursor is stored (no resend).
            await webhook.stop()
            await asyncio.wait(tasks, timeout=WEBHOOK_STOP_S)
        for task in tasks:
            task.cancel()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if not isinstance(result, asyncio.CancelledError | None):
                _log.error("ledger.task_failed", error=repr(result))
        await ledger.aclose()
