"""Cancel races with real processes (docs/reliability.md, item 8): a cancel while the base model
loads, while latents are cached and while files are saved; two cancels at once; a trainer stuck
in a call that can't poll, killed after LORABOX_CANCEL_GRACE_S. The slow phases come from
tests.worker.faults (chosen by the job's output_name). Cancelling a finished job is a 409.
Embedded defaults (SQLite and the kombu SQLAlchemy broker)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.worker.faults import SLOW_CACHE, SLOW_LOAD, SLOW_SAVE
from tests.worker.procs import Faults, fault_stack, pid_alive, wait_until

pytestmark = pytest.mark.slow


def _submit(f: Faults, data: bytes, params: dict[str, Any]) -> str:
    dataset = f.stack.dataset(data)
    return str(
        f.stack.submit({"dataset_id": dataset, "base_model": "tiny-sdxl", "params": params})["id"]
    )


def _cancel(f: Faults, job_id: str) -> httpx.Response:
    response: httpx.Response = f.stack.client.post(
        f"/v1/jobs/{job_id}/cancel", headers=f.stack.as_()
    )
    return response


def _log(f: Faults, job_id: str) -> str:
    path = f.settings.jobs_dir / job_id / "train.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _wait_log(f: Faults, job_id: str, line: str, count: int = 1, phase: str | None = None) -> None:
    """Until the trainer printed ``line`` (a faults.py hook) ``count`` times and the job shows
    ``phase``."""

    def seen() -> bool:
        if _log(f, job_id).count(line) < count:
            return False
        return phase is None or f.stack.job(job_id)["progress"]["phase"] == phase

    wait_until(seen, 120, f"{line!r} x{count}")


def _cancelled_within(f: Faults, job_id: str, timeout_s: float) -> tuple[dict[str, Any], float]:
    """Cancels the running job; its end and the seconds it took."""
    start = time.monotonic()
    response = _cancel(f, job_id)
    assert response.status_code == 200 and response.json()["cancel_requested"], response.text
    done = f.finished(job_id, timeout_s)
    return done, time.monotonic() - start


def _kinds(f: Faults, job_id: str) -> list[str]:
    return [kind for _, _, kind, _ in f.events(job_id)]


def _phases(f: Faults, job_id: str) -> list[str]:
    return [data["phase"] for _, _, kind, data in f.events(job_id) if kind == "phase"]


def _end(f: Faults, job_id: str) -> dict[str, Any]:
    [finished] = [data for _, _, kind, data in f.events(job_id) if kind == "finished"]
    return finished


def _assert_no_step(f: Faults, job_id: str) -> None:
    kinds = _kinds(f, job_id)
    assert "training_started" not in kinds and "progress" not in kinds, kinds
    assert (f.stack.job(job_id)["progress"] or {}).get("step") is None


def _assert_only_whole_files(f: Faults, job_id: str) -> list[dict[str, Any]]:
    """Every listed artifact is on disk with its listed hash; no temporary file is left."""
    folder = f.settings.jobs_dir / job_id
    artifacts = f.stack.artifacts(job_id)
    for artifact in artifacts:
        data = (folder / artifact["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == artifact["sha256"], artifact["name"]
        assert len(data) == artifact["size_bytes"]
    assert not [p.name for p in folder.rglob("*.tmp")]
    return artifacts


def _saving_payload(e2e_payload: Any) -> dict[str, Any]:
    """A LoRA and a training state after every step: with slow-save, saving dominates."""
    return dict(
        e2e_payload(
            output_name=SLOW_SAVE, epoch=20, save_every_n_epochs=0, save_every_n_steps=1,
            save_state=True,
        )
    )  # fmt: skip


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory, tiny_models_dir: Path) -> Iterator[Faults]:
    """One worker for the races the trainer ends by itself: a grace (30 s) it never reaches.
    A base model read in 3 s, latents cached at 0.5 s per image, saves held 1 s each."""
    home = tmp_path_factory.mktemp("patient")
    with fault_stack(home, tiny_models_dir) as f:
        f.start_worker(
            LORABOX_CANCEL_GRACE_S="30",
            LORABOX_TEST_LOAD_SLEEP_S="3",
            LORABOX_TEST_ENCODE_SLEEP_S="0.5",
            LORABOX_TEST_SAVE_SLEEP_S="1",
        )
        yield f


def test_a_cancel_while_loading_ends_the_job_before_any_step_and_a_double_cancel_is_harmless(
    patient: Faults, e2e_zip: bytes, e2e_payload: Any
) -> None:
    f = patient
    job_id = _submit(f, e2e_zip, e2e_payload(output_name=SLOW_LOAD, epoch=50))
    trainer = f.wait_for_trainer(job_id)
    _wait_log(f, job_id, "test hook: load_sdxl starts", phase="loading")

    start = time.monotonic()
    with ThreadPoolExecutor(2) as pool:  # two clicks at once
        answers = list(pool.map(lambda _: _cancel(f, job_id), range(2)))
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert all(a.json()["cancel_requested"] for a in answers)
    done = f.finished(job_id, 60)
    elapsed = time.monotonic() - start

    # The load (3 s) can't be interrupted; the trainer stopped right after it, by itself.
    assert done["status"] == "cancelled", f.stack.log_tail()
    assert elapsed < 15, elapsed  # never the grace (30 s)
    assert "load_sdxl ends" in _log(f, job_id)
    assert _end(f, job_id) == {"status": "cancelled", "error_code": None, "message": None}
    kinds = _kinds(f, job_id)
    assert kinds.count("cancel_requested") == 1 and kinds.count("finished") == 1
    assert _phases(f, job_id) == ["loading"]  # no network built, nothing cached
    _assert_no_step(f, job_id)
    wait_until(lambda: not pid_alive(trainer), 10, "the trainer process to exit")
    assert _cancel(f, job_id).status_code == 200  # a cancelled job: the same answer again


def test_a_cancel_while_caching_latents_ends_the_job_well_before_caching_would(
    patient: Faults, make_zip: Any, make_png: Any, e2e_payload: Any
) -> None:
    f, images = patient, 24  # one image per VAE batch at 0.5 s: 12 s of caching
    files = {f"1_toy/{i:02d}.png": make_png(64, 64, (10 * i, 100, 200)) for i in range(images)}
    files |= {f"1_toy/{i:02d}.txt": b"a toy" for i in range(images)}
    params = e2e_payload(output_name=SLOW_CACHE, cache_latents=True, vae_batch_size=1)
    job_id = _submit(f, make_zip(files), params)
    trainer = f.wait_for_trainer(job_id)
    _wait_log(f, job_id, "test hook: _encode_batch ends", 2, "caching")

    done, elapsed = _cancelled_within(f, job_id, 60)
    assert done["status"] == "cancelled", f.stack.log_tail()
    assert elapsed < 5, elapsed  # one batch and a poll, not the ~10 s of caching left
    assert _log(f, job_id).count("_encode_batch ends") < images - 6
    assert _end(f, job_id)["message"] is None  # stopped by itself, not killed
    assert _phases(f, job_id) == ["loading", "caching"]
    _assert_no_step(f, job_id)
    wait_until(lambda: not pid_alive(trainer), 10, "the trainer process to exit")


def test_a_cancel_during_a_save_lists_only_whole_files_and_leaves_no_temporary_file(
    patient: Faults, e2e_zip: bytes, e2e_payload: Any
) -> None:
    """Cancelled as step 2's LoRA is written (held 1 s before its rename): the trainer ends
    that save and its state's, which follows with no poll between, then stops."""
    f = patient
    job_id = _submit(f, e2e_zip, _saving_payload(e2e_payload))
    _wait_log(f, job_id, "test hook: save_file starts", 3, "saving")
    done, elapsed = _cancelled_within(f, job_id, 60)
    assert done["status"] == "cancelled", f.stack.log_tail()
    assert elapsed < 10, elapsed  # the saves in flight, then the next step's poll
    assert done["progress"]["step"] in (2, 3)  # at most the step in flight
    assert _end(f, job_id)["message"] is None  # stopped by itself, not killed
    names = {a["name"] for a in _assert_only_whole_files(f, job_id)}
    assert {
        "slow-save-step00000001.safetensors", "slow-save-step00000001-state.safetensors",
        "slow-save-step00000002.safetensors", "slow-save-step00000002-state.safetensors",
        "train.log",
    } <= names  # fmt: skip


