"""A moq-rs `Server` acting as a MoQ relay, run as its own process (so a test can kill it and
start it again on the same port): `python moq_upstream_relay.py HOST:PORT CERT KEY`.

Every session shares one origin: what a client publishes, other clients can read. Prints
`ready` once listening.
"""

from __future__ import annotations

import asyncio
import sys

import moq


async def main(bind: str, cert: str, key: str) -> None:
    if len(sys.argv) > 4:
        moq.log_level(sys.argv[4])
    async with moq.Server(bind, tls_cert=[cert], tls_key=[key]) as server:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await server.serve()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
