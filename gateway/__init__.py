"""moqsrt's edges to the outside: the SRT server (libsrt via ctypes), MoQ, HTTP, CLI, sinks.

The embedding API is re-exported here: `Server`, `Publish`, `Subscribe`, `run`, `AuthDecision`,
`ServerConfig` (from `gateway.server`) and `SessionRecord` (from `gateway.session`). They load
on first use, so `import gateway.config` (or the CLI's start-up) does not pull in libsrt.

```python
from gateway import Server
from model import Origin, StatsHandle

origin, stats = Origin(), StatsHandle(node="gw-1")
async with await Server.bind("0.0.0.0:9000", latency_ms=200) as server:
    server.with_stats(stats)
    async for request in server:          # Publish or Subscribe, already past the handshake
        tasks.add(asyncio.create_task(request.accept(origin)))   # -> SessionRecord at the end
```
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.server import (
        AuthDecision,
        AuthHook,
        Publish,
        Server,
        ServerConfig,
        Subscribe,
        run,
    )
    from gateway.session import SessionRecord, SessionSink
    from gateway.streamid import StreamIdError, StreamRequest

__all__ = [
    "AuthDecision",
    "AuthHook",
    "Publish",
    "Server",
    "ServerConfig",
    "SessionRecord",
    "SessionSink",
    "StreamIdError",
    "StreamRequest",
    "Subscribe",
    "run",
]

_HOME = {
    "AuthDecision": "gateway.server",
    "AuthHook": "gateway.server",
    "Publish": "gateway.server",
    "Server": "gateway.server",
    "ServerConfig": "gateway.server",
    "Subscribe": "gateway.server",
    "run": "gateway.server",
    "SessionRecord": "gateway.session",
    "SessionSink": "gateway.session",
    "StreamIdError": "gateway.streamid",
    "StreamRequest": "gateway.streamid",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'gateway' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
