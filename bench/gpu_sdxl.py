"""Full-size SDXL on a CUDA GPU: the seed payload at 1024x1024, batch 3.

    python bench/gpu_sdxl.py [--steps 20] [--cap-gib 16] [--variant seed ...]

Builds the real SDXL architecture from the configs the project ships, with
random weights (nothing is downloaded), and trains it with the trainer's own
session and loop on synthetic 1024x1024 images. Prints, per variant, the measured
s/step, images/s and peak allocated / reserved memory beside the memory model's
estimate (trainer/estimate/model.py) and their ratio, and the efficiency the
measured s/step implies against the device's peak (core/workers/peaks.py; the time
model's ``LORABOX_WORKER_DEFAULT_EFFICIENCY`` is calibrated from it: docs/estimates.md).
``--cap-gib 16`` caps the process the way a 16 GiB RTX 4070 Ti Super would
(``torch.cuda.set_per_process_memory_fraction``): it emulates the card's memory, not
its speed. Targets: peak reserved <= 15.5 GiB with the cap, <= 0.35 s/step on an
H100 (compute limit ~0.068 s/step: 67.6 TFLOP per seed step at 989 TFLOP/s).

Variants (the seed payload and settings that change memory or speed): seed,
unet_only_cached_te, full_bf16, full_fp16, fp8_base, locon, adafactor - each that the
payload model accepts is run in turn.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.workers.peaks import table_peak  # noqa: E402
from tests.factories import make_dataset, seed_payload  # noqa: E402
from trainer.config import PayloadError, parse_payload  # noqa: E402
from trainer.data.folders import scan_dataset  # noqa: E402
from trainer.estimate.architecture import Architecture  # noqa: E402
from trainer.estimate.model import estimate_footprint  # noqa: E402
from trainer.hooks import StepCompleted, null_reporter  # noqa: E402
from trainer.loop import run_training  # noqa: E402
from trainer.models.configs import SDXL_BASE_CONFIG, read_component_config  # noqa: E402
from trainer.models.loading import SdxlModel, training_noise_scheduler  # noqa: E402
from trainer.models.tokenizers import build_sdxl_tokenizers  # noqa: E402
from trainer.plan import plan_from_scan  # noqa: E402
from trainer.run import TrainingJob, build_session, seed_everything  # noqa: E402

GIB = 2**30
VARIANTS: dict[str, dict[str, Any]] = {
    "seed": {},
    "unet_only_cached_te": {"text_encoder_lr": 0, "sdxl_cache_text_encoder_outputs": True,
                            "shuffle_caption": False},
    "full_bf16": {"mixed_precision": "bf16", "full_bf16": True},
    "full_fp16": {"full_fp16": True},  # the seed's fp16 with fp16 LoRA weights (GradScaler)
    "fp8_base": {"fp8_base": True},
    "locon": {"LoRA_type": "Kohya LoCon", "conv_dim": 8, "conv_alpha": 4},
    "adafactor": {"optimizer": "Adafactor",
                  "optimizer_args": "scale_parameter=False relative_step=False warmup_init=False",
                  "lr_scheduler": "constant_with_warmup", "lr_warmup": 0},
}  # fmt: skip


def random_sdxl() -> SdxlModel:
    """The real SDXL architecture with random weights, built straight on the GPU."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def config(name: str) -> dict[str, Any]:
        data = read_component_config(SDXL_BASE_CONFIG, name)
        data.pop("torch_dtype", None)
        return data

    tok1, tok2 = build_sdxl_tokenizers()
    with torch.device("cuda"):
        return SdxlModel(
            unet=UNet2DConditionModel.from_config(config("unet")),
            vae=AutoencoderKL.from_config(config("vae")),
            text_encoder=CLIPTextModel(CLIPTextConfig(**config("text_encoder"))),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**config("text_encoder_2"))),
            tokenizer=tok1,
            tokenizer_2=tok2,
            noise_scheduler=training_noise_scheduler(),
        )


def run_variant(name: str, steps: int, data: Path, out: Path) -> dict[str, Any]:
    payload = {**seed_payload(), **VARIANTS[name], "max_train_steps": steps,
               "save_every_n_epochs": 0, "output_name": name}  # fmt: skip
    try:
        config = parse_payload(payload).config
    except PayloadError as exc:
        return {"variant": name, "skipped": "; ".join(str(p) for p in exc.problems)}
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    job = TrainingJob(config, Path("random-sdxl"), data, out / name)
    scan = scan_dataset(data, config.caption_extension)
    seed_everything(0)
    session = build_session(
        job, scan, plan_from_scan(config, scan), null_reporter, 0, random_sdxl()
    )
    times: list[float] = []
    run_training(
        session,
        lambda e: times.append(e.s_per_step) if isinstance(e, StepCompleted) else None,
        lambda: None,
    )
    timed = times[3:] or times
    s_per_step = sorted(timed)[len(timed) // 2]
    allocated, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    del session
    return {
        "variant": name,
        "s_per_step": round(s_per_step, 4),
        "images_per_s": round(config.train_batch_size / s_per_step, 2),
        "peak_allocated_gib": round(allocated / GIB, 2),
        "peak_reserved_gib": round(reserved / GIB, 2),
        **beside_the_model(config, s_per_step, allocated, reserved),
    }


def beside_the_model(
    config: Any, s_per_step: float, allocated: int, reserved: int
) -> dict[str, Any]:
    """The model's figures for the same payload, the measured/model ratios, and the
    efficiency the measured s/step implies (None on a GPU the peaks table doesn't know)."""
    estimate = estimate_footprint(config, Architecture.from_config_dir(SDXL_BASE_CONFIG))
    allocator = estimate.parts["allocator"]
    peak = table_peak(torch.cuda.get_device_name(0))
    return {
        "model_peak_gib": round(estimate.peak_bytes / GIB, 2),
        "allocated_over_model": round(allocated / estimate.peak_bytes, 3),
        # reserved is what the allocator holds: the traced peak plus its allowance
        "reserved_over_model": round(reserved / (estimate.peak_bytes + allocator), 3),
        "model_device_gib": round(estimate.device_bytes / GIB, 2),
        "step_tflop": round(estimate.step_flops / 1e12, 2),
        "implied_efficiency": (
            round(estimate.step_flops / (s_per_step * peak.flops), 3) if peak else None
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cap-gib", type=float, default=None, help="cap process GPU memory")
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/gpu_sdxl.py needs a CUDA GPU")
    if args.cap_gib:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_gib * 2**30 / total))
    print(f"device: {torch.cuda.get_device_name(0)}, cap: {args.cap_gib or 'none'} GiB")
    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(Path(tmp) / "data", {"1_bench": 6}, sizes=[(1024, 1024)])
        for name in args.variant or list(VARIANTS):
            started = time.perf_counter()
            result = run_variant(name, args.steps, data, Path(tmp) / "out")
            result["wall_s"] = round(time.perf_counter() - started, 1)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
