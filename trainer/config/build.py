"""From normalized Kohya values to TrainingConfig fields: Kohya's "0 / empty means unset" rules.

Rules applied here (docs/kohya-semantics.md, "Unset values" and "Steps, epochs and
warmup"), each as sd-scripts ends up behaving after the GUI
(``kohya_gui/lora_gui.py: train_model``) drops ``0`` / ``""`` from its TOML:

* per-key ``unset`` values from the registry (``seed: 0`` → None = random,
  ``network_alpha: 0`` → 1, ``max_grad_norm: 0`` → 1.0 — clipping stays on, a
  GUI quirk kept on purpose —, ``max_train_steps: 0`` / ``max_train_epochs: 0``
  → None, ``vae_batch_size: 0`` → 1, ``max_timestep: 0`` → 1000,
  ``multires_noise_discount: 0`` → 0.3, ...);
* learning rates: ``unet_lr: 0`` with ``text_encoder_lr > 0`` trains the text
  encoders only (``train_unet=False``) and the reverse; both 0 → both parts use
  ``learning_rate``; all three 0 → a problem. The effective rate of a part that
  is not trained is 0.0. ``network_train_unet_only`` /
  ``network_train_text_encoder_only`` (sd-scripts spellings) switch a part off;
* ``output_name`` ``""`` or ``"..."`` → ``"last"``; ``cache_latents_to_disk``
  implies ``cache_latents`` and ``cache_text_encoder_outputs_to_disk`` implies
  ``sdxl_cache_text_encoder_outputs`` (as sd-scripts: ``library/sdxl_train_util.py:
  verify_sdxl_training_args``);
* the ``constant`` schedule with warmup → warmup 0 and a warning (the GUI zeroes
  it; sd-scripts would raise);
* the optimizers' and the piecewise_constant schedule's own rules
  (:mod:`trainer.config.optimizer_rules`);
* Adafactor: ``relative_step`` defaults to True (as sd-scripts); then the
  schedule becomes ``adafactor``, the part rates become ``learning_rate`` (the
  initial rate) and warmup is dropped, each with a warning;
* sampling settings that make no image (an interval without prompts, prompts
  without an interval) and a steps interval the epochs interval overrides are
  warnings: sd-scripts goes quietly without samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainer.config.arguments import (
    OPTIMIZER_ARGUMENTS,
    SCHEDULER_ARGUMENTS,
    parse_arguments,
    unknown_arguments,
)
from trainer.config.errors import ConfigWarning, Problem
from trainer.config.keys import KEYS
from trainer.config.network_rules import network_fields, network_warnings
from trainer.config.optimizer_rules import optimizer_rules, schedule_rules
from trainer.sampling.prompts import prompt_lines

Built = tuple[dict[str, Any], list[ConfigWarning], list[Problem]]


def build_fields(values: Mapping[str, Any]) -> Built:
    """TrainingConfig keyword arguments for normalized Kohya ``values`` (every key present)."""
    fields: dict[str, Any] = {
        spec.field: spec.internal(values[key]) for key, spec in KEYS.items() if spec.field
    }
    warnings: list[ConfigWarning] = []
    problems: list[Problem] = []
    side_w, side_h = (int(s) for s in values["max_resolution"].split(","))
    fields["resolution"] = (side_w, side_h)
    if values["output_name"] in ("", "..."):
        fields["output_name"] = "last"
    fields["cache_latents"] = values["cache_latents"] or values["cache_latents_to_disk"]
    fields["cache_text_encoder_outputs"] = (
        values["sdxl_cache_text_encoder_outputs"] or values["cache_text_encoder_outputs_to_disk"]
    )
    _learning_rates(values, fields, problems)
    _optimizer(values, fields, warnings, problems)
    _schedule(values, fields, warnings, problems)
    _notes(values, warnings)
    _sampling_notes(values, warnings)
    warnings += network_warnings(values)
    network_fields(values, fields)
    return fields, warnings, problems


def _learning_rates(v: Mapping[str, Any], fields: dict[str, Any], problems: list[Problem]) -> None:
    base, unet, text = v["learning_rate"], v["unet_lr"], v["text_encoder_lr"]
    if base == unet == text == 0:
        problems.append(
            Problem("learning_rate", "learning_rate, unet_lr and text_encoder_lr are all 0")
        )
    train_unet = not (unet == 0 and text > 0) and not v["network_train_text_encoder_only"]
    train_text = not (text == 0 and unet > 0) and not v["network_train_unet_only"]
    if v["network_train_unet_only"] and v["network_train_text_encoder_only"]:
        problems.append(
            Problem(
                "network_train_unet_only", "cannot be combined with network_train_text_encoder_only"
            )
        )
    fields["train_unet"] = train_unet
    fields["train_text_encoder"] = train_text
    fields["unet_lr"] = (unet or base) if train_unet else 0.0
    fields["text_encoder_lr"] = (text or base) if train_text else 0.0


def _optimizer(
    v: Mapping[str, Any],
    fields: dict[str, Any],
    warnings: list[ConfigWarning],
    problems: list[Problem],
) -> None:
    name = v["optimizer"]
    try:
        args = parse_arguments(v["optimizer_args"])
    except ValueError as exc:
        problems.append(Problem("optimizer_args", str(exc)))
        args = {}
    allowed = OPTIMIZER_ARGUMENTS.get(name, frozenset())
    for unknown in unknown_arguments(args, allowed):
        problems.append(
            Problem(
                "optimizer_args",
                f"{unknown!r} is not an argument of {name} "
                f"(accepted: {', '.join(sorted(allowed))})",
            )
        )
    if name == "Adafactor":
        args.setdefault("relative_step", True)
        if args["relative_step"]:
            _adafactor_relative_step(fields, warnings)
    optimizer_rules(name, args, fields, warnings, problems)
    fields["optimizer_args"] = args


def _adafactor_relative_step(fields: dict[str, Any], warnings: list[ConfigWarning]) -> None:
    # sd-scripts: Adafactor with relative_step computes its own rates; the
    # schedule becomes "adafactor" with learning_rate as the initial rate, and
    # the per-part rates are ignored.
    if fields["lr_scheduler"] != "adafactor":
        warnings.append(
            ConfigWarning(
                "lr_scheduler",
                f"Adafactor with relative_step=True uses the adafactor schedule, "
                f"not {fields['lr_scheduler']!r} (set relative_step=False to keep it)",
            )
        )
        fields["lr_scheduler"] = "adafactor"
    base = fields["learning_rate"]
    for part, rate in (("train_unet", "unet_lr"), ("train_text_encoder", "text_encoder_lr")):
        if fields[part] and fields[rate] != base:
            warnings.append(
                ConfigWarning(
                    rate, f"ignored by Adafactor's relative step; learning_rate {base} is used"
                )
            )
            fields[rate] = base


def _schedule(
    v: Mapping[str, Any],
    fields: dict[str, Any],
    warnings: list[ConfigWarning],
    problems: list[Problem],
) -> None:
    scheduler = fields["lr_scheduler"]
    try:
        args = parse_arguments(v["lr_scheduler_args"])
    except ValueError as exc:
        problems.append(Problem("lr_scheduler_args", str(exc)))
        args = {}
    allowed = SCHEDULER_ARGUMENTS.get(scheduler, frozenset())
    for unknown in unknown_arguments(args, allowed):
        accepted = ", ".join(sorted(allowed)) or "none"
        problems.append(
            Problem(
                "lr_scheduler_args",
                f"{unknown!r} is not an argument of the {scheduler} schedule "
                f"(accepted: {accepted})",
            )
        )
    fields["lr_scheduler_args"] = args
    schedule_rules(scheduler, args, fields, warnings, problems)
    has_warmup = fields["lr_warmup_percent"] > 0 or fields["lr_warmup_steps"]
    if scheduler in ("constant", "adafactor") and has_warmup:
        key = "lr_warmup_steps" if fields["lr_warmup_steps"] else "lr_warmup"
        warnings.append(
            ConfigWarning(key, f"the {scheduler} schedule has no warmup; warmup set to 0")
        )
        fields["lr_warmup_percent"] = 0.0
        fields["lr_warmup_steps"] = None


def _notes(v: Mapping[str, Any], warnings: list[ConfigWarning]) -> None:
    """Warnings sd-scripts or the GUI print for accepted but surprising values."""
    if v["max_grad_norm"] == 0:
        warnings.append(
            ConfigWarning(
                "max_grad_norm", "0 means unset: gradients are still clipped at 1.0 (as the GUI)"
            )
        )
    if v["clip_skip"] > 1:
        warnings.append(
            ConfigWarning("clip_skip", "has no effect on SDXL training; recorded in metadata only")
        )
    if v["max_train_epochs"] and v["max_train_steps"]:
        warnings.append(
            ConfigWarning("max_train_steps", "max_train_epochs is set and takes precedence")
        )


def _sampling_notes(v: Mapping[str, Any], warnings: list[ConfigWarning]) -> None:
    """Sampling settings that make no images (sd-scripts skips sampling silently)."""
    epochs, steps = v["sample_every_n_epochs"], v["sample_every_n_steps"]
    has_prompts = bool(prompt_lines(v["sample_prompts"]))
    if (epochs or steps) and not has_prompts:
        every = "sample_every_n_epochs" if epochs else "sample_every_n_steps"
        warnings.append(
            ConfigWarning("sample_prompts", f"has no prompt: {every} is set, but no image is made")
        )
    if has_prompts and not (epochs or steps):
        warnings.append(
            ConfigWarning(
                "sample_prompts",
                "no image is made: set sample_every_n_epochs or sample_every_n_steps",
            )
        )
    if epochs and steps:
        warnings.append(
            ConfigWarning("sample_every_n_steps", "ignored: sample_every_n_epochs takes precedence")
        )
