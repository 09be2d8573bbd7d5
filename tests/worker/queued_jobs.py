"""Job rows and devices for the worker's claim and learning tests, written directly (as the
service would), so these tests depend on the claim and the trainer, not on submit."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy.orm import Session

from core.db import Dataset, Job, User
from core.db.migrate import upgrade
from core.db.tables import utcnow
from core.settings import Settings
from tests.conftest import small_payload
from trainer.config import parse_payload
from trainer.plan import plan_training
from worker.device import Device
from worker.runner import WorkerContext

GIB = 2**30
PLAN = {"total_steps": 4, "batches_per_epoch": 2, "epochs": 2, "warmup_steps": 0,
        "images_x_repeats": 2, "buckets": [], "warnings": []}  # fmt: skip


class DeviceWithFree(Device):
    """The real device, but with the free memory a test says: the one external edge the
    claim reads (a shared card's free memory)."""

    def __init__(self, free_bytes: int, total_bytes: int = 16 * GIB) -> None:
        super().__init__()
        self.free_bytes, self.total_bytes = free_bytes, total_bytes

    def memory(self) -> tuple[int, int]:
        return self.total_bytes, self.free_bytes


def owner(session: Session, name: str = "alice") -> int:
    user = session.query(User).filter_by(name=name).one_or_none()
    if user is None:
        user = User(name=name)
        session.add(user)
        session.flush()
    return user.id


def queued_job(
    session: Session,
    *,
    need_gib: float | None,
    created_at: datetime | None = None,
    step_flops: int = 10**12,
) -> str:
    """A queued job the claim can take (its trainer never starts in these tests)."""
    estimate = None
    if need_gib is not None:
        estimate = {"peak_vram_bytes": int(need_gib * GIB), "step_flops": step_flops,
                    "parts": {}}  # fmt: skip
    job = Job(owner_id=owner(session), base_model="m", dataset_id="d", params={}, config={},
              resolved={}, plan=PLAN, estimate=estimate,
              created_at=created_at or utcnow())  # fmt: skip
    session.add(job)
    session.flush()
    return job.id


def in_order(session: Session, *needs: float | None) -> list[str]:
    """Queued jobs submitted one second apart, in this order."""
    start = utcnow() - timedelta(minutes=5)
    return [
        queued_job(session, need_gib=need, created_at=start + timedelta(seconds=i))
        for i, need in enumerate(needs)
    ]


def trainable_job(
    session: Session, settings: Settings, *, images: int, step_flops: int, **params: Any
) -> str:
    """A queued job of the miniature SDXL that really trains: its dataset on disk and its
    row as submit writes it (config, plan, resolved paths)."""
    dataset = Dataset(owner_id=owner(session), name="toy", image_count=images,
                      caption_count=images, folders=[], size_bytes=0, sha256="0" * 64,
                      warnings=[])  # fmt: skip
    session.add(dataset)
    session.flush()
    folder = settings.datasets_dir / dataset.id / "1_toy"
    folder.mkdir(parents=True)
    for i in range(images):
        Image.new("RGB", (64, 64), (40 * i % 256, 120, 60)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"a toy, number {i}")
    payload = small_payload(**params) | {"pretrained_model_name_or_path": "tiny-sdxl"}
    config = parse_payload(payload).config
    plan = plan_training(config, Path(folder).parent)
    job = Job(
        owner_id=dataset.owner_id, base_model="tiny-sdxl", dataset_id=dataset.id,
        params=payload, config=config.model_dump(mode="json"),
        resolved={"base_model": "tiny-sdxl.safetensors", "base_config": "tiny-sdxl.config"},
        plan=plan.to_dict() | {"warnings": []},
        estimate={"peak_vram_bytes": GIB, "step_flops": step_flops, "parts": {}},
    )  # fmt: skip
    session.add(job)
    session.flush()
    return job.id


def worker_context(home: Path, free_gib: float = 4, **overrides: Any) -> WorkerContext:
    """A worker's context on a migrated SQLite file in ``home``, with ``free_gib`` free on
    its device (no process, no broker message: the tests call the runner's functions)."""
    settings = Settings(home=home, **overrides)
    settings.ensure_dirs()
    upgrade(settings.database_url)
    return WorkerContext.from_settings(settings, device=DeviceWithFree(int(free_gib * GIB)))
