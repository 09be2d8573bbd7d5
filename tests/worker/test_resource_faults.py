"""Resource faults (docs/reliability.md): a full disk during extraction and during a checkpoint
save (a real size-limited tmpfs; skipped where this process may not mount one), a NaN loss (a
test hook poisons the LoRA weights; the trainer's own check must catch it and name the step),
and CUDA out of memory (raised by a test step hook, the one fault not produced for real on CPU)
followed by a job that runs normally in a fresh trainer process."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.worker.faults import NAN_NAME, OOM_NAME
from tests.worker.procs import Faults, fault_stack

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    require(mounted.returncode == 0, f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _job(f: Faults, data: bytes, params: dict[str, Any]) -> str:
    dataset = f.stack.dataset(data)
    body = {"dataset_id": dataset, "base_model": "tiny-sdxl", "params": params}
    return str(f.stack.submit(body)["id"])


def test_a_full_disk_during_upload_or_extraction_is_507_and_leaves_nothing(
    tmp_path: Path, make_service: Any, make_zip: Any
) -> None:
    from core.settings import Settings

    with small_disk(tmp_path / "disk", "3m") as disk:
        settings = Settings(home=disk, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
                            broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
                            disk_reserve_bytes=0)  # fmt: skip
        from core.db.migrate import upgrade

        settings.ensure_dirs()
        upgrade(settings.database_url)
        services = make_service(settings)
        service = next(services)
        noise = {"1_a/x.txt": os.urandom(2 * 1024 * 1024)}  # incompressible: 2 MB staged + 2 MB out
        extraction = service.upload("alice", make_zip(noise, 0))
        assert extraction.status_code == 507, extraction.text
        upload = service.upload("alice", os.urandom(4 * 1024 * 1024))  # fills it while receiving
        assert upload.status_code == 507, upload.text
        assert upload.json()["detail"]
        assert list(settings.tmp_dir.iterdir()) == []
        assert list(settings.datasets_dir.iterdir()) == []
        listed = service.client.get("/v1/datasets", headers=service.as_("alice"))
        assert listed.json()["items"] == []
        services.close()


def test_a_full_disk_at_a_checkpoint_fails_the_job_disk_full_and_keeps_earlier_files_whole(
    tmp_path: Path, tiny_models_dir: Path, e2e_zip: bytes, e2e_payload: Any
) -> None:
    with (
        small_disk(tmp_path / "disk", "200m") as disk,
        fault_stack(disk, tiny_models_dir, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
                    broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
                    disk_reserve_bytes=0) as f,
    ):  # fmt: skip
        f.start_worker(LORABOX_TEST_FILL_DISK_AT_STEP="3")
        job_id = _job(f, e2e_zip, e2e_payload(epoch=4, save_every_n_epochs=1))
        done = f.finished(job_id)
        assert (done["status"], done["error"]["code"]) == ("failed", "disk_full"), done["error"]
        out = f.settings.jobs_dir / job_id
        listed = f.stack.client.get(f"/v1/jobs/{job_id}/artifacts", headers=f.stack.as_())
        saved = {a["name"]: a for a in listed.json()["items"] if a["kind"] == "checkpoint"}
        stem = job_id[:8]  # an unnamed job's files carry its short id (core/jobs/naming.py)
        assert sorted(saved) == [f"{stem}-000001.safetensors", f"{stem}-000002.safetensors"]
        for name, artifact in saved.items():
            data = (out / name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
        # No temporary or truncated file published (the log and TensorBoard folder aside).
        beside = ("train.log", "tensorboard")
        on_disk = sorted(p.name for p in out.iterdir() if p.name not in beside)
        assert on_disk == sorted(saved)


def test_nan_loss_and_cuda_oom_fail_their_jobs_with_reasons_and_the_next_job_runs_normally(
    tmp_path: Path, tiny_models_dir: Path, e2e_zip: bytes, e2e_payload: Any
) -> None:
    with fault_stack(tmp_path, tiny_models_dir) as f:
        worker = f.start_worker()
        nan = _job(f, e2e_zip, e2e_payload(epoch=4, save_every_n_epochs=0, output_name=NAN_NAME))
        oom = _job(f, e2e_zip, e2e_payload(epoch=4, save_every_n_epochs=0, output_name=OOM_NAME))
        normal = _job(f, e2e_zip, e2e_payload(epoch=2))
        failed = f.finished(nan)
        assert (failed["status"], failed["error"]["code"]) == ("failed", "nan_loss"), failed
        assert "at step 3" in failed["error"]["message"]
        failed = f.finished(oom)
        assert (failed["status"], failed["error"]["code"]) == ("failed", "cuda_oom"), failed
        assert "CUDA out of memory" in failed["error"]["message"]
        assert "train_batch_size" in failed["error"]["message"]  # what to change
        done = f.finished(normal)
        assert (done["status"], done["attempt"]) == ("succeeded", 1)
        trainers = f.starts()
        assert len({trainers[j][0] for j in (nan, oom, normal)}) == 3  # a fresh process each
        assert worker.poll() is None
