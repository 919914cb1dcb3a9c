"""The operator's HTTP surface: the status page (`/`), Prometheus `/metrics` and the JSON API
(`/api/v1/...`).

`GatewaySources` (`gateway.http.sources`) gathers what is reported (origin, stats, the SRT and
MoQ servers, recent records, the ledger's hooks, the ports the page names); `HttpService`
(`gateway.http.app`) serves it with aiohttp; `GatewayCollector` (`gateway.http.metrics`) turns
it into metrics at scrape time; `gateway.http.page` renders the status page and
`gateway.http.thumbnails` makes its keyframe thumbnails.

```python
sources = GatewaySources(origin, stats)
sources.add_srt(server)                               # once bound; give it sources.record_session
async with await HttpService.bind("127.0.0.1", 8080, sources) as http:
    ...
```
"""

from __future__ import annotations

from gateway.http.app import HttpService, TokenRequired, is_loopback
from gateway.http.metrics import GatewayCollector, metrics_registry
from gateway.http.sources import GatewaySources, LiveSession, UsageReader, read_catalog

__all__ = [
    "GatewayCollector",
    "GatewaySources",
    "HttpService",
    "LiveSession",
    "TokenRequired",
    "UsageReader",
    "is_loopback",
    "metrics_registry",
    "read_catalog",
]
