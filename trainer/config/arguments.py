"""``optimizer_args`` / ``lr_scheduler_args``: Kohya's "k=v k=v" strings.

Parsing follows the GUI and sd-scripts: the GUI
(``kohya_gui/common_gui.py: validate_args_setting``) removes double quotes and
requires ``key=value`` items separated by whitespace, with no spaces around
``=``; sd-scripts (``library/train_util.py: get_optimizer`` and
``get_scheduler_fix``) splits each item on its single ``=`` and reads the value
with :func:`ast.literal_eval`. So ``betas=0.9,0.999`` is a tuple,
``decouple=True`` a bool, ``d_coef=2`` an int, and a bare word (``foo=bar``) is
an error — text values need single quotes (``key='text'``).

Deliberate deviations: runs of whitespace between items are accepted (the GUI
regex wants single spaces); lists are stored as tuples so the parsed values
survive a JSON round trip unchanged; NaN/Infinity, complex numbers, sets and
bytes are refused because no optimizer needs them and JSON cannot carry them.

Argument names are checked against allow-lists of each optimizer's and
schedule's constructor parameters, written here so that validation never has to
import torch, bitsandbytes or transformers.
"""

from __future__ import annotations

import ast
import math
import re
from typing import Any

_GUI_FORMAT = re.compile(r"^(\S+=\S+)(\s+\S+=\S+)*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_ADAM = frozenset({"betas", "eps", "weight_decay", "amsgrad"})
# bitsandbytes >= 0.46 dropped percentile_clipping and block_wise from its optimizers' signatures.
_EIGHT_BIT = frozenset({"min_8bit_size"})
_LION = frozenset({"betas", "weight_decay"})
_SGD = frozenset({"momentum", "weight_decay"})  # nesterov is set; dampening must stay 0
# dadaptation 3.2 (dadaptation/*.py, dadaptation/experimental/*.py); fsdp_in_use is left out
# (one process per GPU, no FSDP).
_DADAPT = frozenset({"d0", "growth_rate", "log_every", "weight_decay"})
_DADAPT_ADAM = _DADAPT | {"betas", "eps", "decouple"}
_DADAPT_ADAN = _DADAPT | {"betas", "eps", "no_prox"}

OPTIMIZER_ARGUMENTS: dict[str, frozenset[str]] = {
    "AdamW": _ADAM | {"maximize", "foreach", "fused"},
    "AdamW8bit": _ADAM | _EIGHT_BIT,
    "PagedAdamW8bit": _ADAM | _EIGHT_BIT,
    "PagedAdamW32bit": _ADAM | _EIGHT_BIT,
    # lion-pytorch: the arguments its 0.0.6 (kohya_ss v24.1.7) and later versions share.
    "Lion": _LION,
    "Lion8bit": _LION | _EIGHT_BIT,
    "PagedLion8bit": _LION | _EIGHT_BIT,
    "SGDNesterov": _SGD | {"maximize", "foreach"},
    "SGDNesterov8bit": _SGD | _EIGHT_BIT,
    "Adafactor": frozenset(
        {"relative_step", "scale_parameter", "warmup_init", "eps", "clip_threshold"}
        | {"decay_rate", "beta1", "weight_decay"}
    ),
    "Prodigy": frozenset(
        {"d_coef", "betas", "beta3", "weight_decay", "decouple", "use_bias_correction"}
        | {"safeguard_warmup", "d0", "growth_rate", "eps"}
    ),
    "DAdaptation": _DADAPT_ADAM,  # sd-scripts: DAdaptation is DAdaptAdamPreprint
    "DAdaptAdamPreprint": _DADAPT_ADAM,
    "DAdaptAdam": _DADAPT_ADAM | {"use_bias_correction"},
    "DAdaptAdaGrad": _DADAPT | {"momentum", "eps"},
    "DAdaptAdan": _DADAPT_ADAN,
    "DAdaptAdanIP": _DADAPT_ADAN,
    "DAdaptLion": (_DADAPT - {"growth_rate"}) | {"betas"},
    "DAdaptSGD": _DADAPT | {"momentum"},
}
"""Keyword arguments each optimizer's constructor accepts besides params and lr
(tests/trainer/test_optimizers_kohya.py checks each against the installed constructor)."""

SCHEDULER_ARGUMENTS: dict[str, frozenset[str]] = {
    # sd-scripts already passes num_cycles (cosine_with_restarts) and power
    # (polynomial) from their own keys; repeating them would be a TypeError there.
    "cosine": frozenset({"num_cycles"}),
    "polynomial": frozenset({"lr_end"}),
    # diffusers get_piecewise_constant_schedule(optimizer, step_rules, last_epoch); last_epoch
    # is a resume setting (a job resumes from its own state).
    "piecewise_constant": frozenset({"step_rules"}),
}
"""Extra keyword arguments each schedule accepts; schedules not listed take none."""


def step_rules_problem(rules: object) -> str | None:
    """Why ``step_rules`` can't be read by diffusers' ``get_piecewise_constant_schedule``
    (``"m1:s1,m2:s2,...,m_last"``: multiplier m_i before optimizer step s_i, then m_last),
    or None."""
    if not isinstance(rules, str):
        return "step_rules must be text in single quotes, e.g. step_rules='1:100,0.1'"
    *steps, last = rules.split(",")
    try:
        multipliers = [float(last)]
        for rule in steps:
            multiplier, step = rule.split(":")
            multipliers.append(float(multiplier))
            int(step)
        if not all(math.isfinite(m) for m in multipliers):
            raise ValueError("not finite")
    except ValueError:
        return (
            f"step_rules {rules!r} must be 'multiplier:step,...,multiplier' "
            "with whole steps, e.g. '1:100,0.5:300,0.1'"
        )
    return None


def parse_arguments(text: str) -> dict[str, Any]:
    """Parse a Kohya "k=v k=v" string into ``{name: value}``; ValueError names the bad item."""
    cleaned = text.replace('"', "").strip()
    if not cleaned:
        return {}
    if not _GUI_FORMAT.match(cleaned):
        raise ValueError(
            "must be space-separated key=value items with no spaces around '=' "
            "(e.g. weight_decay=0.01 betas=0.9,0.99)"
        )
    result: dict[str, Any] = {}
    for item in cleaned.split():
        if item.count("=") != 1:
            raise ValueError(f"item {item!r} must contain exactly one '='")
        name, literal = item.split("=")
        if not _NAME.match(name):
            raise ValueError(f"item {item!r}: {name!r} is not a valid argument name")
        if name in result:
            raise ValueError(f"argument {name!r} is given twice")
        result[name] = _literal(name, literal)
    return result


def _literal(name: str, literal: str) -> Any:
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError(
            f"item '{name}={literal}': {literal!r} is not a Python literal "
            f"(text values need single quotes: {name}='{literal}')"
        ) from None
    return freeze(value, name)


def freeze(value: Any, name: str) -> Any:
    """Check an argument value and make it JSON-stable: lists become tuples.

    Raises ValueError for NaN/Infinity and for types JSON cannot carry.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"argument {name!r} must be finite (NaN and Infinity are not allowed)")
        return value
    if isinstance(value, list | tuple):
        return tuple(freeze(v, name) for v in value)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: freeze(v, name) for k, v in value.items()}
    raise ValueError(f"argument {name!r} has an unsupported value type {type(value).__name__}")


def unknown_arguments(args: dict[str, Any], allowed: frozenset[str]) -> list[str]:
    """Names in ``args`` that are not in ``allowed``, sorted."""
    return sorted(set(args) - allowed)
