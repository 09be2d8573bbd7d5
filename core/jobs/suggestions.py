"""The changes that would make a job fit, each checked with the memory model.

A job no counted worker can hold is refused at submit (``does_not_fit``); the refusal
names the Kohya keys to change. Each candidate is the user's own payload with those keys
changed, parsed again (so it is a payload the service accepts) and estimated again: only
changes that fit are named. The candidates are the usual SDXL memory savers, in the order
kohya_ss' own guidance gives them (docs/estimates.md, "When a job does not fit").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from trainer.config import PayloadError, TrainingConfig, parse_payload
from trainer.estimate.networks import MEMORY_HEAVY

EIGHT_BIT = frozenset({"AdamW8bit", "Lion8bit", "PagedAdamW8bit", "PagedLion8bit"})
GIB = 2**30


@dataclass(frozen=True)
class Suggestion:
    changes: dict[str, Any]  # Kohya keys and the values that would fit
    device_bytes: int

    def describe(self) -> str:
        keys = ", ".join(f"{key}: {_json(value)}" for key, value in self.changes.items())
        return f"{keys} ({self.device_bytes / GIB:.1f} GiB)"


def _json(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


def _candidates(config: TrainingConfig, raw: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    """Each saver as a list of alternatives, mildest first (the first that fits is named);
    for a memory-heavy network type a lighter one last (docs/parameters.md, LoRA_type)."""
    if not config.gradient_checkpointing:
        yield [{"gradient_checkpointing": True}]
    if config.train_batch_size > 1:
        yield [_smaller_batch(config, size) for size in range(config.train_batch_size - 1, 0, -1)]
    if not config.cache_text_encoder_outputs:
        frozen: dict[str, Any] = {"sdxl_cache_text_encoder_outputs": True}
        if config.train_text_encoder:
            frozen["network_train_unet_only"] = True
        for key in ("shuffle_caption", "caption_dropout_rate", "caption_dropout_every_n_epochs"):
            if raw.get(key):  # cached conditioning needs fixed captions
                frozen[key] = False if key == "shuffle_caption" else 0
        yield [frozen]
    if config.optimizer not in EIGHT_BIT:
        yield [{"optimizer": "AdamW8bit", "optimizer_args": ""}]
    rank, ratio = config.network_dim, config.network_alpha / config.network_dim
    ranks = [rank // 2**k for k in range(1, 8) if rank // 2**k >= 4]
    yield [{"network_dim": r, "network_alpha": round(r * ratio, 4)} for r in ranks]
    if config.lora_type in MEMORY_HEAVY:  # a full copy of every weight, or twice LoRA's
        yield [{"LoRA_type": "LyCORIS/LoCon"}, {"LoRA_type": "Standard"}]


def _smaller_batch(config: TrainingConfig, size: int) -> dict[str, Any]:
    """A smaller batch, with accumulation keeping the effective batch where it divides."""
    change: dict[str, Any] = {"train_batch_size": size}
    if config.train_batch_size % size == 0:
        factor = config.train_batch_size // size
        change["gradient_accumulation_steps"] = config.gradient_accumulation_steps * factor
    return change


def changes_that_fit(
    config: TrainingConfig,
    raw: dict[str, Any],
    device_bytes_of: Callable[[TrainingConfig], int],
    capacity_bytes: int,
) -> list[Suggestion]:
    """Each single saver that fits ``capacity_bytes``; if none does alone, all of them
    together (when that fits). ``raw`` is the payload the trainer parses."""

    def fitting(changes: dict[str, Any]) -> Suggestion | None:
        try:
            changed = parse_payload({**raw, **changes}).config
        except PayloadError:
            return None
        need = device_bytes_of(changed)
        return Suggestion(changes, need) if need <= capacity_bytes else None

    savers = list(_candidates(config, raw))
    found = []
    for alternatives in savers:
        hit = next((s for s in map(fitting, alternatives) if s is not None), None)
        if hit is not None:
            found.append(hit)
    if found or not savers:
        return found
    together: dict[str, Any] = {}
    for alternatives in savers:
        together |= alternatives[-1]  # the strongest of each
    combined = fitting(together)
    return [combined] if combined is not None else []
