"""Known-harmless library notices: hidden by exact pattern, counted, summarised in one line.

A training log (and the console of ``lorabox up``) should say what the training does, not
that transformers lacks torchvision for image processors nobody uses. Each entry below is a
message the ML stack prints on every run and that changes nothing for lorabox, matched by
logger and exact text, so that any other warning from the same library still shows. What is
hidden is counted (``KnownNoise.summary``), never silently lost.

The libraries' own switches do the rest: diffusers' and transformers' progress bars off
(``diffusers.utils.logging.disable_progress_bar``, ``transformers.utils.logging.
disable_progress_bar``), their records handed to the root logger instead of their own
stderr handlers (``disable_default_handler`` + ``enable_propagation``), and Python warnings
routed through logging (``logging.captureWarnings``), so one filter on the root handler sees
them all.

Torch-free at import: ``lorabox up`` uses it in processes that never load the ML stack.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
from collections import Counter
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True)
class Pattern:
    label: str  # what the summary calls it
    logger: str  # the emitting logger's name, or a parent of it
    message: re.Pattern[str]

    def matches(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name != self.logger and not name.startswith(self.logger + "."):
            return False
        return bool(self.message.search(record.getMessage()))


KNOWN_HARMLESS = (
    # transformers/utils/import_utils.py (_LazyModule.__getattr__): image processors, which
    # lorabox never uses, fall back to their PIL version on a torch without torchvision.
    Pattern(
        "transformers image processors without torchvision",
        "transformers",
        re.compile(r"^`\w+` requires torchvision \(not installed\); falling back to `\w+Pil`"),
    ),
    # diffusers/models/modeling_utils.py (ModelMixin.to): printed on every dtype cast, with
    # the modules to keep in fp32; harmless only when there are none (the list is empty).
    Pattern(
        "diffusers float32 notice with no float32 modules",
        "diffusers",
        re.compile(r"^There are modules in \w+ that should be kept in float32: \[\]\."),
    ),
    # transformers/modeling_utils.py (PreTrainedModel.gradient_checkpointing_enable): the old
    # name of the call trainer/run.py checkpoints the text encoders with; works until v6.
    Pattern(
        "transformers gradient_checkpointing_enable deprecation",
        "py.warnings",
        re.compile(r"FutureWarning: `gradient_checkpointing_enable` is deprecated"),
    ),
    # bitsandbytes/backends/cpu/ops.py: an optional downloadable kernel for 4-bit matmuls on
    # CPUs with AVX512-BF16; lorabox trains no 4-bit model on a CPU.
    Pattern(
        "bitsandbytes optional 4-bit CPU kernel not installed",
        "bitsandbytes",
        re.compile(r"^Failed to load CPU gemm_4bit_forward from kernels-community"),
    ),
)

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class KnownNoise(logging.Filter):
    """Drops records that match a known-harmless pattern and counts them by label."""

    def __init__(self, patterns: tuple[Pattern, ...] = KNOWN_HARMLESS) -> None:
        super().__init__()
        self.patterns = patterns
        self.hidden: Counter[str] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        for pattern in self.patterns:
            if pattern.matches(record):
                self.hidden[pattern.label] += 1
                return False
        return True

    def summary(self) -> str | None:
        """One line naming what was hidden, or None when nothing was."""
        if not self.hidden:
            return None
        each = ", ".join(f"{label} x{count}" for label, count in sorted(self.hidden.items()))
        return f"hid {sum(self.hidden.values())} known-harmless library message(s): {each}"


def route_library_logging() -> None:
    """The ML libraries' records go to the root logger (and its filter), without bars."""
    for name in ("diffusers.utils.logging", "transformers.utils.logging"):
        try:
            library = importlib.import_module(name)
        except ImportError:
            continue
        library.disable_default_handler()
        library.enable_propagation()
        library.disable_progress_bar()


def quiet_logging(
    stream: TextIO | None = None, *, level: int = logging.INFO, libraries: bool = True
) -> KnownNoise:
    """Root logging to ``stream`` (stderr) with the known-noise filter; Python warnings
    through it too. ``libraries``: also reroute diffusers and transformers (imports them)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    noise = KnownNoise()
    handler.addFilter(noise)
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.captureWarnings(True)
    if libraries:
        route_library_logging()
    return noise
