"""Kohya's sample prompt lines: ``a cat --n blurry --w 768 --d 1``.

Read as sd-scripts ``library/train_util.py: line_to_prompt_dict`` reads them.

One prompt a line; blank lines and lines starting with ``#`` are skipped. Options
follow the prompt, each introduced by the literal `` --`` (sd-scripts splits the
line on it, so a negative prompt runs up to the next option); option names are
case-insensitive. sd-scripts logs and skips an option it cannot read; here a
malformed or unknown option is an error, so the payload edge refuses it before
the job is queued rather than a run sampling something the user did not ask for.

Torch-free on purpose: ``trainer.config`` validates payloads with this module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

SAMPLERS = (
    *("ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm_2", "dpm_2_a", "dpmsolver"),
    *("dpmsolver++", "dpmsingle", "k_lms", "k_euler", "k_euler_a", "k_dpm_2", "k_dpm_2_a"),
)
"""sd-scripts' ``--sample_sampler`` names (``library/train_util.py: get_my_scheduler``)."""

DEFAULT_SIDE, MIN_SIDE, MAX_SIDE = 512, 64, 4096
DEFAULT_STEPS, MAX_STEPS = 30, 1000
DEFAULT_SCALE = 7.5
MAX_SEED = 2**64 - 1  # torch.Generator seeds are unsigned 64-bit

_WHOLE = re.compile(r"\d+")


class PromptError(ValueError):
    """A prompt line that cannot be read; the message names the line and the option."""


@dataclass(frozen=True)
class SamplePrompt:
    index: int  # 0-based among the prompt lines: the ``_<index:02d>_`` of Kohya's file name
    prompt: str
    negative_prompt: str = ""
    width: int = DEFAULT_SIDE
    height: int = DEFAULT_SIDE
    steps: int = DEFAULT_STEPS
    scale: float = DEFAULT_SCALE
    seed: int | None = None  # None: the run seed + index (see ``seed_for``)
    sampler: str | None = None  # None: the run's sample_sampler

    def seed_for(self, run_seed: int) -> int:
        """``--d``, else the run seed + the prompt's index: reproducible from the run's seed,
        the same for a prompt at every sampling point, different between prompts."""
        return self.seed if self.seed is not None else (run_seed + self.index) % (MAX_SEED + 1)


def _whole(value: str) -> int:
    if not _WHOLE.fullmatch(value):
        raise ValueError(f"needs a whole number, got {value!r}")
    return int(value)


def _side(value: str) -> int:
    # sd-scripts floors to a multiple of 8 (the VAE's factor) with 64 at least.
    side = _whole(value)
    if side > MAX_SIDE:
        raise ValueError(f"must be at most {MAX_SIDE} pixels, got {side}")
    return max(MIN_SIDE, side - side % 8)


def _steps(value: str) -> int:
    return max(1, min(MAX_STEPS, _whole(value)))  # sd-scripts clamps, it does not refuse


def _scale(value: str) -> float:
    try:
        scale = float(value)
    except ValueError:
        raise ValueError(f"needs a number, got {value!r}") from None
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"needs a number ≥ 0, got {value!r}")
    return scale


def _seed(value: str) -> int:
    seed = _whole(value)
    if seed > MAX_SEED:
        raise ValueError(f"must be at most {MAX_SEED}, got {seed}")
    return seed


def _sampler(value: str) -> str:
    name = value.lower()
    if name not in SAMPLERS:
        raise ValueError(f"needs one of {', '.join(SAMPLERS)}, got {value!r}")
    return name


# option -> (SamplePrompt field, reader of the option's text)
_OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "n": ("negative_prompt", str),
    "w": ("width", _side),
    "h": ("height", _side),
    "s": ("steps", _steps),
    "l": ("scale", _scale),
    "d": ("seed", _seed),
    "ss": ("sampler", _sampler),
}


def prompt_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, stripped line) of every prompt line of ``text``."""
    lines = enumerate(text.splitlines(), start=1)
    return [(n, line.strip()) for n, line in lines if line.strip() and line.strip()[0] != "#"]


def parse_line(line: str, index: int, number: int | None = None) -> SamplePrompt:
    """One prompt line; ``number`` (the line number) only words the error."""
    where = f"line {number if number is not None else index + 1}"
    # A leading space lets a line that starts with an option mean an empty prompt.
    prompt, *options = f" {line.strip()}".split(" --")
    values: dict[str, Any] = {}
    for option in options:
        name, _, value = option.partition(" ")
        name, value = name.lower(), value.strip()
        if name not in _OPTIONS:
            known = ", ".join(f"--{o}" for o in _OPTIONS)
            raise PromptError(f"{where}: unknown option --{name} (the options are {known})")
        field, read = _OPTIONS[name]
        if not value and name != "n":
            raise PromptError(f"{where}: --{name} needs a value")
        try:
            values[field] = read(value)
        except ValueError as exc:
            raise PromptError(f"{where}: --{name} {exc}") from None
    return SamplePrompt(index, prompt.strip(), **values)


@lru_cache(maxsize=8)
def parse_prompts(text: str) -> tuple[SamplePrompt, ...]:
    """Every prompt of ``text``; raises PromptError at the first bad line.

    Cached: the loop asks at every sampling point, the text never changes in a run.
    """
    return tuple(parse_line(line, i, n) for i, (n, line) in enumerate(prompt_lines(text)))


def prompt_problems(text: str) -> list[str]:
    """One message per line that cannot be read (every line, not only the first)."""
    problems = []
    for index, (number, line) in enumerate(prompt_lines(text)):
        try:
            parse_line(line, index, number)
        except PromptError as exc:
            problems.append(str(exc))
    return problems
