"""Runs in the trainer's own process (a new one per job): train, report, obey stop flags.

Everything crosses the process boundary as picklable values: the launch (the trainer's
torch-free ``TrainingJob``, built once by the worker, plus where the log goes), the trainer's
event dataclasses, one shared integer for stop requests, and the read end of a pipe that tells
the trainer its worker died.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any, Protocol

from trainer.job import TrainingJob
from trainer.report.quiet import KnownNoise, quiet_logging

STOP_NONE, STOP_FINISH, STOP_ABORT, STOP_SUSPEND = 0, 1, 2, 3
_REQUESTS = {STOP_FINISH: "finish", STOP_ABORT: "abort", STOP_SUSPEND: "suspend"}
# Test-only fault injection: "module:factory". The factory is called with the launch when the
# trainer process starts and returns a step hook (or None); tests use it to raise CUDA OOM at a
# step or to count trainer starts. Never set in production.
TEST_STEP_HOOK_ENV = "LORABOX_TEST_STEP_HOOK"


@dataclass(frozen=True)
class TrainerLaunch:
    """What the worker hands its trainer process: the job as is, and where the log goes."""

    job_id: str
    job: TrainingJob
    log_path: Path


class EventQueue(Protocol):
    def put(self, obj: Any) -> None: ...


def redirect_output(log_path: Path) -> KnownNoise:
    """Points fds 1 and 2 at the job's log, so C-level output (CUDA, tqdm) lands there too;
    logging and Python warnings go there, timestamped, less the known-harmless library
    notices (``trainer.report.quiet``), which it counts."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    return quiet_logging(sys.stderr, level=logging.INFO)


def exit_with_worker(lifeline: Connection) -> None:
    """If the worker dies (SIGKILL, OOM kill), its trainer must stop at once, not train on
    unsupervised (saving and pruning files nobody records). The worker never writes to the
    lifeline; the kernel closes its end when the worker dies, and the read here sees EOF."""

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            lifeline.recv_bytes()
        os._exit(3)

    threading.Thread(target=watch, name="exit-with-worker", daemon=True).start()


def error_code(exc: BaseException) -> str:
    """Codes for the failures the trainer didn't translate itself."""
    if type(exc).__name__ == "OutOfMemoryError" and "cuda" in type(exc).__module__:
        return "cuda_oom"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "disk_full"
    return "trainer_error"


def test_step_hook(launch: TrainerLaunch) -> Callable[[int], None] | None:
    target = os.environ.get(TEST_STEP_HOOK_ENV)
    if not target:
        return None
    module, _, name = target.partition(":")
    factory = getattr(importlib.import_module(module), name)
    hook: Callable[[int], None] | None = factory(launch)
    return hook


def train_in_child(
    launch: TrainerLaunch, events: EventQueue, stop_flag: Synchronized[int], lifeline: Connection
) -> None:
    # The supervisor decides how a shutdown ends the run (a terminal's Ctrl-C or a group-wide
    # SIGTERM reaches this process too): it sets the stop flag, so the trainer stops cleanly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    exit_with_worker(lifeline)
    noise = redirect_output(launch.log_path)
    from trainer.errors import TrainerError, TrainingCancelled, TrainingSuspended
    from trainer.hooks import Event, StopRequest
    from trainer.report.training_log import TrainingLog
    from trainer.run import train
    from worker.tensorboard import TensorBoardReporter

    board = TensorBoardReporter(launch.job.output_dir)
    log = TrainingLog(launch.job, noise)
    log.begin()

    def reporter(event: Event) -> None:
        log(event)
        board(event)
        events.put(("event", event))

    def stop() -> StopRequest | None:
        return _REQUESTS.get(stop_flag.value)  # type: ignore[return-value]

    try:
        step_hook = test_step_hook(launch)
        try:
            result = train(launch.job, reporter=reporter, stop=stop, step_hook=step_hook)
        finally:  # the charts are published whatever the outcome, before it is reported
            board.close(reporter)
    except TrainingCancelled:
        log.ended("cancelled")  # the log is complete before the worker registers it
        events.put(("cancelled", None))
    except TrainingSuspended as suspended:
        log.ended("suspended", f"state {suspended.state}" if suspended.state else "")
        events.put(("suspended", {"state": suspended.state, "step": suspended.step}))
    except TrainerError as exc:
        events.put(("error", (exc.code, exc.message)))  # first: printing fails on a full disk
        _print_traceback()
        log.ended("failed", f"{exc.code}: {exc.message}")
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the job row
        events.put(("error", (error_code(exc), f"{type(exc).__name__}: {exc}")))
        _print_traceback()
        log.ended("failed", f"{error_code(exc)}: {type(exc).__name__}: {exc}")
    else:
        steps, epochs, early = result.steps, result.epochs, result.stopped_early
        log.finished(steps, epochs, early, result.lora_path)
        events.put(("result", {"steps": steps, "epochs": epochs, "stopped_early": early}))


def _print_traceback() -> None:
    with contextlib.suppress(OSError):  # the log is on the disk that just filled up
        traceback.print_exc()
