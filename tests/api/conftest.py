"""API test fixtures: a real app on a real (migrated) SQLite file and the embedded broker."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.db.migrate import upgrade
from core.settings import Settings
from tests.api.browser import browser  # noqa: F401 - the headless Chromium fixture


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
def service(
    settings_factory: Callable[..., Settings], make_service: Callable[..., Iterator[Any]]
) -> Iterator[Any]:
    yield from make_service(settings_factory())


@pytest.fixture
def service_with(
    settings_factory: Callable[..., Settings], make_service: Callable[..., Iterator[Any]]
) -> Iterator[Callable[..., Any]]:
    """``service_with(max_queued_per_user=1, ...)``: a service with other limits."""
    running: list[Iterator[Any]] = []

    def build(**overrides: Any) -> Any:
        gen = make_service(settings_factory(**overrides))
        running.append(gen)
        return next(gen)

    yield build
    for gen in running:
        gen.close()


@pytest.fixture
def dataset_id(service: Any, good_dataset_zip: bytes) -> str:
    return service.dataset("alice", good_dataset_zip)


@pytest.fixture
def job_body(dataset_id: str, payload: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    return {"dataset_id": dataset_id, "base_model": "base", "params": payload()}
