"""Sampler names -> diffusers schedulers, built as sd-scripts' ``get_my_scheduler`` builds them.

Each scheduler gets the *training* noise schedule (betas and timestep count of
the session's DDPM scheduler), ``prediction_type="v_prediction"`` when the LoRA
trains a v-prediction model, and otherwise its class defaults, as sd-scripts
does. That keeps DDIM's ``clip_sample=True`` (sd-scripts even forces it on).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
)

# name -> (class, extra constructor arguments); the k_ names are the same samplers.
# Any: diffusers' lazy imports hide the classes' common base from mypy.
SAMPLER_CLASSES: Mapping[str, tuple[Any, Mapping[str, Any]]] = {
    "ddim": (DDIMScheduler, {}),
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),
    "lms": (LMSDiscreteScheduler, {}),
    "k_lms": (LMSDiscreteScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "k_euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "k_euler_a": (EulerAncestralDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "dpm_2": (KDPM2DiscreteScheduler, {}),
    "k_dpm_2": (KDPM2DiscreteScheduler, {}),
    "dpm_2_a": (KDPM2AncestralDiscreteScheduler, {}),
    "k_dpm_2_a": (KDPM2AncestralDiscreteScheduler, {}),
    "dpmsolver": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"},
    ),
    "dpmsolver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "dpmsingle": (DPMSolverSinglestepScheduler, {}),
}

# The parts of the training scheduler's config that define the noise schedule.
_SCHEDULE = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")


def build_sampler(name: str, training_config: Mapping[str, Any], v_prediction: bool) -> Any:
    """The scheduler for sampler ``name`` (one of ``trainer.sampling.prompts.SAMPLERS``)."""
    cls, extra = SAMPLER_CLASSES[name]
    schedule = {key: training_config[key] for key in _SCHEDULE if key in training_config}
    prediction = {"prediction_type": "v_prediction"} if v_prediction else {}
    return cls(**schedule, **extra, **prediction)
