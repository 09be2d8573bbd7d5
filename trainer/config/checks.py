"""Range and cross-field rules of a TrainingConfig.

:func:`range_problems` applies the registry to each field (:meth:`KeySpec.check`,
the one range/choice check, plus the values a key's ``supported`` narrows the
GUI choices to). The cross-field rules are the combinations sd-scripts asserts
against (``sdxl_train_network.py: assert_extra_args``,
``library/sdxl_train_util.py: verify_sdxl_training_args`` and the assertions of
``library/train_util.py``) or that would train nothing.

Both return ``(kohya_key, message)`` pairs, so that the payload edge reports them
under the keys the user wrote. ``TrainingConfig`` runs both whenever a config is
validated; the payload edge runs only the cross-field rules, because it has
already checked each Kohya value against its registry entry.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from trainer.config.keys import FIELD_TO_KEY, KEYS
from trainer.config.network_rules import network_problems
from trainer.sampling.prompts import prompt_problems

if TYPE_CHECKING:
    from trainer.config.typed import TrainingConfig

Found = list[tuple[str, str]]

_SAFE_STEM = re.compile(r"^[^/\\\x00]{1,200}$")


def range_problems(config: TrainingConfig) -> Found:
    """Fields outside their registry range, choices or supported values."""
    found: Found = []
    for name, key in FIELD_TO_KEY.items():
        spec, value = KEYS[key], getattr(config, name)
        if value is None:  # an unset optional
            continue
        message = spec.check(value)
        if message is None and spec.supported is not None:
            # A GUI choice lorabox does not train (the payload edge refuses it too).
            reason = spec.refusal(value)
            message = f"value {value!r} refused: {reason}" if reason else None
        if message:
            found.append((key, message))
    return found


def cross_field_problems(config: TrainingConfig) -> Found:
    """Combinations sd-scripts rejects (or that would silently train nothing)."""
    return [
        *_bucket_problems(config),
        *_precision_problems(config),
        *_noise_and_loss_problems(config),
        *_caching_problems(config),
        *_run_problems(config),
        *_sample_problems(config),
        *network_problems(config),
    ]


def _bucket_problems(c: TrainingConfig) -> Found:
    found: Found = []
    step = c.bucket_reso_steps
    if step % 32:
        found.append(
            (
                "bucket_reso_steps",
                f"SDXL needs a multiple of 32 (sd-scripts asserts it), got {step}",
            )
        )
    if not c.enable_bucket:
        return found
    if c.min_bucket_reso > min(c.resolution):
        found.append(
            (
                "min_bucket_reso",
                f"must be ≤ the smaller side of max_resolution ({min(c.resolution)})",
            )
        )
    if c.max_bucket_reso < max(c.resolution):
        found.append(
            (
                "max_bucket_reso",
                f"must be ≥ the larger side of max_resolution ({max(c.resolution)})",
            )
        )
    for key, value in (
        ("min_bucket_reso", c.min_bucket_reso),
        ("max_bucket_reso", c.max_bucket_reso),
    ):
        if step and value % step:
            found.append((key, f"must be a multiple of bucket_reso_steps ({step}), got {value}"))
    return found


def _precision_problems(c: TrainingConfig) -> Found:
    found: Found = []
    if c.full_fp16 and c.full_bf16:
        found.append(("full_bf16", "full_fp16 and full_bf16 exclude each other"))
    elif c.full_fp16 and c.mixed_precision != "fp16":
        found.append(("full_fp16", "requires mixed_precision fp16"))
    elif c.full_bf16 and c.mixed_precision != "bf16":
        found.append(("full_bf16", "requires mixed_precision bf16"))
    if c.fp8_base and c.mixed_precision == "no":
        found.append(("fp8_base", "requires mixed_precision fp16 or bf16"))
    return found


TRAIN_TIMESTEPS = 1000  # the SDXL noise schedule's num_train_timesteps (timesteps 0-999)


def timestep_bounds(c: TrainingConfig) -> tuple[int, int]:
    """(min, max) of the sampled timesteps; an unset max_timestep is the schedule's length,
    as sd-scripts ``library/train_util.py: get_noise_noisy_latents_and_timesteps``."""
    top = TRAIN_TIMESTEPS if c.max_timestep is None else c.max_timestep
    return c.min_timestep, top


def _noise_and_loss_problems(c: TrainingConfig) -> Found:
    found: Found = []
    low, high = timestep_bounds(c)
    if low > high:
        found.append(("min_timestep", f"must not be above max_timestep ({high})"))
    elif low == high == TRAIN_TIMESTEPS:
        # sd-scripts main trains at min_timestep == max_timestep (get_timesteps), but
        # timestep 1000 does not exist: its add_noise would fail on the first step.
        found.append(("min_timestep", "equal to max_timestep trains at that timestep: 0-999"))
    if c.scale_v_pred_loss_like_noise_pred and not c.v_parameterization:
        found.append(("scale_v_pred_loss_like_noise_pred", "requires v_parameterization"))
    if c.v_pred_like_loss and c.v_parameterization:
        found.append(("v_pred_like_loss", "cannot be used with v_parameterization"))
    if c.adaptive_noise_scale and not c.noise_offset:
        found.append(("adaptive_noise_scale", "requires noise_offset > 0"))
    return found


def _caching_problems(c: TrainingConfig) -> Found:
    found: Found = []
    for key, on in (("color_aug", c.color_aug), ("random_crop", c.random_crop)):
        if on and c.cache_latents:
            found.append(
                (key, "cannot be used with cache_latents (cached latents are not re-augmented)")
            )
    if c.cache_text_encoder_outputs:
        clashes: dict[str, Any] = {
            "text_encoder_lr": c.train_text_encoder,
            "shuffle_caption": c.shuffle_caption,
            "caption_dropout_rate": c.caption_dropout_rate,
            "caption_dropout_every_n_epochs": c.caption_dropout_every_n_epochs,
        }
        for key, on in clashes.items():
            if on:
                what = "a trained text encoder" if key == "text_encoder_lr" else key
                found.append(("sdxl_cache_text_encoder_outputs", f"cannot be used with {what}"))
    return found


def _run_problems(c: TrainingConfig) -> Found:
    found: Found = []
    if not (c.train_unet or c.train_text_encoder):
        found.append(("learning_rate", "neither the UNet nor the text encoders would be trained"))
    if c.lr_scheduler == "adafactor" and c.optimizer != "Adafactor":
        found.append(
            ("lr_scheduler", "the adafactor schedule only works with the Adafactor optimizer")
        )
    if c.lr_scheduler in ("constant", "adafactor") and (c.lr_warmup_percent or c.lr_warmup_steps):
        found.append(("lr_warmup", f"the {c.lr_scheduler} schedule has no warmup"))
    stem = c.output_name
    if not _SAFE_STEM.match(stem) or stem.strip(".") == "":
        found.append(("output_name", "must be a plain file name (no '/', '\\', or only dots)"))
    return found


def _sample_problems(c: TrainingConfig) -> Found:
    """Each unreadable prompt line, so a bad prompt stops the job before it is queued
    rather than when its first sampling point comes, hours into the run."""
    return [("sample_prompts", message) for message in prompt_problems(c.sample_prompts)]
