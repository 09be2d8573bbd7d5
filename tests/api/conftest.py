"""API test fixtures: a real app on a real (migrated) SQLite file and the embedded broker."""

from __future__ import annotations

import copy
import json
import shutil
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.db import Database
from api.db.migrate import upgrade
from api.settings import Settings
from api.users import add_user

SEED = json.loads((Path(__file__).parent / "seed_payload.json").read_text())


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


def write_fake_safetensors(path: Path, keys: list[str]) -> None:
    """A valid safetensors header (2 bytes per tensor): enough for the catalog's rules."""
    header = {k: {"dtype": "F16", "shape": [1], "data_offsets": [2 * i, 2 * i + 2]}
              for i, k in enumerate(keys)}  # fmt: skip
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0\0" * len(keys))


@pytest.fixture(scope="session")
def fake_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("fake-models")
    write_fake_safetensors(
        models / "base.safetensors", ["model.diffusion_model.x", "conditioner.y"]
    )
    (models / "base.config").mkdir()
    write_fake_safetensors(models / "vae" / "good-vae.safetensors", ["encoder.x", "decoder.y"])
    write_fake_safetensors(models / "a-lora.safetensors", ["lora_unet_x.lora_down.weight"])
    (models / "old.ckpt").write_bytes(b"pickle")
    diffusers = models / "diffusers-base"
    diffusers.mkdir()
    (diffusers / "model_index.json").write_text("{}")
    write_fake_safetensors(diffusers / "unet" / "diffusion_pytorch_model.safetensors", ["w"])
    return models


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "lorabox.db"
    upgrade(f"sqlite:///{path}")
    return path


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


def make_service(settings: Settings) -> Iterator[Service]:
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


@pytest.fixture
def settings_factory(
    tmp_path: Path, migrated_sqlite: Path, fake_models_dir: Path
) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        shutil.copy(migrated_sqlite, home / "lorabox.db")
        values: dict[str, Any] = {"home": home, "models_dir": fake_models_dir}
        return Settings(**(values | overrides))

    return build


@pytest.fixture
def service(settings_factory: Callable[..., Settings]) -> Iterator[Service]:
    yield from make_service(settings_factory())


@pytest.fixture
def service_with(settings_factory: Callable[..., Settings]) -> Iterator[Callable[..., Service]]:
    """``service_with(max_queued_per_user=1, ...)``: a service with other limits."""
    running: list[Iterator[Service]] = []

    def build(**overrides: Any) -> Service:
        gen = make_service(settings_factory(**overrides))
        running.append(gen)
        return next(gen)

    yield build
    for gen in running:
        gen.close()


@pytest.fixture
def dataset_id(service: Service, good_dataset_zip: bytes) -> str:
    return service.dataset("alice", good_dataset_zip)


@pytest.fixture(scope="session")
def payload() -> Callable[..., dict[str, Any]]:
    """``payload(**overrides)``: the scaled-down seed payload."""
    return small_payload


@pytest.fixture
def job_body(dataset_id: str) -> dict[str, Any]:
    return {"dataset_id": dataset_id, "base_model": "base", "params": small_payload()}
