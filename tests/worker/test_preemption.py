"""Preemption by exact resume on CPU (docs/scheduling.md, "Preemption"): one real worker
with LORABOX_PREEMPT_AFTER_S, the miniature SDXL. Alice's job is preempted twice by bob's
short jobs (each time bob has used less, so the policy ranks his job first) and ends with the
LoRA of the same job run uninterrupted; each time it began at most one more step after the
request; bob's jobs are never preempted back. Slow: ~1 min."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

from core.db import Database, JobEvent
from core.db.tables import GpuUsage
from tests.worker.procs import Faults, fault_stack
from tests.worker.step_times import step_starts

pytestmark = pytest.mark.slow

# What two runs of the same job may differ in: when they ran.
TIMESTAMPS = {"ss_training_started_at", "ss_training_finished_at", "modelspec.date"}


def _lora(path: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    with safe_open(str(path), "np") as handle:
        metadata = dict(handle.metadata() or {})
    tensors = {k: t.numpy().tobytes() for k, t in load_file(str(path)).items()}
    return tensors, metadata


def _events(f: Faults, job_id: str) -> list[JobEvent]:
    db = Database(f.settings.database_url, pool_size=1)
    with db.reading() as session:
        rows = session.query(JobEvent).filter_by(job_id=job_id).order_by(JobEvent.id).all()
        session.expunge_all()
    db.dispose()
    return rows


def _wait(f: Faults, job_id: str, until: Any, user: str = "alice") -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job = f.stack.job(job_id, user)
        if until(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"{job_id} timed out at {job}:\n{f.stack.log_tail()}")


def _step(job: dict[str, Any]) -> int:
    return int((job["progress"] or {}).get("step") or 0)


def test_a_job_preempted_twice_resumes_exactly_and_the_other_user_s_jobs_don_t_bounce(
    tmp_path: Path, tiny_models_dir: Path, e2e_zip: bytes, e2e_payload: Any
) -> None:
    steps_dir = tmp_path / "steps"
    steps_dir.mkdir()
    with fault_stack(tmp_path / "home", tiny_models_dir) as f:
        f.start_worker(
            LORABOX_PREEMPT_AFTER_S="1", LORABOX_TEST_STEP_SLEEP_S="0.2",
            LORABOX_TEST_STEP_HOOK="tests.worker.step_times:hook",
            LORABOX_TEST_STEP_LOG_DIR=str(steps_dir),
        )  # fmt: skip
        # save_state off: the server saves the state a preemption needs anyway.
        params = e2e_payload(
            epoch=14, save_every_n_epochs=0, output_name="same", seed=7, save_state=False
        )
        body = {"dataset_id": f.stack.dataset(e2e_zip), "base_model": "tiny-sdxl",
                "params": params}  # fmt: skip
        reference = f.stack.submit(body)["id"]  # alone in the queue: never preempted
        assert f.finished(reference)["status"] == "succeeded", f.stack.log_tail()
        job = f.stack.submit(body)
        bob_body = {"dataset_id": f.stack.dataset(e2e_zip, user="bob"), "base_model": "tiny-sdxl",
                    "params": e2e_payload(epoch=1, save_every_n_epochs=0)}  # fmt: skip
        bobs, resumed_at = [], 1
        for attempt in (1, 2):  # each time, once it trained a step in this attempt
            _wait(f, job["id"], lambda j, a=attempt, s=resumed_at: j["attempt"] == a
                  and _step(j) > s)  # fmt: skip
            bobs.append(f.stack.submit(bob_body, user="bob")["id"])
            # bob's job runs in between: alice's resumes only after it (she used more).
            _wait(f, bobs[-1], lambda j: j["status"] == "succeeded", "bob")
            resumed_at = _step(f.stack.job(job["id"]))
        done = f.finished(job["id"])
        assert (done["status"], done["attempt"], done["preemptions"]) == ("succeeded", 3, 2)
        assert done["created_at"] == job["created_at"]  # back in line with its submission time
        assert [f.stack.job(b, "bob")["preemptions"] for b in bobs] == [0, 0]
        assert f.stack.job(reference)["preemptions"] == 0

        _check_history(f, job["id"], steps_dir)
        _check_same_lora(f.settings.jobs_dir, job["id"], reference)


def _check_history(f: Faults, job_id: str, steps_dir: Path) -> None:
    """Two preemptions, each handed back (not lost), each with at most one more step begun
    after its request; every attempt's worker time on the ledger, closed."""
    events = _events(f, job_id)
    kinds = [
        (e.attempt, e.kind)
        for e in events
        if e.kind in ("preempt_requested", "preempted", "handed_back", "worker_lost", "started")
    ]
    assert kinds == [(1, "started"), (1, "preempt_requested"), (1, "preempted"),
                     (1, "handed_back"), (2, "started"), (2, "preempt_requested"),
                     (2, "preempted"), (2, "handed_back"), (3, "started")]  # fmt: skip
    assert [e.data["reason"] for e in events if e.kind == "handed_back"] == ["preempted"] * 2
    starts = step_starts(steps_dir, job_id)
    requests = [e for e in events if e.kind == "preempt_requested"]
    ends = [e for e in events if e.kind == "preempted"]
    for request, end in zip(requests, ends, strict=True):
        asked, ended = request.created_at.timestamp(), end.created_at.timestamp()
        began = [step for step, at in starts if asked < at < ended]
        assert len(began) <= 1, (began, end.data)
    db = Database(f.settings.database_url, pool_size=1)
    with db.reading() as session:
        usage = session.query(GpuUsage).filter_by(job_id=job_id).all()
        assert sorted(u.attempt for u in usage) == [1, 2, 3]
        assert all(u.ended_at is not None for u in usage)
    db.dispose()


def _check_same_lora(jobs_dir: Path, job_id: str, reference: str) -> None:
    tensors, metadata = _lora(jobs_dir / job_id / "same.safetensors")
    ref_tensors, ref_metadata = _lora(jobs_dir / reference / "same.safetensors")
    assert tensors == ref_tensors
    differ = {k for k in metadata.keys() | ref_metadata.keys()
              if metadata.get(k) != ref_metadata.get(k)}  # fmt: skip
    assert differ <= TIMESTAMPS, differ
