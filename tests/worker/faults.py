"""Test-only trainer hooks, loaded in the trainer's process via LORABOX_TEST_STEP_HOOK.

``hook(spec)`` runs when a trainer process starts: it drops a marker file named
``<job id>.<pid>`` in LORABOX_TEST_MARKER_DIR (so tests count trainer starts and find the
process to kill) and returns a step hook that sleeps LORABOX_TEST_STEP_SLEEP_S per step
(jobs long enough to interrupt) and, for a job whose output_name is ``raise-oom``, raises
``torch.cuda.OutOfMemoryError`` at step 2: the one fault these tests cannot produce for real;
for ``poison-nan`` it fills the trainable LoRA weights with NaN before step 3.
With LORABOX_TEST_FILL_DISK_AT_STEP=N it fills the (small, test-mounted) file system holding
the job's files at step N, so the next checkpoint save meets a real ENOSPC.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

OOM_NAME = "raise-oom"
NAN_NAME = "poison-nan"  # the LoRA weights turn NaN before step 3: the trainer must notice


def hook(spec: dict[str, Any]) -> Callable[[int], None]:
    marker_dir = os.environ.get("LORABOX_TEST_MARKER_DIR")
    if marker_dir:
        Path(marker_dir, f"{spec['job_id']}.{os.getpid()}").touch()
    sleep_s = float(os.environ.get("LORABOX_TEST_STEP_SLEEP_S", "0"))
    oom = spec["config"].get("output_name") == OOM_NAME
    nan = spec["config"].get("output_name") == NAN_NAME
    fill_at = int(os.environ.get("LORABOX_TEST_FILL_DISK_AT_STEP", "0"))

    def step_hook(step: int) -> None:
        if step == fill_at:
            fill_disk(Path(spec["output_dir"]).parent.parent / "filler")
        if nan and step == 3:
            poison_trainable_weights()
        if oom and step == 2:
            import torch

            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        time.sleep(sleep_s)

    return step_hook


def trainer_starts(marker_dir: Path) -> dict[str, list[int]]:
    """job id -> pids of the trainer processes that started for it, in start order."""
    starts: dict[str, list[int]] = {}
    # Directory order is arbitrary; the markers' creation times give the start order.
    for marker in sorted(marker_dir.iterdir(), key=lambda path: path.stat().st_mtime_ns):
        job_id, pid = marker.name.split(".")
        starts.setdefault(job_id, []).append(int(pid))
    return starts


def poison_trainable_weights() -> None:
    import gc

    import torch

    for obj in gc.get_objects():
        if isinstance(obj, torch.nn.Parameter) and obj.requires_grad:
            with torch.no_grad():
                obj.fill_(float("nan"))


def fill_disk(path: Path) -> None:
    block = b"\0" * (64 * 1024)
    with path.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(block)
        except OSError:
            pass
    with path.open("ab", buffering=0) as out:  # the last few bytes too
        try:
            while True:
                out.write(b"\0")
        except OSError:
            pass
