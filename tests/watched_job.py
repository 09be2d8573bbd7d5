"""The watched-job stack: a real API process and a real worker on embedded defaults, and one
finished job that every test that only reads it shares. Its fixtures are registered for the
whole suite by tests/conftest.py.

The API runs as its own process (not a TestClient) because the CLI, the SSE stream, the
memory bench and the browser all need a real socket. Webhooks are allowed to 127.0.0.1 so
the webhook tests can run a receiver locally.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings
from tests.worker.conftest import Stack, prepare, served

TERMINAL = ("succeeded", "failed", "cancelled")
WEBHOOK_HOSTS = "127.0.0.1"


def write_corrupt_model(models: Path, name: str) -> None:
    """A checkpoint whose header passes the catalog but whose weights can't load: the job
    is accepted and then fails in the trainer."""
    header = json.dumps(
        {"model.diffusion_model.x": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}}
    ).encode()
    (models / f"{name}.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0")


@dataclass
class WatchStack(Stack):
    url: str = ""

    def cli(self, *args: str, user: str = "alice", timeout_s: float = 300) -> Any:
        env = os.environ | {"LORABOX_URL": self.url, "LORABOX_TOKEN": self.tokens[user]}
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def cli_background(self, *args: str, user: str = "alice") -> subprocess.Popen[str]:
        env = os.environ | {"LORABOX_URL": self.url, "LORABOX_TOKEN": self.tokens[user]}
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def get(self, path: str, user: str = "alice", **kwargs: Any) -> httpx.Response:
        response: httpx.Response = self.client.get(path, headers=self.as_(user), **kwargs)
        return response


@pytest.fixture(scope="session")
def watch_stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_models_dir: Path
) -> Iterator[WatchStack]:
    home = tmp_path_factory.mktemp("watch-home")
    models = home / "models"
    shutil.copytree(tiny_models_dir, models)
    write_corrupt_model(models, "corrupt-sdxl")
    settings = Settings(home=home, models_dir=models, progress_interval_s=0.3,
                        flag_poll_interval_s=0.2)  # fmt: skip
    tokens = prepare(settings)
    with served(settings, LORABOX_WEBHOOK_ALLOWED_HOSTS=WEBHOOK_HOSTS) as (client, logs):
        yield WatchStack(client, settings, tokens, logs, url=str(client.base_url).rstrip("/"))


@pytest.fixture(scope="session")
def toy_dataset_dir(
    tmp_path_factory: pytest.TempPathFactory, make_png: Callable[..., bytes]
) -> Path:
    """A dataset folder (the CLI zips folders on the fly): two captioned images."""
    root = tmp_path_factory.mktemp("toy-dataset")
    folder = root / "1_toy"
    folder.mkdir()
    for i, colour in enumerate([(10, 200, 90), (200, 40, 40)]):
        (folder / f"{i}.png").write_bytes(make_png(64, 64, colour))
        (folder / f"{i}.txt").write_text(f"a toy, number {i}")
    return root


@pytest.fixture(scope="session")
def write_payload(
    tmp_path_factory: pytest.TempPathFactory, payload: Callable[..., dict[str, Any]]
) -> Callable[..., Path]:
    def build(**overrides: Any) -> Path:
        path = tmp_path_factory.mktemp("payload") / "payload.json"
        path.write_text(json.dumps(payload(max_resolution="64,64", **overrides)))
        return path

    return build


@dataclass
class Watched:
    job: dict[str, Any]
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def watched(
    watch_stack: WatchStack, toy_dataset_dir: Path, write_payload: Callable[..., Path]
) -> Watched:
    """One finished job, submitted with `lorabox submit --wait`: 3 epochs x 2 steps."""
    payload = write_payload(epoch=3, save_every_n_epochs=1)
    done = watch_stack.cli(
        "submit", str(payload), "--dataset", str(toy_dataset_dir), "--model", "tiny-sdxl",
        "--name", "watched", "--wait", "--interval", "0.3",
    )  # fmt: skip
    job_id = done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""
    assert job_id, (done.stderr, watch_stack.log_tail())
    return Watched(watch_stack.job(job_id), done.returncode, done.stdout, done.stderr)


@pytest.fixture
def fresh_service_with(
    tmp_path: Path, make_service: Callable[..., Iterator[Any]]
) -> Iterator[Callable[..., Any]]:
    """``fresh_service_with(**settings)``: an in-process app on a fresh, migrated SQLite file
    (no worker), for fast tests."""
    from core.db.migrate import upgrade

    running: list[Iterator[Any]] = []

    def build(**overrides: Any) -> Any:
        home = tmp_path / f"home{len(running)}"
        values: dict[str, Any] = {"home": home, "models_dir": home / "models",
                                  "events_poll_interval_s": 0.05}  # fmt: skip
        settings = Settings(**(values | overrides))
        settings.ensure_dirs()
        upgrade(settings.database_url)
        gen = make_service(settings)
        running.append(gen)
        return next(gen)

    yield build
    for gen in running:
        gen.close()


@pytest.fixture
def fresh_service(fresh_service_with: Callable[..., Any]) -> Any:
    return fresh_service_with()


PLAN = {"total_steps": 4, "batches_per_epoch": 2, "epochs": 2, "warmup_steps": 0,
        "images_x_repeats": 2, "buckets": [], "warnings": []}  # fmt: skip


def insert_job(settings: Settings, owner: str = "alice", **values: Any) -> str:
    """A job row written directly, as a worker would leave it."""
    from core.db import Database, Job, User

    db = Database(settings.database_url, pool_size=1)
    with db.writing() as session:
        user = session.query(User).filter_by(name=owner).one()
        job = Job(owner_id=user.id, base_model="m", dataset_id="d", params={}, config={},
                  resolved={}, plan=PLAN, **values)  # fmt: skip
        session.add(job)
        session.flush()
        job_id = job.id
    db.dispose()
    return job_id


@pytest.fixture(scope="session")
def watch_job_body(
    watch_stack: WatchStack,
    make_zip: Callable[..., bytes],
    make_png: Callable[..., bytes],
    payload: Callable[..., dict[str, Any]],
) -> Callable[..., dict[str, Any]]:
    """``watch_job_body(model=..., **params)``: a submit body on a one-image dataset."""
    dataset = watch_stack.dataset(
        make_zip({"1_toy/a.png": make_png(64, 64, (10, 200, 90)), "1_toy/a.txt": b"a toy"})
    )

    def build(model: str = "tiny-sdxl", **overrides: Any) -> dict[str, Any]:
        params = payload(max_resolution="64,64", **overrides)
        return {"dataset_id": dataset, "base_model": model, "params": params}

    return build
