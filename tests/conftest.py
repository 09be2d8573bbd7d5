"""Shared fixtures for the service tests (tests/api, tests/worker): kept small on purpose."""

from __future__ import annotations

import io
import os
import socket
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

PG_URL = os.environ.get(
    "LORABOX_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("LORABOX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(url: str) -> bool:
    parsed = urlparse(url.replace("postgresql+psycopg", "postgresql"))
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), 2):
            return True
    except OSError:
        return False


def require_server(url: str, what: str) -> None:
    """In CI a missing server is a failure, never a skip; elsewhere the test skips."""
    if _reachable(url):
        return
    message = f"{what} is not reachable at {url}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set: these tests must run)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database per test session on the shared server, dropped afterwards."""
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


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir with the real miniature SDXL (written once per session)."""
    from trainer.models.tiny import write_tiny_sdxl

    models = tmp_path_factory.mktemp("models")
    write_tiny_sdxl(models)
    return models