def test_a_trainer_that_ignores_a_cancel_is_killed_after_the_grace_and_the_next_job_runs(
    tmp_path: Path, tiny_models_dir: Path, e2e_zip: bytes, e2e_payload: Any
) -> None:
    """Grace 2 s. A base model that takes 60 s to read: the cancel kills the trainer. A LoRA
    save and a state save of 1.5 s each, back to back: the kill lands after the LoRA's rename,
    inside the state's write; its temporary file is removed. Then a normal job succeeds, and
    cancelling it afterwards is a 409."""
    with fault_stack(tmp_path, tiny_models_dir) as f:
        worker = f.start_worker(
            LORABOX_CANCEL_GRACE_S="2",
            LORABOX_TEST_LOAD_SLEEP_S="60",
            LORABOX_TEST_SAVE_SLEEP_S="1.5",
        )
        stuck = _submit(f, e2e_zip, e2e_payload(output_name=SLOW_LOAD, epoch=50))
        trainer = f.wait_for_trainer(stuck)
        _wait_log(f, stuck, "test hook: load_sdxl starts")
        done, elapsed = _cancelled_within(f, stuck, 60)
        assert done["status"] == "cancelled", f.stack.log_tail()
        assert 2 <= elapsed < 10, elapsed
        assert "killed" in _end(f, stuck)["message"]
        assert not pid_alive(trainer)
        assert "worker_lost" not in _kinds(f, stuck)
        _assert_no_step(f, stuck)

        saving = _submit(f, e2e_zip, _saving_payload(e2e_payload))
        _wait_log(f, saving, "test hook: save_file starts", 3, "saving")  # step 2's LoRA
        done, _ = _cancelled_within(f, saving, 60)
        assert done["status"] == "cancelled", f.stack.log_tail()
        assert "killed" in _end(f, saving)["message"]
        removed = [
            line for line in (f.settings.home / "worker0.log").read_text().splitlines()
            if "removed the partial file" in line
        ]  # fmt: skip
        assert len(removed) == 1, f.stack.log_tail()
        pid = f.starts()[saving][0]
        assert removed[0].endswith(f"/.slow-save-step00000002-state.safetensors.{pid}.tmp")
        names = {a["name"] for a in _assert_only_whole_files(f, saving)}
        assert "slow-save-step00000001-state.safetensors" in names
        assert "slow-save-step00000002-state.safetensors" not in names

        normal = _submit(f, e2e_zip, e2e_payload(epoch=1))
        assert f.finished(normal, 120)["status"] == "succeeded", f.stack.log_tail()
        late = _cancel(f, normal)
        assert late.status_code == 409
        assert late.json() == {"detail": "job already succeeded"}
        assert f.stack.job(normal)["cancel_requested"] is False
        assert worker.poll() is None
