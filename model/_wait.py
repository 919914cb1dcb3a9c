"""Wake-up lists: how producers (synchronous) wake consumers (async) on the loop thread.

A consumer that has nothing to read appends its own future to the state's list and awaits it;
the producer resolves every future in the list after a change. One future per waiter, so a
cancelled consumer only cancels its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("moqsrt.model")

Waiters = list["asyncio.Future[None]"]


def wake(waiters: Waiters) -> None:
    """Resolve and forget every waiting future (loop thread only)."""
    pending = waiters.copy()
    waiters.clear()
    for future in pending:
        if not future.done():
            # RuntimeError: the future's loop is closed (a finalizer firing at shutdown).
            with contextlib.suppress(RuntimeError):
                future.set_result(None)


async def wait(waiters: Waiters) -> None:
    """Register a future on `waiters` and wait until a producer calls `wake(waiters)`."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiters.append(future)
    try:
        await future
    except asyncio.CancelledError:
        with contextlib.suppress(ValueError):
            waiters.remove(future)
        raise


async def wait_many(lists: list[Waiters]) -> None:
    """Register one future on every list of `lists` and wait until a producer wakes any of
    them; the future leaves the other lists on the way out (woken, cancelled or not)."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    for waiters in lists:
        waiters.append(future)
    try:
        await future
    finally:
        for waiters in lists:
            with contextlib.suppress(ValueError):
                waiters.remove(future)


def safety_net(
    owner: object, callback: Callable[..., None], *args: Any
) -> weakref.finalize[..., Any]:
    """Call `callback(*args)` when `owner` is garbage collected (a `weakref.finalize`).

    `callback` must be a module-level function and `args` must not reference `owner`. Not run
    at interpreter exit: a process that stops with live producers has nobody left to tell.
    """
    finalizer = weakref.finalize(owner, callback, *args)
    finalizer.atexit = False
    return finalizer
