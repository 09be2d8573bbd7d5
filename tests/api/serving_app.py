"""`api.serving.Supervisor` serving an app that answers with its process id (dies on
``/crash``, hangs on ``/hang``), for test_serving.py. Prints the port it listens on, then
serves until SIGINT/SIGTERM.

python -m tests.api.serving_app WORKERS [APP]
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from api.serving import Supervisor, bind_listeners

OPTIONS: dict[str, Any] = dict(
    loop="asyncio", lifespan="off", log_level="warning",
    http="api.http_protocol:NoDelayHttpToolsProtocol",
)  # fmt: skip


async def pid_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["path"] == "/crash":
        os._exit(1)
    if scope["path"] == "/hang":  # an in-flight request a graceful stop waits for
        await asyncio.sleep(3600)
    body = str(os.getpid()).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main(workers: int, app: str) -> int:
    listeners = bind_listeners("127.0.0.1", 0, workers)
    print(listeners[0].getsockname()[1], flush=True)
    return Supervisor(listeners, {**OPTIONS, "app": app}).run()


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(int(args[0]), args[1] if len(args) > 1 else "tests.api.serving_app:pid_app"))
