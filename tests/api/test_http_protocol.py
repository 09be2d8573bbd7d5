"""`lorabox api --workers N`: connections to the socket uvicorn binds for its workers get
TCP_NODELAY, or each response body waits for the client's delayed ACK (40 ms)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _nodelay_of_a_served_connection() -> int:
    config = uvicorn.Config(
        _hello, host="127.0.0.1", port=0, loop="asyncio", lifespan="off", log_level="warning",
        http="api.http_protocol:NoDelayHttpToolsProtocol",
    )  # fmt: skip
    server = uvicorn.Server(config)
    sock = config.bind_socket()  # what each worker process serves on: proto 0, not IPPROTO_TCP
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    reader, writer = await asyncio.open_connection(*sock.getsockname())
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    (connection,) = server.server_state.connections
    served = connection.transport.get_extra_info("socket")
    nodelay = int(served.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    writer.close()
    server.should_exit = True
    await serving
    return nodelay


def test_connections_on_the_workers_socket_have_nagle_off() -> None:
    assert asyncio.run(_nodelay_of_a_served_connection()) == 1
