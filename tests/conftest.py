"""Shared fixtures for the service tests (tests/api, tests/core, tests/client, tests/cli,
tests/worker): kept small on purpose."""

from __future__ import annotations

import copy
import io
import json
import os
import socket
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.db import Database
from core.settings import Settings
from core.users import add_user

PG_URL = os.environ.get(
    "LORABOX_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("LORABOX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# One watched job (a real API and worker) shared by the suites that only read it.
pytest_plugins = ["tests.watched_job"]


def _reachable(url: str) -> bool:
    parsed = urlparse(url.replace("postgresql+psycopg", "postgresql"))
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), 2):
            return True
    except OSError:
        return False


def require(available: bool, message: str) -> None:
    """In CI something missing (a server, a binary, a browser) is a failure, never a skip;
    elsewhere the test skips."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set: these tests must run)")
    pytest.skip(message)


def require_server(url: str, what: str) -> None:
    require(_reachable(url), f"{what} is not reachable at {url}")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database per test session on the shared server, dropped afterwards."""
    with fresh_postgres_database() as url:
        yield url


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database on the shared server for as long as the block runs.

    Stacks that run their own worker take one each, so a reconciler never sees
    (and re-sends) another test's queued jobs.
    """
    require_server(PG_URL, "PostgreSQL")
    import sqlalchemy as sa

    name = f"lorabox_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_server(REDIS_URL, "Redis")
    return REDIS_URL


def png_bytes(
    width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def zip_bytes(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="session")
def make_png() -> Callable[..., bytes]:
    return png_bytes


@pytest.fixture(scope="session")
def make_zip() -> Callable[..., bytes]:
    return zip_bytes


@pytest.fixture(scope="session")
def good_dataset_zip() -> bytes:
    """Two concept folders, captions in UTF-8, different aspect ratios."""
    files: dict[str, bytes] = {}
    for i in range(4):
        files[f"3_cat/{i}.png"] = png_bytes(64 + 16 * i, 64, (i * 40, 100, 50))
        files[f"3_cat/{i}.txt"] = f"a photo of a cat, number {i}".encode()
    files["dog/0.png"] = png_bytes(64, 64)
    files["dog/0.txt"] = "ein Hund, schön".encode()
    return zip_bytes(files)


SEED = json.loads((Path(__file__).parent / "api" / "seed_payload.json").read_text())


def small_payload(**overrides: Any) -> dict[str, Any]:
    """The seed payload scaled down to train in seconds on the miniature SDXL."""
    payload = copy.deepcopy(SEED)
    payload.update(
        epoch=2, train_batch_size=1, max_resolution="64,64", min_bucket_reso=64,
        max_bucket_reso=128, bucket_reso_steps=32, network_dim=4, network_alpha=4,
        save_every_n_epochs=1, optimizer="AdamW", mixed_precision="no", save_precision="fp16",
        xformers="none", cache_latents=True,
    )  # fmt: skip
    payload.update(overrides)
    return payload


@dataclass
class Service:
    client: TestClient
    settings: Settings
    tokens: dict[str, str] = field(default_factory=dict)

    def as_(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def upload(self, user: str, data: bytes, **form: str) -> httpx.Response:
        return self.client.post(
            "/v1/datasets", headers=self.as_(user), files={"file": ("set.zip", data)}, data=form
        )

    def dataset(self, user: str, data: bytes, **form: str) -> str:
        response = self.upload(user, data, **form)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def submit(self, user: str, body: dict[str, Any], **headers: str) -> httpx.Response:
        return self.client.post("/v1/jobs", headers={**self.as_(user), **headers}, json=body)


def _make_service(settings: Settings) -> Iterator[Service]:
    db = Database(settings.database_url)
    with db.writing() as session:
        tokens = {
            "alice": add_user(session, name="alice"),
            "bob": add_user(session, name="bob"),
            "admin": add_user(session, name="admin", admin=True),
        }
    db.dispose()
    with TestClient(create_app(settings)) as client:
        yield Service(client, settings, tokens)


@pytest.fixture(scope="session")
def make_service() -> Callable[[Settings], Iterator[Service]]:
    """``make_service(settings)``: users alice, bob and admin, and the app in a TestClient."""
    return _make_service


@pytest.fixture(scope="session")
def payload() -> Callable[..., dict[str, Any]]:
    """``payload(**overrides)``: the scaled-down seed payload."""
    return small_payload


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir with the real miniature SDXL (written once per session)."""
    from trainer.models.tiny import write_tiny_sdxl

    models = tmp_path_factory.mktemp("models")
    write_tiny_sdxl(models)
    return models
