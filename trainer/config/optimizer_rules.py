"""Rules for the optimizers and the piecewise_constant schedule that sd-scripts applies
while it builds them (``library/train_util.py: get_optimizer``, ``get_scheduler_fix``).

Applied at the payload edge, so that what sd-scripts would only find at the first step
(a crash) is a problem at submit, and what it logs is a warning:

* SGDNesterov / SGDNesterov8bit: ``momentum`` defaults to 0.9 (sd-scripts sets it, so
  ``ss_optimizer`` lists it); Nesterov needs a momentum above 0 (torch ``SGD`` raises,
  bitsandbytes ``SGD8bit`` refuses momentum 0).
* The adaptive optimizers (D-Adaptation, Prodigy): sd-scripts warns when the rate is at
  most 0.1 (they expect about 1.0). DAdaptAdam, DAdaptAdamPreprint (= DAdaptation),
  DAdaptLion, DAdaptSGD and Prodigy raise "Setting different lr values in different
  parameter groups is only supported for values of 0" at their first step
  (``dadaptation/dadapt_adam.py: DAdaptAdam.step``, ``prodigyopt/prodigy.py: Prodigy.step``)
  when the trained parts' rates differ: a problem here.
* ``full_fp16`` with torch's AdamW: its moments take the weights' dtype and its eps (1e-8)
  is 0 in fp16, so a gradient that underflows divides by zero (inf/NaN); sd-scripts trains it
  anyway - a warning here.
* piecewise_constant: ``step_rules`` is required and must parse as diffusers'
  ``get_piecewise_constant_schedule`` reads it; the schedule has no warmup, which
  sd-scripts ignores silently (a warning here; ``ss_lr_warmup_steps`` still records it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainer.config.arguments import step_rules_problem
from trainer.config.errors import ConfigWarning, Problem

NESTEROV = ("SGDNesterov", "SGDNesterov8bit")
ADAPTIVE = (
    *("DAdaptation", "DAdaptAdaGrad", "DAdaptAdam", "DAdaptAdan", "DAdaptAdanIP"),
    *("DAdaptAdamPreprint", "DAdaptLion", "DAdaptSGD", "Prodigy"),
)
# These compare every group's rate with the largest one in step() and raise if one differs.
ONE_RATE = ("DAdaptation", "DAdaptAdamPreprint", "DAdaptAdam", "DAdaptLion", "DAdaptSGD", "Prodigy")


def optimizer_rules(
    name: str,
    args: dict[str, Any],
    fields: Mapping[str, Any],
    warnings: list[ConfigWarning],
    problems: list[Problem],
) -> None:
    """Defaults sd-scripts adds to ``args`` (in place), and the optimizer's warnings and
    problems for the effective part rates in ``fields``."""
    if name in NESTEROV:
        args.setdefault("momentum", 0.9)
        if not _positive(args["momentum"]):
            problems.append(
                Problem("optimizer_args", f"{name} needs momentum > 0, got {args['momentum']!r}")
            )
    if name == "AdamW" and fields["full_fp16"]:
        warnings.append(
            ConfigWarning(
                "full_fp16", "AdamW's eps (1e-8) is 0 in fp16 weights' state: a vanishing "
                "gradient gives NaN; prefer AdamW8bit or Adafactor, or bf16 with full_bf16",
            )
        )  # fmt: skip
    if name not in ADAPTIVE:
        return
    rates = {fields[rate] for part, rate in _PARTS if fields[part]}
    if rates and max(rates) <= 0.1:
        warnings.append(
            ConfigWarning(
                "learning_rate", f"{name} adapts the rate itself; rates around 1.0 are usual"
            )
        )
    if name in ONE_RATE and len(rates) > 1:
        problems.append(
            Problem(
                "text_encoder_lr",
                f"{name} needs one rate for every trained part (it stops at its first step "
                f"otherwise); got {', '.join(str(r) for r in sorted(rates))}",
            )
        )


_PARTS = (("train_unet", "unet_lr"), ("train_text_encoder", "text_encoder_lr"))


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def schedule_rules(
    scheduler: str,
    args: Mapping[str, Any],
    fields: Mapping[str, Any],
    warnings: list[ConfigWarning],
    problems: list[Problem],
) -> None:
    """piecewise_constant: ``step_rules`` present and readable; warmup ignored."""
    if scheduler != "piecewise_constant":
        return
    if "step_rules" not in args:
        problems.append(
            Problem(
                "lr_scheduler_args",
                "piecewise_constant needs step_rules, e.g. step_rules='1:100,0.5:300,0.1'",
            )
        )
    elif problem := step_rules_problem(args["step_rules"]):
        problems.append(Problem("lr_scheduler_args", problem))
    if fields["lr_warmup_percent"] > 0 or fields["lr_warmup_steps"]:
        key = "lr_warmup_steps" if fields["lr_warmup_steps"] else "lr_warmup"
        warnings.append(
            ConfigWarning(key, "ignored: piecewise_constant follows step_rules only (sd-scripts)")
        )
