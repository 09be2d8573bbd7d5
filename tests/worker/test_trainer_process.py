"""How a trainer process starts: forked from a server holding the ML stack on a CPU-only torch,
spawned on a GPU build; and it exits at once when its worker is gone."""

from __future__ import annotations

import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import pytest
import torch

from worker.child import exit_with_worker
from worker.trainer_process import resolve, trainer_context


def _report_modules(results: Any) -> None:
    results.put(
        {
            "preloaded": all(
                m in sys.modules for m in ("torch", "diffusers", "peft", "trainer.run")
            ),
            "cuda_initialized": torch.cuda.is_initialized(),
        }
    )


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


def test_a_forked_trainer_starts_with_the_ml_stack_imported_and_cuda_untouched() -> None:
    context = trainer_context("forkserver")
    results = context.Queue()
    child = context.Process(target=_report_modules, args=(results,))
    child.start()
    report = results.get(timeout=180)
    child.join(30)
    assert report == {"preloaded": True, "cuda_initialized": False}
    assert child.exitcode == 0


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_a_trainer_exits_at_once_when_its_worker_s_end_of_the_lifeline_closes(
    method: Any,
) -> None:
    context = trainer_context(method)
    results = context.Queue()
    lifeline, held = context.Pipe(duplex=False)
    child = context.Process(target=_wait_on_lifeline, args=(lifeline, results))
    child.start()
    lifeline.close()
    assert results.get(timeout=180) == "ready"
    assert child.is_alive()
    closed = time.monotonic()
    held.close()  # what the kernel does when the worker dies
    child.join(10)
    assert child.exitcode == 3
    assert time.monotonic() - closed < 2
