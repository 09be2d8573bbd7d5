"""The torch-free memory and FLOP model against full-size traces, and how it is fitted.

    python bench/memory_model.py [--variant seed ...] 2> traces.jsonl  # trace vs model
    python bench/memory_model.py --traces traces.jsonl  # the same table from saved traces
    python bench/memory_model.py --fit [--write]        # profile, fit, print coefficients.py

The grid is bench/memory_trace.py's seed variants plus combinations (so the check isn't
only one change at a time), each traced in a process of its own (``trace_in_child``). Per
row: the traced and modelled peak (``torch.cuda.max_memory_allocated``'s share),
activations + temporaries and step FLOPs, and the model's relative error. Targets: peak
within 5%, activations + temporaries within 10% (docs/estimates.md).

``--fit`` profiles :data:`PROFILES` block by block (``bench/memory_profile.py``, one process
each; the JSON is kept in ``--profiles`` so a re-fit needs no tracing), solves, for each
quantity of each block kind (:mod:`trainer.estimate.walk`), the least squares of bytes
against the block's features over every profiled block, and prints the module
``trainer/estimate/coefficients.py`` (``--write`` writes it). The fp32 scales and the VAE's
bytes per pixel come from the fp32 and latents-not-cached profiles.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import lsq_linear

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.memory_trace import VARIANTS, trace_in_child  # noqa: E402
from tests.factories import seed_payload  # noqa: E402
from trainer.config import TrainingConfig, parse_payload  # noqa: E402
from trainer.estimate import walk  # noqa: E402
from trainer.estimate.architecture import Architecture  # noqa: E402
from trainer.estimate.model import estimate_footprint, step_of  # noqa: E402
from trainer.estimate.phases import STEP  # noqa: E402
from trainer.models.configs import SDXL_BASE_CONFIG  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
UNET_ONLY_CACHED = {"text_encoder_lr": 0, "shuffle_caption": False,
                    "sdxl_cache_text_encoder_outputs": True}  # fmt: skip
LOCON = {"LoRA_type": "Kohya LoCon", "conv_dim": 8, "conv_alpha": 4}
# The small payloads CI re-traces (tests/trainer/test_memory_trace.py): UNet-only with cached
# text-encoder outputs at 512x512 and without checkpointing (its recomputation makes a trace
# a third longer) keeps each short; each changes one thing from "small".
SMALL = {"train_batch_size": 1, "max_resolution": "512,512", "network_dim": 8,
         "network_alpha": 4, **UNET_ONLY_CACHED, "max_token_length": 75,
         "gradient_checkpointing": False}  # fmt: skip
GRID: dict[str, dict[str, Any]] = {
    **VARIANTS,
    "small": SMALL,
    "small_batch2": {**SMALL, "train_batch_size": 2},
    "small_rank32": {**SMALL, "network_dim": 32, "network_alpha": 16},
    "small_checkpointing": {**SMALL, "gradient_checkpointing": True},
    "locon_unet_only_res768": {**LOCON, "text_encoder_lr": 0, "max_resolution": "768,768"},
    "batch2_tokens225_rank64": {"train_batch_size": 2, "max_token_length": 225,
                                "network_dim": 64, "network_alpha": 32},
    "cached_te_batch1_res768_no_checkpointing": {**UNET_ONLY_CACHED, "train_batch_size": 1,
                                                 "max_resolution": "768,768",
                                                 "gradient_checkpointing": False},
    "latents_not_cached_batch1_res768": {"cache_latents": False, "train_batch_size": 1,
                                         "max_resolution": "768,768"},
    "full_bf16_adamw_accumulate2": {"mixed_precision": "bf16", "full_bf16": True,
                                    "optimizer": "AdamW", "gradient_accumulation_steps": 2},
    "fp32_batch1_res512": {"mixed_precision": "no", "train_batch_size": 1,
                           "max_resolution": "512,512"},
}  # fmt: skip
PROFILES: dict[str, dict[str, Any]] = {
    "seed": {},
    "no_checkpointing": {"gradient_checkpointing": False},
    "unet_only_cached_te": UNET_ONLY_CACHED,
    "rank64": {"network_dim": 64, "network_alpha": 32},
    "rank8_tokens225_no_checkpointing": {"network_dim": 8, "network_alpha": 4,
                                         "max_token_length": 225, "gradient_checkpointing": False},
    "locon_unet_only": {**LOCON, "text_encoder_lr": 0},
    "locon_unet_only_res768_no_checkpointing": {**LOCON, "text_encoder_lr": 0,
                                                "max_resolution": "768,768",
                                                "gradient_checkpointing": False},
    "batch1_res768_tokens75": {"train_batch_size": 1, "max_resolution": "768,768",
                               "max_token_length": 75},
    "cached_te_batch1_res768": {**UNET_ONLY_CACHED, "train_batch_size": 1,
                                "max_resolution": "768,768"},
    "cached_te_batch2_res768_rank16_no_checkpointing": {
        **UNET_ONLY_CACHED, "train_batch_size": 2, "max_resolution": "768,768",
        "network_dim": 16, "network_alpha": 8, "max_token_length": 75,
        "gradient_checkpointing": False},
    "batch2_res896_tokens225": {"train_batch_size": 2, "max_resolution": "896,896",
                                "max_token_length": 225},
    "cached_te_res640_tokens75": {**UNET_ONLY_CACHED, "max_resolution": "640,640",
                                  "max_token_length": 75},
    "batch2_res640_no_checkpointing": {"train_batch_size": 2, "max_resolution": "640,640",
                                       "gradient_checkpointing": False},
    "fp32_batch1_no_checkpointing": {"mixed_precision": "no", "train_batch_size": 1,
                                     "gradient_checkpointing": False},
    "latents_not_cached": {"cache_latents": False},
}  # fmt: skip
FP32_PROFILE, VAE_PROFILE = "fp32_batch1_no_checkpointing", "latents_not_cached"


def config_of(overrides: dict[str, Any]) -> TrainingConfig:
    return parse_payload({**seed_payload(), **overrides}).config


def _error(model: float, trace: float) -> str:
    return f"{(model - trace) / trace * 100:+7.1f}%" if trace else "      -"


def grid_row(name: str, trace: dict[str, Any], arch: Architecture) -> str:
    """One row: peak, activations + temporaries (GiB) and TFLOP, trace / model / error."""
    if "failed" in trace:
        return f"{name:<42} {trace['failed']}"
    config = config_of(GRID[name])
    model = estimate_footprint(config, arch).at(STEP)  # the trace is the step's
    parts = trace["parts"]
    # The trace runs one micro-step; an optimizer step runs gradient_accumulation_steps.
    flops = trace["step_flops"] * config.gradient_accumulation_steps
    act = parts["activations"] + parts["temporaries"]
    model_act = model.parts["activations"] + model.parts["temporaries"]
    pairs = [(trace["peak_bytes"], model.peak_bytes, GIB), (act, model_act, GIB),
             (flops, model.step_flops, 1e12)]  # fmt: skip
    cells = "".join(f"{t / unit:>8.2f}{m / unit:>8.2f}{_error(m, t)}" for t, m, unit in pairs)
    return f"{name:<42}{cells}"


def run_grid(names: list[str], saved: Path | None) -> None:
    """Trace each payload (or read the traces a former run wrote to stderr) and print rows."""
    arch = Architecture.from_config_dir(SDXL_BASE_CONFIG)
    head = "".join(f"{h:>8}{'model':>8}{'err':>8}" for h in ("peak", "act+tmp", "TFLOP"))
    print(f"{'payload (GiB, TFLOP)':<42}{head}", flush=True)
    if saved is not None:
        traces = [
            json.loads(line) for line in saved.read_text().splitlines() if line.startswith("{")
        ]
        for trace in traces:
            if trace["variant"] in names:
                print(grid_row(trace["variant"], trace, arch), flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            trace = trace_in_child({**seed_payload(), **GRID[name]}, Path(tmp))
            print(grid_row(name, trace, arch), flush=True)
            print(json.dumps({"variant": name, **trace}), file=sys.stderr, flush=True)


def profile_in_child(name: str, folder: Path) -> dict[str, Any]:
    """``bench/memory_profile.py`` on a profile payload, cached in ``folder``."""
    out = folder / f"{name}.json"
    if not out.exists():
        payload = folder / f"{name}.payload.json"
        payload.write_text(json.dumps({**seed_payload(), **PROFILES[name]}))
        command = [sys.executable, "bench/memory_profile.py", "--payload", str(payload)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
        out.write_text(done.stdout)
    data: dict[str, Any] = json.loads(out.read_text())
    return data


# Features that can only add bytes (more tokens, rank, transformer depth, LoRA, a trained
# encoder's grads): their coefficients are bounded at zero, so that where the profiles leave
# them collinear with others the fit can't trade them for negative bytes.
ADDING = {"text", "rank", "blocks", "context", "temb", "lora", "hidden", "weights"}
RIDGE = float(os.environ.get("LORABOX_FIT_RIDGE", "0.1"))
WEIGHT = float(os.environ.get("LORABOX_FIT_WEIGHT", "0.5"))


def fixed(quantity: str, name: str) -> float | None:
    """Coefficients known, not fitted: autocast's cache holds the fp16 cast of every LoRA
    weight the forward used until it exits, 2 bytes a value (``kept``); without
    checkpointing autograd still holds them entering backward (``alive``), with it the
    recomputation casts them again (``bw_act``, fitted)."""
    mode, _, feature = name.partition(".") if quantity in walk.SUMMED else ("", "", name)
    if feature.rpartition(".")[2] != "weights" or quantity not in ("kept", "alive"):
        return None
    return 2.0 if quantity == "kept" or mode == "full" else 0.0


def _solve(quantity: str, rows: list[tuple[dict[str, int], float, float]]) -> dict[str, float]:
    """Weighted least squares of bytes on features (columns scaled to 1; the ADDING ones at
    least 0; a light ridge; the :func:`fixed` ones set); features no row has are left out."""
    names = sorted({name for features, _, _ in rows for name, count in features.items() if count})
    known = {name: fixed(quantity, name) for name in names}
    free = [name for name in names if known[name] is None]
    weight = np.array([w for _, _, w in rows], float)
    a = np.array([[features.get(name, 0) for name in free] for features, _, _ in rows], float)
    y = np.array(
        [value - sum((known[n] or 0.0) * f.get(n, 0) for n in names if known[n] is not None)
         for f, value, _ in rows]
    )  # fmt: skip
    solved = {name: value for name, value in known.items() if value is not None}
    if not free:
        return solved
    scale = np.abs(weight[:, None] * a).max(axis=0)
    lower = [0.0 if name.rpartition(".")[2] in ADDING else -np.inf for name in free]
    # The ridge (rows of RIDGE * identity) keeps directions the profiles don't determine near
    # zero instead of at any value that cancels out on them.
    a = np.vstack([weight[:, None] * a / scale, RIDGE * np.eye(len(free))])
    y = np.concatenate([weight * y, np.zeros(len(free))])
    result = lsq_linear(a, y, bounds=(lower, np.inf), method="bvls")
    solved.update({n: float(f"{c:.5g}") for n, c in zip(free, result.x / scale, strict=True)})
    return solved


def _split(summed: dict[str, float], quantity: str) -> dict[str, dict[str, float]]:
    """Coefficients of features keyed "mode.kind.feature" as tables "quantity.mode.kind"."""
    tables: dict[str, dict[str, float]] = {}
    for key, value in summed.items():
        table, _, name = key.rpartition(".")
        tables.setdefault(f"{quantity}.{table}", {})[name] = value
    return tables


def solve(observed: dict[str, tuple[list, int]]) -> dict[str, dict[str, float]]:
    """Coefficients from each profile's observations (``memory_profile.observations``) and
    its traced activations + temporaries: every profile weighs the same in relative terms,
    so a batch-1 step's bytes count as much as a 27 GiB one's."""
    data: dict[str, list[tuple[dict[str, int], float, float]]] = {}
    for found, size in observed.values():
        for key, features, value in found:
            data.setdefault(key, []).append((features, value, (2**30 / size) ** WEIGHT))
    coefficients: dict[str, dict[str, float]] = {}
    for key, rows in data.items():
        if key in walk.SUMMED:  # summed over blocks: one solve, split by kind
            coefficients.update(_split(_solve(key, rows), key))
        else:
            coefficients[key] = _solve(key.partition(".")[0], rows)
    return coefficients


FP32_GROUPS = (("kept", "fw", "bw_act", "alive"), ("bw_temp", "held"))


def _scale(found: list, quantities: tuple[str, ...]) -> float:
    """Least squares of the fp32 profile's bytes on the (fp16) model's, for ``quantities``."""
    pairs = [(walk.predicted(k, f), v) for k, f, v in found if k.split(".")[0] in quantities]
    return round(sum(p * v for p, v in pairs) / sum(p * p for p, _ in pairs), 4)


def fit(folder: Path) -> tuple[dict[str, dict[str, float]], tuple[float, float], float]:
    """Coefficients, the fp32 scales and the VAE's bytes per first-level element."""
    from bench.memory_profile import observations

    arch = Architecture.from_config_dir(SDXL_BASE_CONFIG)
    observed, raw = {}, {}
    for name in PROFILES:
        print(f"profiling {name}", file=sys.stderr, flush=True)
        raw[name] = profile_in_child(name, folder)
        parts = raw[name]["parts"]
        size = parts["activations"] + parts["temporaries"]
        observed[name] = (observations(raw[name], config_of(PROFILES[name]), arch), size)
    fp32_found, _ = observed.pop(FP32_PROFILE)
    coefficients = solve(observed)
    walk.COEFFICIENTS.clear()
    walk.COEFFICIENTS.update(coefficients)
    fp32 = (_scale(fp32_found, FP32_GROUPS[0]), _scale(fp32_found, FP32_GROUPS[1]))
    step = step_of(config_of(PROFILES[VAE_PROFILE]), arch, None)
    pixels = step.batch * step.image_positions(0) * arch.vae.first_channels
    vae = raw[VAE_PROFILE]["parts"]["activations"] / pixels
    return coefficients, fp32, round(vae, 4)


