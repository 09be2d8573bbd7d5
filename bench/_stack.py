"""Helpers shared by the benchmarks: a home, a migrated database, API/worker processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import sqlalchemy as sa

from core.db import Database
from core.db.migrate import upgrade
from core.settings import Settings
from core.users import add_user

PG_URL = os.environ.get(
    "LORABOX_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("LORABOX_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def fresh_postgres() -> tuple[str, str]:
    """A throwaway database on the server: (url, name)."""
    name = f"lorabox_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_URL.rsplit("/", 1)[0] + f"/{name}", name


def drop_postgres(name: str) -> None:
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def prepare(settings: Settings) -> str:
    """Migrates and adds an admin; returns its token."""
    settings.ensure_dirs()
    upgrade(settings.database_url)
    db = Database(settings.database_url, pool_size=1)
    with db.writing() as session:
        token = add_user(session, name=f"bench-{uuid.uuid4().hex[:6]}", admin=True)
    db.dispose()
    return token


def env(settings: Settings) -> dict[str, str]:
    return os.environ | {
        "LORABOX_HOME": str(settings.home),
        "LORABOX_MODELS_DIR": str(settings.models_dir),
        "LORABOX_DATABASE_URL": settings.database_url,
        "LORABOX_BROKER_URL": settings.broker_url,
        "LORABOX_QUEUE_NAME": settings.queue_name,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args], env=env(settings), stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def start_api(settings: Settings, workers: int = 1) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = start(
        ["api", "--port", str(port), "--workers", str(workers)], settings,
        settings.home / "api.log",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError((settings.home / "api.log").read_text())


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
