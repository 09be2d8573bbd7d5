"""Per-block memory profile of a traced full-size step: what the memory model is fitted to.

    python bench/memory_profile.py --payload payload.json > profile.json

Runs ``trainer.estimate.trace.trace_step`` with a tracker that, besides the peak, notes the
bytes alive at each UNet block's and each text-encoder layer's entry, exit and high point in
the forward, and at its entry and high point in the backward. :func:`observations` turns a
profile into the quantities :mod:`trainer.estimate.walk` models (``kept``, ``fw``,
``bw_act``, ``bw_temp``; ``kept``, ``alive`` and ``held``, which add up over blocks), each
with its features, for the least squares of ``bench/memory_model.py --fit``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.config import TrainingConfig, parse_payload  # noqa: E402
from trainer.estimate.architecture import Architecture  # noqa: E402
from trainer.estimate.model import step_of  # noqa: E402
from trainer.estimate.paths import BlockPath, Step, unet_paths  # noqa: E402
from trainer.estimate.walk import (  # noqa: E402
    block_features,
    block_kind,
    block_mode,
    text_alive_features,
    text_features,
)

Snapshot = dict[str, int]
Observation = tuple[str, dict[str, int], float]  # (quantity.mode.kind, features, bytes)
ENCODERS = {"CLIPTextModel": "te1", "CLIPTextModelWithProjection": "te2"}


def block_of(fqn: str | None, blocks: set[str]) -> str | None:
    """The profiled unit a module belongs to: a UNet block or an encoder layer."""
    if not fqn:
        return None
    root, _, rest = fqn.partition(".")
    parts = rest.split(".")
    if root == "UNet2DConditionModel":
        if parts[0] in ("conv_norm_out", "conv_act"):
            return "conv_out"
        prefixes = (".".join(parts[:n]) for n in range(1, len(parts) + 1))
        return next((prefix for prefix in prefixes if prefix in blocks), None)
    if root in ENCODERS and "layers" in parts:
        return f"{ENCODERS[root]}.layers.{parts[parts.index('layers') + 1]}"
    return None


def _opens(fqn: str, unit: str, entering: bool) -> bool:
    """Whether ``fqn`` is the module that opens (or closes) ``unit``: the block itself, or
    for ``conv_out`` its GroupNorm (entering) and its conv (leaving)."""
    rest = fqn.split(".", 1)[1]
    if unit == "conv_out":
        return rest == ("conv_norm_out" if entering else "conv_out")
    return rest.endswith(unit.split(".", 1)[1] if unit.startswith("te") else unit)


def _profiler(blocks: set[str], out: dict[str, Any]) -> type:
    from trainer.estimate.tracker import StepTracker

    class Profiler(StepTracker):
        def __init__(self) -> None:
            super().__init__()
            self.fw: dict[str, dict[str, Snapshot]] = out.setdefault("fw", {})
            self.bw: dict[str, dict[str, Snapshot]] = out.setdefault("bw", {})
            self.fw_unit: str | None = None
            self.bw_unit: str | None = None

        def _now(self) -> Snapshot:
            snapshot = next(iter(self._curr_mem_snap.values()), {})
            return {getattr(key, "value", key): value for key, value in snapshot.items()}

        def _pre_fw_hook(self, module: Any, inputs: Any) -> None:
            super()._pre_fw_hook(module, inputs)
            fqn = self._mod_tracker.get_known_fqn(module)
            unit = block_of(fqn, blocks)
            if (
                unit
                and not self._mod_tracker.is_bw
                and unit not in self.fw
                and _opens(fqn, unit, True)
            ):
                now = self._now()
                self.fw[unit] = {"pre": now, "max": now}
                self.fw_unit = unit

        def _post_fw_hook(self, module: Any, inputs: Any, outputs: Any) -> None:
            super()._post_fw_hook(module, inputs, outputs)
            fqn = self._mod_tracker.get_known_fqn(module)
            unit = self.fw_unit
            if unit is None or self._mod_tracker.is_bw or block_of(fqn, blocks) != unit:
                return
            if _opens(fqn, unit, False):
                self.fw[unit]["post"] = self._now()
                self.fw_unit = None

        def _pre_bw_hook(self, module: Any, args: Any) -> None:
            super()._pre_bw_hook(module, args)
            unit = block_of(self._mod_tracker.get_known_fqn(module), blocks) if module else None
            if unit and unit != self.bw_unit and unit not in self.bw:
                now = self._now()
                self.bw[unit] = {"entry": now, "max": now}
                self.bw_unit = unit

        def _update_peak_stats(self, peak_state: Any) -> None:
            super()._update_peak_stats(peak_state)
            now = self._now()
            units = self.bw if self._mod_tracker.is_bw else self.fw
            record = units.get((self.bw_unit if self._mod_tracker.is_bw else self.fw_unit) or "")
            if record is not None and now.get("Total", 0) > record["max"].get("Total", 0):
                record["max"] = now

    return Profiler


def profile_step(config: TrainingConfig, arch: Architecture) -> dict[str, Any]:
    """The trace's parts and peak, and each unit's snapshots (bytes by kind)."""
    from trainer.estimate import trace

    out: dict[str, Any] = {}
    blocks = {block.name for block in arch.unet.blocks}
    with mock.patch.object(trace, "StepTracker", _profiler(blocks, out)):
        result = trace.trace_step(config)
    return {"parts": result.parts, "peak_bytes": result.peak_bytes, **out}


def _act(snapshot: Snapshot) -> int:
    return snapshot.get("Activation", 0) + snapshot.get("Other", 0)


def _forward(profile: dict[str, Any], step: Step, arch: Architecture) -> list[Observation]:
    """Per block: its high above what is kept before it; and what is kept after it, summed
    over the blocks up to it and the encoders (``kept``)."""
    found: list[Observation] = []
    before: Snapshot | None = None
    kept = text_alive_features(step, arch)
    for path in unet_paths(arch.unet, step):
        record = profile["fw"][path.block.name]
        base = before or record["pre"]
        key = f"{block_mode(path, step)}.{block_kind(path)}"
        found.append((f"fw.{key}", block_features(path, step, arch),
                      record["max"]["Total"] - base["Total"]))  # fmt: skip
        kept = _add(kept, _prefixed(path, step, arch))
        found.append(("kept", kept, _act(record["post"])))
        before = record["post"]
    return found


def _prefixed(path: BlockPath, step: Step, arch: Architecture) -> dict[str, int]:
    key = f"{block_mode(path, step)}.{block_kind(path)}"
    return {f"{key}.{name}": count for name, count in block_features(path, step, arch).items()}


def _add(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    return {name: total.get(name, 0) + more.get(name, 0) for name in {*total, *more}}


def _backward(profile: dict[str, Any], step: Step, arch: Architecture) -> list[Observation]:
    """Per recorded block: the high above its entry; and, summed over blocks, what is alive
    and held when backward enters it (``alive``: the kept tensors of every block up to it and
    of the encoders; ``held``: what the blocks backward has passed carry)."""
    found: list[Observation] = []
    bw = profile["bw"]
    alive = text_alive_features(step, arch)
    recorded = []
    for path in unet_paths(arch.unet, step):
        alive = _add(alive, _prefixed(path, step, arch))
        if path.block.name in bw:
            recorded.append((path, alive))
    held: dict[str, int] = {}
    for path, alive_here in reversed(recorded):
        key = f"{block_mode(path, step)}.{block_kind(path)}"
        features = block_features(path, step, arch)
        entry, high = bw[path.block.name]["entry"], bw[path.block.name]["max"]
        found.append((f"bw_act.{key}", features, _act(high) - _act(entry)))
        found.append((f"bw_temp.{key}", features, high.get("Temp", 0) - entry.get("Temp", 0)))
        found.append(("alive", alive_here, _act(entry)))
        found.append(("held", held, entry.get("Temp", 0)))
        held = _add(held, _prefixed(path, step, arch))
    return found


def _text(profile: dict[str, Any], step: Step, arch: Architecture) -> list[Observation]:
    if step.text_cached:
        return []
    found: list[Observation] = []
    mode = ("ckpt" if step.checkpointing else "full") if step.text else "frozen"
    for tag, encoder in zip(("te1", "te2"), arch.text_encoders, strict=True):
        features = text_features(encoder, step)
        key = f"{mode}.text_{encoder.activation}"
        # The first and last layers differ (embeddings in, an unused last layer out).
        for index in range(1, encoder.layers - 1):
            record = profile["fw"][f"{tag}.layers.{index}"]
            before = profile["fw"][f"{tag}.layers.{index - 1}"]["post"]
            found.append((f"fw.{key}", features, record["max"]["Total"] - before["Total"]))
            backward = profile["bw"].get(f"{tag}.layers.{index}")
            if backward:
                high = backward["max"]["Total"] - backward["entry"]["Total"]
                found.append((f"bw_act.{key}", features, high))
    return found


def observations(profile: dict[str, Any], config: TrainingConfig, arch: Architecture) -> list:
    """Every modelled quantity the profile shows, with its block's features."""
    step = step_of(config, arch, None)
    return (
        _text(profile, step, arch) + _forward(profile, step, arch) + _backward(profile, step, arch)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payload", type=Path, required=True, help="a Kohya_SS GUI JSON payload")
    args = parser.parse_args()
    from diffusers.utils import logging as diffusers_logging

    from trainer.models.configs import SDXL_BASE_CONFIG

    diffusers_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    config = parse_payload(json.loads(args.payload.read_text())).config
    print(json.dumps(profile_step(config, Architecture.from_config_dir(SDXL_BASE_CONFIG))))


if __name__ == "__main__":
    main()
