"""uvicorn's httptools protocol, with TCP_NODELAY on every connection.

asyncio turns Nagle's algorithm off only on sockets whose ``proto`` is IPPROTO_TCP, and the
listening sockets ``lorabox api --workers N`` serves on (api/serving.py, or uvicorn's own where
there is no SO_REUSEPORT) have ``proto`` 0. A response leaves as two writes (head, then body),
so with Nagle on, every body waited for the client's delayed ACK: 40 ms on each request
(bench/poll_status.py with ``--workers 2``).
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
