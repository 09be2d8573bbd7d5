"""A one-line live progress bar for ``lorabox submit --wait``."""

from __future__ import annotations

import sys
from typing import Any, TextIO

WIDTH = 30


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def progress_line(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    status = job["status"]
    if status == "queued":
        return f"queued (position {job.get('queue_position') or '?'})"
    step, total = progress.get("step") or 0, progress.get("total_steps") or 0
    filled = int(WIDTH * step / total) if total else 0
    bar = "#" * filled + "-" * (WIDTH - filled)
    loss = progress.get("avg_loss")
    loss_text = f"loss {loss:.4f}" if isinstance(loss, (int, float)) else "loss -"
    phase = progress.get("phase") or status
    return (
        f"[{bar}] {step}/{total} {phase} epoch {progress.get('epoch') or 0}/"
        f"{progress.get('total_epochs') or 0} {loss_text} ETA {_duration(progress.get('eta_s'))}"
    )


class ProgressBar:
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.interactive = stream.isatty()
        self.last = ""

    def show(self, job: dict[str, Any]) -> None:
        line = progress_line(job)
        if line == self.last:
            return
        self.last = line
        if self.interactive:
            self.stream.write("\r" + line.ljust(100)[:100])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.interactive and self.last:
            self.stream.write("\n")
            self.stream.flush()
