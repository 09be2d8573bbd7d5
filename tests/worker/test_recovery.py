"""Crash recovery with real processes (docs/reliability.md): a SIGKILLed worker, a SIGKILLed
trainer, a SIGTERMed worker, and two workers racing for 20 jobs. Embedded defaults (SQLite and
the kombu SQLAlchemy broker, which loses a SIGKILLed worker's message: the reconciler must
re-enqueue it). Slow: each test starts its own workers and trains the miniature SDXL."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from core.db import Database
from tests.worker.procs import Faults, fault_stack, pid_alive, wait_until
from worker.relay import Fenced, fenced_update

pytestmark = pytest.mark.slow


def _submit(f: Faults, data: bytes, params: dict[str, Any]) -> str:
    dataset = f.stack.dataset(data)
    return str(
        f.stack.submit({"dataset_id": dataset, "base_model": "tiny-sdxl", "params": params})["id"]
    )


def _at_step(f: Faults, job_id: str, step: int, attempt: int = 1) -> None:
    f.stack.wait(
        job_id,
        lambda j: j["attempt"] == attempt and ((j["progress"] or {}).get("step") or 0) >= step,
        180,
    )


def _kinds(f: Faults, job_id: str) -> list[tuple[int, str]]:
    return [(attempt, kind) for _, attempt, kind, _ in f.events(job_id) if kind != "progress"]


def test_a_sigkilled_worker_s_job_is_rerun_by_another_worker_and_the_dead_attempt_is_fenced(
    tmp_path: Path, tiny_models_dir: Path, e2e_zip: bytes, e2e_payload: Any
) -> None:
    with fault_stack(tmp_path, tiny_models_dir) as f:
        first = f.start_worker(LORABOX_TEST_STEP_SLEEP_S="1")
        params = e2e_payload(
            epoch=5, save_every_n_epochs=0, save_every_n_steps=1, save_state=True,
            save_last_n_steps=2,
        )  # fmt: skip
        job_id = _submit(f, e2e_zip, params)
        trainer = f.wait_for_trainer(job_id)
        _at_step(f, job_id, 2)
        os.kill(first.pid, signal.SIGKILL)  # the worker only: its trainer must notice alone
        first.wait()
        wait_until(lambda: not pid_alive(trainer), 15, "the orphaned trainer to exit")
        f.start_worker()
        done = f.finished(job_id)
        assert (done["status"], done["attempt"]) == ("succeeded", 2), f.stack.log_tail()

        events = f.events(job_id)
        lost = [e for e in events if e[2] == "worker_lost"]
        assert len(lost) == 1
        lost_id, lost_attempt, _, data = lost[0]
        assert (lost_attempt, data["reason"], data["status"]) == (1, "lease_expired", "queued")
        assert all(i < lost_id for i, a, kind, _ in events if a == 1 and kind != "worker_lost")
        assert [a for _, a, kind, _ in events if kind == "started"] == [1, 2]
        assert len(f.starts()[job_id]) == 2  # one trainer process per attempt
        # Attempt 2 resumed from attempt 1's newest registered training state, not from step 0
        # (a state written as the worker died is never registered, so it isn't trusted).
        saved = [d["step"] for _, a, kind, d in events if kind == "artifact" and a == 1
                 and d["kind"] == "state"]  # fmt: skip
        resumed = [d for _, a, kind, d in events if kind == "training_started" and a == 2]
        assert saved and resumed[0]["start_step"] == max(saved) >= 1
        steps = [d["step"] for _, a, kind, d in events if kind == "progress" and a == 2]
        assert min(steps) > max(saved)
        states = [a["name"] for a in f.stack.artifacts(job_id) if a["kind"] == "state"]
        # The save_last_n_steps window moved past step 1: its file and its listing are gone.
        stem = job_id[:8]  # an unnamed job's files carry its short id (core/jobs/naming.py)
        assert sorted(states) == [f"{stem}-state.safetensors"] + [
            f"{stem}-step{s:08d}-state.safetensors" for s in (2, 3, 4)
        ]

        db = Database(f.settings.database_url, pool_size=1)
        with pytest.raises(Fenced), db.writing() as session:  # a late write from attempt 1
            fenced_update(session, job_id, 1, progress={"phase": "stale"})
        db.dispose()
        assert f.stack.job(job_id)["progress"]["phase"] != "stale"


def test_a_killed_trainer_is_requeued_then_failed_worker_lost_and_the_worker_runs_the_next_job(
    tmp_path: Path, tiny_models_dir: Path, e2e_zip: bytes, e2e_payload: Any
) -> None:
    with fault_stack(tmp_path, tiny_models_dir) as f:
        worker = f.start_worker(LORABOX_TEST_STEP_SLEEP_S="1", LORABOX_MAX_ATTEMPTS="2")
        doomed = _submit(f, e2e_zip, e2e_payload(epoch=40, save_every_n_epochs=0))
        following = _submit(f, e2e_zip, e2e_payload(epoch=1))
        for attempt in (1, 2):
            pid = f.wait_for_trainer(doomed, attempt)
            _at_step(f, doomed, 1, attempt)
            os.kill(pid, signal.SIGKILL)
        done = f.finished(doomed)
        assert (done["status"], done["attempt"]) == ("failed", 2)
        assert done["error"]["code"] == "worker_lost", done["error"]
        lost = [d for _, _, kind, d in f.events(doomed) if kind == "worker_lost"]
        assert [(d["reason"], d["status"]) for d in lost] == [
            ("trainer_died", "queued"),
            ("trainer_died", "failed"),
        ]
        assert "exit code -9" in lost[0]["detail"]
        assert f.finished(following)["status"] == "succeeded"
        assert worker.poll() is None  # the worker itself never went down


def test_sigterm_hands_the_running_job_back_to_the_queue_and_a_new_worker_finishes_it(
    tmp_path: Path, tiny_models_dir: Path, e2e_zip: bytes, e2e_payload: Any
) -> None:
    with fault_stack(tmp_path, tiny_models_dir) as f:
        first = f.start_worker(LORABOX_TEST_STEP_SLEEP_S="1")
        job_id = _submit(f, e2e_zip, e2e_payload(epoch=5, save_every_n_epochs=0))
        trainer = f.wait_for_trainer(job_id)
        _at_step(f, job_id, 2)
        os.killpg(first.pid, signal.SIGTERM)  # the whole group, as `docker stop` or systemd do
        assert first.wait(timeout=60) == 0, f.stack.log_tail()
        assert not pid_alive(trainer)
        handed = f.stack.job(job_id)
        assert (handed["status"], handed["attempt"], handed["error"]) == ("queued", 1, None)
        assert (1, "handed_back") in _kinds(f, job_id)
        assert (1, "worker_lost") not in _kinds(f, job_id)

        # The trainer saved its state on the way out; attempt 2 continues from it.
        artifacts = [d for _, a, kind, d in f.events(job_id) if kind == "artifact" and a == 1]
        state = [d for d in artifacts if d["kind"] == "state"]
        assert len(state) == 1 and state[0]["step"] >= 2

        f.start_worker()
        done = f.finished(job_id)
        assert (done["status"], done["attempt"]) == ("succeeded", 2), f.stack.log_tail()
        assert len(f.starts()[job_id]) == 2
        resumed = [d for _, a, kind, d in f.events(job_id) if kind == "training_started" and a == 2]
        assert resumed[0]["start_step"] == state[0]["step"]


def test_two_workers_start_the_trainer_of_each_of_20_jobs_exactly_once(
    tmp_path: Path, tiny_models_dir: Path, e2e_zip: bytes, e2e_payload: Any
) -> None:
    with fault_stack(tmp_path, tiny_models_dir, max_queued_per_user=50) as f:
        dataset = f.stack.dataset(e2e_zip)
        body = {"dataset_id": dataset, "base_model": "tiny-sdxl", "params": e2e_payload(epoch=1)}
        jobs = [str(f.stack.submit(body)["id"]) for _ in range(20)]
        f.start_worker()
        f.start_worker()
        for job_id in jobs:
            done = f.finished(job_id, timeout_s=400)
            assert (done["status"], done["attempt"]) == ("succeeded", 1), done["error"]
        for job_id in jobs:
            assert [a for a, kind in _kinds(f, job_id) if kind == "started"] == [1]
        starts = f.starts()
        assert sorted(starts) == sorted(jobs)
        assert all(len(pids) == 1 for pids in starts.values()), starts
        assert len({pid for pids in starts.values() for pid in pids}) == 20
