"""An API process killed mid-upload and restarted (docs/reliability.md): the partial file goes,
no dataset exists for it, and a client retrying its submit with the same Idempotency-Key gets
the job it already created. A real `lorabox api` process, SIGKILLed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings
from tests.worker.conftest import free_port, prepare, spawn

pytestmark = pytest.mark.slow


def _start_api(settings: Settings, port: int) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    api = spawn(["api", "--port", str(port)], settings, settings.home / "api.log")
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.get("/healthz").status_code == 200:
                return api, client
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, (settings.home / "api.log").read_text()
        time.sleep(0.2)


def _send_half_an_upload(port: int, token: str, size: int) -> socket.socket:
    boundary = "lorabox-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    request = (
        "POST /v1/datasets HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(head) + size + len(tail)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(request + head + os.urandom(size // 2))  # half the file, then silence
    return sock


def _staged_bytes(tmp_dir: Path) -> int:
    return sum(p.stat().st_size for p in tmp_dir.rglob("*") if p.is_file())


def test_an_api_killed_mid_upload_leaves_nothing_and_an_idempotent_resubmit_makes_no_new_job(
    tmp_path: Path, tiny_models_dir: Path, make_zip: Any, make_png: Any, payload: Any
) -> None:
    e2e_zip = make_zip({"1_toy/a.png": make_png(64, 64), "1_toy/a.txt": b"a toy"})
    settings = Settings(home=tmp_path, models_dir=tiny_models_dir)
    tokens = prepare(settings)
    auth = {"Authorization": f"Bearer {tokens['alice']}"}
    port = free_port()
    api, client = _start_api(settings, port)
    try:
        up = client.post("/v1/datasets", headers=auth, files={"file": ("d.zip", e2e_zip)})
        assert up.status_code == 201, up.text
        body = {"dataset_id": up.json()["id"], "base_model": "tiny-sdxl", "params": payload()}
        first = client.post("/v1/jobs", headers=auth | {"Idempotency-Key": "k-1"}, json=body)
        assert first.status_code == 202, first.text

        sock = _send_half_an_upload(port, tokens["alice"], 8 * 1024 * 1024)
        deadline = time.monotonic() + 30
        while _staged_bytes(settings.tmp_dir) < 1024 * 1024:
            assert time.monotonic() < deadline, "the upload was not being staged"
            time.sleep(0.1)
        os.killpg(api.pid, signal.SIGKILL)
        api.wait()
        sock.close()
        assert _staged_bytes(settings.tmp_dir) > 0  # the crash left a partial file behind
        client.close()

        api, client = _start_api(settings, port)
        assert list(settings.tmp_dir.iterdir()) == []
        listed = client.get("/v1/datasets", headers=auth).json()["items"]
        assert [d["id"] for d in listed] == [up.json()["id"]]
        again = client.post("/v1/jobs", headers=auth | {"Idempotency-Key": "k-1"}, json=body)
        assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
        jobs = client.get("/v1/jobs", headers=auth).json()["items"]
        assert [j["id"] for j in jobs] == [first.json()["id"]]
    finally:
        client.close()
        if api.poll() is None:
            os.killpg(api.pid, signal.SIGKILL)
            api.wait()
