"""How a trainer process starts: forked from a server holding the ML stack on a CPU-only torch,
spawned on a GPU build; and it exits at once when its worker is gone."""

from __future__ import annotations

import multiprocessing
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from core.db import Database
from core.settings import Settings
from tests.conftest import small_payload
from trainer.config import parse_payload
from trainer.job import TrainingJob
from worker import supervisor
from worker.child import TrainerLaunch, exit_with_worker
from worker.trainer_process import resolve, trainer_context

PRELOADED = ("torch", "diffusers", "transformers", "peft", "trainer.run", "worker.child")
# Forking trainers is only safe, and only used, on a torch without GPU support.
needs_cpu_torch = pytest.mark.skipif(
    torch.version.cuda is not None or torch.version.hip is not None,
    reason="trainers are spawned, never forked, on a torch built for GPUs",
)


def _report_modules(results: Any) -> None:
    results.put([m for m in PRELOADED if m not in sys.modules])


def _wait_on_lifeline(lifeline: Connection, results: Any) -> None:
    exit_with_worker(lifeline)
    results.put("ready")
    time.sleep(60)


def test_auto_forks_from_a_server_on_a_cpu_only_torch_and_spawns_on_a_gpu_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None)
    assert resolve("auto") == "forkserver"
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert resolve("auto") == "spawn"
    assert resolve("forkserver") == "forkserver"  # an explicit choice is kept
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", "6.3")
    assert resolve("auto") == "spawn"


@needs_cpu_torch
def test_a_forked_trainer_starts_with_the_ml_stack_already_imported() -> None:
    context = trainer_context("forkserver")
    results = context.Queue()
    child = context.Process(target=_report_modules, args=(results,))
    child.start()
    missing = results.get(timeout=180)
    child.join(30)
    assert missing == []
    assert child.exitcode == 0


@pytest.mark.parametrize("method", [pytest.param("forkserver", marks=needs_cpu_torch), "spawn"])
def test_a_trainer_exits_at_once_when_its_worker_s_end_of_the_lifeline_closes(
    method: Any,
) -> None:
    context = trainer_context(method)
    results = context.Queue()
    lifeline, held = context.Pipe(duplex=False)
    child = context.Process(target=_wait_on_lifeline, args=(lifeline, results))
    child.start()
    lifeline.close()
    try:
        assert results.get(timeout=180) == "ready"
        assert child.is_alive()
        closed = time.monotonic()
        held.close()  # what the kernel does when the worker dies
        child.join(10)
        assert child.exitcode == 3
        assert time.monotonic() - closed < 2
    finally:
        if child.is_alive():
            child.kill()
            child.join()


def test_a_trainer_that_cannot_start_hands_the_job_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawn = multiprocessing.get_context("spawn")

    class Unstartable(spawn.Process):
        def start(self) -> None:  # what a dead fork server gives Process.start
            raise EOFError("the fork server is gone")

    context = SimpleNamespace(
        Queue=spawn.Queue, Value=spawn.Value, Pipe=spawn.Pipe, Process=Unstartable
    )
    monkeypatch.setattr(supervisor, "trainer_context", lambda method: context)
    settings = Settings(home=tmp_path)
    db = Database(settings.database_url)
    outcome = supervisor.Supervisor(db, settings, "job1", 1).run(
        _launch(tmp_path), target=_report_modules
    )
    db.dispose()
    assert (outcome.status, outcome.error_code, outcome.release) == (
        None, "worker_lost", "trainer_died",
    )  # fmt: skip
    assert "could not start" in (outcome.message or "")


def _launch(tmp_path: Path) -> TrainerLaunch:
    config = parse_payload(small_payload()).config
    job = TrainingJob(config, tmp_path / "model", tmp_path / "data", tmp_path / "out")
    return TrainerLaunch("job1", job, tmp_path / "out" / "train.log")
