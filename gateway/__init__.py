"""moqsrt's edges to the outside: the SRT server (libsrt via ctypes), MoQ, HTTP, CLI, sinks.

The embedding API is re-exported here: `Server` and `run` (from `gateway.server`), `Publish`
(`gateway.publish`), `Subscribe` (`gateway.subscribe`), `AuthDecision` and `AuthHook`
(`gateway.auth`), `ServerConfig` (`gateway.server_config`), `SessionRecord` and `SessionSink`
(`gateway.session`), `StreamRequest` and `StreamIdError` (`gateway.streamid`). They load on
first use, so `import gateway.config` (or the CLI's start-up) does not pull in libsrt.

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
    from gateway.auth import AuthDecision, AuthHook
    from gateway.publish import Publish
    from gateway.server import Server, run
    from gateway.server_config import ServerConfig
    from gateway.session import SessionRecord, SessionSink
    from gateway.streamid import StreamIdError, StreamRequest
    from gateway.subscribe import Subscribe

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
    "AuthDecision": "gateway.auth",
    "AuthHook": "gateway.auth",
    "Publish": "gateway.publish",
    "Server": "gateway.server",
    "ServerConfig": "gateway.server_config",
    "Subscribe": "gateway.subscribe",
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
