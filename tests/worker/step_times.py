"""A test step hook (LORABOX_TEST_STEP_HOOK=tests.worker.step_times:hook): the fault hooks of
tests/worker/faults.py, and a line ``<step> <unix time>`` appended to
``<LORABOX_TEST_STEP_LOG_DIR>/<job id>.steps`` as each optimizer step starts, so a test can
count the steps a trainer began after a moment the database recorded (a preemption request)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tests.worker import faults

if TYPE_CHECKING:
    from worker.child import TrainerLaunch


def hook(launch: TrainerLaunch) -> Callable[[int], None]:
    inner = faults.hook(launch)
    log = Path(os.environ["LORABOX_TEST_STEP_LOG_DIR"], f"{launch.job_id}.steps")

    def step_hook(step: int) -> None:
        with log.open("a") as out:
            out.write(f"{step} {time.time()}\n")
        inner(step)

    return step_hook


def step_starts(log_dir: Path, job_id: str) -> list[tuple[int, float]]:
    path = log_dir / f"{job_id}.steps"
    lines = path.read_text().split() if path.exists() else []
    return [(int(s), float(t)) for s, t in zip(lines[::2], lines[1::2], strict=True)]
