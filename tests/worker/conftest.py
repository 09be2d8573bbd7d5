"""End-to-end fixtures: a real Celery worker process training the miniature SDXL.

One stack per broker kind per session; tests that only read a finished job share one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.db import Database
from core.db.migrate import upgrade
from core.settings import Settings
from core.users import add_user
from tests.conftest import fresh_postgres_database

TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class Stack:
    client: Any  # TestClient (in-process API) or httpx.Client (API process)
    settings: Settings
    tokens: dict[str, str]
    logs: list[Path]

    def as_(self, user: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def dataset(self, data: bytes, user: str = "alice") -> str:
        response = self.client.post(
            "/v1/datasets", headers=self.as_(user), files={"file": ("d.zip", data)}
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def submit(self, body: dict[str, Any], user: str = "alice") -> dict[str, Any]:
        response = self.client.post("/v1/jobs", headers=self.as_(user), json=body)
        assert response.status_code == 202, response.text
        return dict(response.json())

    def job(self, job_id: str, user: str = "alice") -> dict[str, Any]:
        return dict(self.client.get(f"/v1/jobs/{job_id}", headers=self.as_(user)).json())

    def artifacts(self, job_id: str, user: str = "alice") -> list[dict[str, Any]]:
        response = self.client.get(f"/v1/jobs/{job_id}/artifacts", headers=self.as_(user))
        return list(response.json()["items"])

    def wait(
        self, job_id: str, until: Callable[[dict[str, Any]], bool], timeout_s: float = 300
    ) -> tuple[dict[str, Any], list[str]]:
        """Polls until ``until(job)``; returns the job and every status seen on the way."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if not seen or seen[-1] != job["status"]:
                seen.append(job["status"])
            if until(job):
                return job, seen
            time.sleep(0.2)
        raise AssertionError(f"timed out; statuses {seen}; logs:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.logs if p.exists())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(settings: Settings) -> dict[str, str]:
    return os.environ | {
        "LORABOX_HOME": str(settings.home),
        "LORABOX_MODELS_DIR": str(settings.models_dir),
        "LORABOX_DATABASE_URL": settings.database_url,
        "LORABOX_BROKER_URL": settings.broker_url,
        "LORABOX_QUEUE_NAME": settings.queue_name,
        "LORABOX_PROGRESS_INTERVAL_S": str(settings.progress_interval_s),
        "LORABOX_FLAG_POLL_INTERVAL_S": str(settings.flag_poll_interval_s),
        "LORABOX_TRAINER_START_METHOD": settings.trainer_start_method,
    }


def spawn(args: list[str], settings: Settings, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """``lorabox ARGS`` with the settings (and any other LORABOX_* ``env``), output to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args],
            env=service_env(settings) | env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: teardown stops it and its trainer
        )


def wait_healthy(client: httpx.Client, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.2)


@contextlib.contextmanager
def served(
    settings: Settings, *, worker: bool = True, **env: str
) -> Iterator[tuple[httpx.Client, list[Path]]]:
    """A `lorabox api` process on a free port (and a `lorabox worker`), healthy; a client on
    it and the processes' logs. Both are stopped on exit."""
    port = free_port()
    logs = [settings.home / "api.log"] + ([settings.home / "worker.log"] if worker else [])
    processes = [spawn(["api", "--port", str(port)], settings, logs[0], **env)]
    if worker:
        processes.append(spawn(["worker"], settings, logs[1], **env))
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        wait_healthy(client, logs[0])
        yield client, logs
    finally:
        client.close()
        for process in reversed(processes):
            stop(process)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def prepare(settings: Settings) -> dict[str, str]:
    settings.ensure_dirs()
    upgrade(settings.database_url)
    db = Database(settings.database_url, pool_size=1)
    with db.writing() as session:
        tokens = {name: add_user(session, name=name) for name in ("alice", "bob")}
        tokens["admin"] = add_user(session, name="admin", admin=True)
    db.dispose()
    return tokens


@pytest.fixture(scope="session")
def e2e_zip(make_zip: Callable[..., bytes], make_png: Callable[..., bytes]) -> bytes:
    """One captioned image: each epoch is one step, so a run takes seconds."""
    return make_zip({"1_toy/a.png": make_png(64, 64, (10, 200, 90)), "1_toy/a.txt": b"a toy"})


@pytest.fixture(scope="session")
def e2e_payload(payload: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    def build(**overrides: Any) -> dict[str, Any]:
        return payload(max_resolution="64,64", **overrides)

    return build


@pytest.fixture(scope="session")
def embedded_stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_models_dir: Path
) -> Iterator[Stack]:
    """SQLite + the kombu SQLAlchemy broker; API in-process, one real `lorabox worker`."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    home = tmp_path_factory.mktemp("embedded-home")
    settings = Settings(home=home, models_dir=tiny_models_dir, progress_interval_s=0.5,
                        flag_poll_interval_s=0.2)  # fmt: skip
    tokens = prepare(settings)
    log = home / "worker.log"
    worker = spawn(["worker"], settings, log)
    try:
        with TestClient(create_app(settings)) as client:
            yield Stack(client, settings, tokens, [log])
    finally:
        stop(worker)


@pytest.fixture(scope="session")
def production_stack(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_models_dir: Path,
    redis_url: str,
) -> Iterator[Stack]:
    """Postgres + Redis with separate API and worker processes, as in docker-compose; trainers
    are spawned, as on a GPU box (every other stack forks them from the fork server)."""
    with fresh_postgres_database() as postgres_url:
        yield from _production_stack(tmp_path_factory, tiny_models_dir, postgres_url, redis_url)


def _production_stack(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_models_dir: Path,
    postgres_url: str,
    redis_url: str,
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("production-home")
    queue = f"lorabox-test-{uuid.uuid4().hex[:8]}"  # the shared Redis may serve others too
    settings = Settings(home=home, models_dir=tiny_models_dir, database_url=postgres_url,
                        broker_url=redis_url, queue_name=queue, progress_interval_s=0.5,
                        flag_poll_interval_s=0.2,
                        trainer_start_method="spawn")  # fmt: skip  # as on a GPU box
    tokens = prepare(settings)
    try:
        with served(settings) as (client, logs):
            yield Stack(client, settings, tokens, logs)
    finally:
        import redis

        redis.Redis.from_url(redis_url).delete(queue)
