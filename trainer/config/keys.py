"""The registry of every accepted payload key, and the sd-scripts spellings (aliases).

``KEYS`` maps each Kohya key (kohya_ss v24.1.7 LoRA config: the seed's 140 keys,
the 17 the seed dropped, plus four sd-scripts-only keys: ``lr_warmup_steps``,
``network_train_unet_only``, ``network_train_text_encoder_only``,
``cache_text_encoder_outputs_to_disk``) to its
:class:`KeySpec`. ``ALIASES`` maps other spellings onto those keys; giving one
setting under two spellings with different values is a problem.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from trainer.config.keys_core import CORE
from trainer.config.keys_more import OTHER, TRAINING_MORE
from trainer.config.spec import KeySpec

KEYS: Mapping[str, KeySpec] = MappingProxyType(
    {spec.key: spec for spec in (*CORE, *TRAINING_MORE, *OTHER)}
)

SKIP: Any = object()
"""Returned by an alias adapter when the value says nothing about the target key."""


@dataclass(frozen=True)
class Alias:
    """Another spelling of ``key``; ``adapt`` turns its value into one for ``key``."""

    name: str
    key: str
    adapt: Callable[[Any], Any] | None = None


def _sdpa(value: Any) -> Any:
    # sd-scripts has two flags (--xformers, --sdpa); the GUI folds them into one
    # "xformers" choice. `sdpa: false` only says "not sdpa", so it sets nothing.
    if value is True:
        return "sdpa"
    return SKIP if value is False else value


ALIASES: Mapping[str, Alias] = MappingProxyType(
    {
        alias.name: alias
        for alias in (
            Alias("optimizer_type", "optimizer"),
            Alias("resolution", "max_resolution"),
            Alias("cache_text_encoder_outputs", "sdxl_cache_text_encoder_outputs"),
            Alias("no_half_vae", "sdxl_no_half_vae"),
            Alias("stop_text_encoder_training", "stop_text_encoder_training_pct"),
            Alias("lora_network_weights", "network_weights"),
            Alias("sdpa", "xformers", _sdpa),
        )
    }
)

FIELD_TO_KEY: Mapping[str, str] = MappingProxyType(
    {spec.field: spec.key for spec in KEYS.values() if spec.field}
)
"""Internal TrainingConfig field name -> the Kohya key it comes from."""


def suggest(name: str) -> str | None:
    """The known key or alias closest to a misspelled ``name`` (difflib), if any is close."""
    known = [*KEYS, *ALIASES]
    matches = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if not matches:
        lowered = {k.lower(): k for k in known}
        matches = [lowered[m] for m in difflib.get_close_matches(name.lower(), lowered, n=1)]
    return matches[0] if matches else None