def coefficients_module(
    coefficients: dict[str, dict[str, float]], fp32: tuple[float, float], vae: float
) -> str:
    lines = []
    for key, table in sorted(coefficients.items()):
        if not table:
            continue
        items = [f'"{name}": {value!r},' for name, value in sorted(table.items())]
        lines.append(f'    "{key}": {{')
        lines += textwrap.wrap(" ".join(items), 92, initial_indent=" " * 8,
                               subsequent_indent=" " * 8)  # fmt: skip
        lines.append("    },")
    return COEFFICIENTS_TEMPLATE.format(table="\n".join(lines), act=fp32[0], temp=fp32[1], vae=vae)


COEFFICIENTS_TEMPLATE = '''"""Generated by bench/memory_model.py --fit --write (docs/estimates.md).

Traced with torch 2.13, diffusers 0.42, transformers 5.23, peft 0.21.
"""

from __future__ import annotations

# fmt: off
COEFFICIENTS: dict[str, dict[str, float]] = {{
{table}
}}
# fmt: on
# mixed_precision "no": the fp32 profile's bytes over the fp16 fit's (bench/memory_model.py)
FP32_ACTIVATIONS = {act}
FP32_TEMPORARIES = {temp}
# The VAE's encoding high per element of its first level's map (bench/memory_model.py)
VAE_ENCODE = {vae}
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", choices=sorted(GRID))
    parser.add_argument("--traces", type=Path, help="read traces a former run wrote to stderr")
    parser.add_argument("--fit", action="store_true", help="profile, fit, print coefficients")
    parser.add_argument("--write", action="store_true", help="with --fit: write coefficients.py")
    parser.add_argument(
        "--profiles", type=Path, default=Path(tempfile.gettempdir()) / "lorabox-memory-profiles"
    )
    args = parser.parse_args()
    if not args.fit:
        run_grid(args.variant or list(GRID), args.traces)
        return
    args.profiles.mkdir(parents=True, exist_ok=True)
    text = coefficients_module(*fit(args.profiles))
    if args.write:
        (ROOT / "trainer" / "estimate" / "coefficients.py").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
