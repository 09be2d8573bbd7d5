"""Test-only trainer hooks, loaded in the trainer's process via LORABOX_TEST_STEP_HOOK.

``hook(spec)`` runs when a trainer process starts: it drops a marker file named
``<job id>.<pid>`` in LORABOX_TEST_MARKER_DIR (so tests count trainer starts and find the
process to kill) and returns a step hook that sleeps LORABOX_TEST_STEP_SLEEP_S per step
(jobs long enough to interrupt) and, for a job whose output_name is ``raise-oom``, raises
``torch.cuda.OutOfMemoryError`` at step 2: the one fault these tests cannot produce for real;
for ``poison-nan`` it fills the trainable LoRA weights with NaN before step 3.
With LORABOX_TEST_FILL_DISK_AT_STEP=N it fills the (small, test-mounted) file system holding
the job's files at step N, so the next checkpoint save meets a real ENOSPC.

Slow phases, for the cancel races, chosen by the job's output_name: ``slow-load`` reads the
base model LORABOX_TEST_LOAD_SLEEP_S (3) late, a call the trainer can't interrupt (a big
``from_single_file``); ``slow-cache`` takes LORABOX_TEST_ENCODE_SLEEP_S (0.5) per latent-caching
VAE batch; ``slow-save`` holds every LoRA and training-state file LORABOX_TEST_SAVE_SLEEP_S (1)
after writing it and before its rename, the window a kill must not publish. Each prints a line
to the job's log (``test hook: ...``) that tests wait for.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.child import TrainerLaunch
from typing import Any

OOM_NAME = "raise-oom"
NAN_NAME = "poison-nan"  # the LoRA weights turn NaN before step 3: the trainer must notice
SLOW_LOAD, SLOW_CACHE, SLOW_SAVE = "slow-load", "slow-cache", "slow-save"


def hook(launch: TrainerLaunch) -> Callable[[int], None]:
    marker_dir = os.environ.get("LORABOX_TEST_MARKER_DIR")
    if marker_dir:
        Path(marker_dir, f"{launch.job_id}.{os.getpid()}").touch()
    sleep_s = float(os.environ.get("LORABOX_TEST_STEP_SLEEP_S", "0"))
    name = launch.job.config.output_name
    oom, nan = name == OOM_NAME, name == NAN_NAME
    fill_at = int(os.environ.get("LORABOX_TEST_FILL_DISK_AT_STEP", "0"))
    slow_phase(name)

    def step_hook(step: int) -> None:
        if step == fill_at:
            fill_disk(launch.job.output_dir.parent.parent / "filler")
        if nan and step == 3:
            poison_trainable_weights()
        if oom and step == 2:
            import torch

            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        time.sleep(sleep_s)

    return step_hook


def slow_phase(name: str | None) -> None:
    """Wraps one of the trainer's own functions (looked up at call time) with a sleep."""
    import trainer.data.latents
    import trainer.lora.kohya_file
    import trainer.run
    import trainer.state.training_state

    def slowed(module: Any, attr: str, env: str, default: str, after: bool = False) -> None:
        original, sleep_s = getattr(module, attr), float(os.environ.get(env, default))

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            print(f"test hook: {attr} starts", flush=True)
            if not after:
                time.sleep(sleep_s)
            result = original(*args, **kwargs)
            if after:
                time.sleep(sleep_s)
            print(f"test hook: {attr} ends", flush=True)
            return result

        setattr(module, attr, wrapper)

    if name == SLOW_LOAD:
        slowed(trainer.run, "load_sdxl", "LORABOX_TEST_LOAD_SLEEP_S", "3")
    elif name == SLOW_CACHE:
        slowed(trainer.data.latents, "_encode_batch", "LORABOX_TEST_ENCODE_SLEEP_S", "0.5")
    elif name == SLOW_SAVE:  # the file is written (as its temporary), not yet renamed
        for module in (trainer.lora.kohya_file, trainer.state.training_state):
            slowed(module, "save_file", "LORABOX_TEST_SAVE_SLEEP_S", "1", after=True)


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
