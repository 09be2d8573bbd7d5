"""`lorabox api --workers N`: connections to the sockets its workers serve on get TCP_NODELAY,
or each response body waits for the client's delayed ACK (40 ms)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest
import uvicorn

from api.serving import bind_listeners


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _own_listener(_config: uvicorn.Config) -> socket.socket:
    return bind_listeners("127.0.0.1", 0, 1)[0]


def _uvicorns_listener(config: uvicorn.Config) -> socket.socket:
    return config.bind_socket()


async def _nodelay_of_a_served_connection(bind: Callable[[uvicorn.Config], socket.socket]) -> int:
    config = uvicorn.Config(
        _hello, host="127.0.0.1", port=0, loop="asyncio", lifespan="off", log_level="warning",
        http="api.http_protocol:NoDelayHttpToolsProtocol",
    )  # fmt: skip
    server = uvicorn.Server(config)
    sock = bind(config)  # proto 0, not IPPROTO_TCP
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


@pytest.mark.parametrize("bind", [_own_listener, _uvicorns_listener])
def test_connections_on_the_workers_sockets_have_nagle_off(
    bind: Callable[[uvicorn.Config], socket.socket],
) -> None:
    assert asyncio.run(_nodelay_of_a_served_connection(bind)) == 1
