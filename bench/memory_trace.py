"""Full-size SDXL step traces on a CPU: peak memory by part and FLOPs for seed variants.

    python bench/memory_trace.py [--variant seed --variant no_checkpointing ...] [--caching]

Each variant is the seed payload (tests/data/pdxl-kohya-config.json: batch 3, 1024x1024,
150 tokens, fp16, gradient checkpointing, AdamW8bit, rank 32, UNet + both text encoders)
with a few keys changed, traced by ``python -m trainer.estimate.trace`` in a process of
its own, so that its wall time and peak RSS are its own. One row each: the traced peak
(what ``torch.cuda.max_memory_allocated`` would report) and its parts in GiB, the step's
TFLOPs, the trace's wall seconds and the process's peak RSS. No GPU is used. ``--caching``
traces the latent-caching phase instead (``python -m trainer.estimate.trace_caching``: the
fp32 VAE alone, encoding the largest bucket; no FLOPs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.factories import seed_payload  # noqa: E402

UNET_ONLY = {"text_encoder_lr": 0}
FIXED_CAPTIONS = {"shuffle_caption": False}  # cached TE outputs need fixed captions
VARIANTS: dict[str, dict[str, Any]] = {
    "seed": {},
    "batch1": {"train_batch_size": 1},
    "batch2": {"train_batch_size": 2},
    "res768": {"max_resolution": "768,768"},
    "tokens75": {"max_token_length": 75},
    "tokens225": {"max_token_length": 225},
    "no_checkpointing": {"gradient_checkpointing": False},
    "rank8": {"network_dim": 8, "network_alpha": 4},
    "rank64": {"network_dim": 64, "network_alpha": 32},
    "adamw": {"optimizer": "AdamW"},
    "adafactor": {"optimizer": "Adafactor",
                  "optimizer_args": "scale_parameter=False relative_step=False warmup_init=False",
                  "lr_scheduler": "constant_with_warmup"},
    "unet_only": UNET_ONLY,
    "unet_only_cached_te": {**UNET_ONLY, **FIXED_CAPTIONS, "sdxl_cache_text_encoder_outputs": True},
    "batch1_res768_no_checkpointing": {"train_batch_size": 1, "max_resolution": "768,768",
                                       "gradient_checkpointing": False},
    "bf16": {"mixed_precision": "bf16"},
    "latents_not_cached": {"cache_latents": False},
}  # fmt: skip
PARTS = ("weights", "lora", "gradients", "optimizer", "activations", "temporaries")
GIB = 2**30


def trace_in_child(
    payload: dict[str, Any], workdir: Path, module: str = "trainer.estimate.trace"
) -> dict[str, Any]:
    """Run ``python -m <module> --json`` on ``payload`` (the step's trace, or
    ``trainer.estimate.trace_caching``); add its RSS."""
    payload_file, out_file = workdir / "payload.json", workdir / "trace.json"
    payload_file.write_text(json.dumps(payload))
    command = [sys.executable, "-m", module, "--payload", str(payload_file), "--json"]
    root = Path(__file__).resolve().parents[1]
    with out_file.open("w") as out:
        child = subprocess.Popen(command, cwd=root, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        return {"failed": f"exit {child.returncode}"}
    result: dict[str, Any] = json.loads(out_file.read_text())
    result["rss_bytes"] = usage.ru_maxrss * 1024  # KiB on Linux
    return result


def row(name: str, result: dict[str, Any]) -> str:
    if "failed" in result:
        return f"{name:<32} {result['failed']}"
    gib = [result["parts"][part] / GIB for part in PARTS]
    return (
        f"{name:<32}{result['peak_bytes'] / GIB:>7.2f}"
        + "".join(f"{value:>8.2f}" for value in gib)
        + f"{result['step_flops'] / 1e12:>9.1f}{result['seconds']:>8.1f}"
        + f"{result['rss_bytes'] / GIB:>7.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    parser.add_argument("--caching", action="store_true", help="trace caching latents")
    args = parser.parse_args()
    module = "trainer.estimate.trace_caching" if args.caching else "trainer.estimate.trace"
    header = "".join(f"{part[:7]:>8}" for part in PARTS)
    print(f"{'variant (GiB)':<32}{'peak':>7}{header}{'TFLOP':>9}{'trace s':>8}{'RSS':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variant or list(VARIANTS):
            started = time.perf_counter()
            result = trace_in_child({**seed_payload(), **VARIANTS[name]}, Path(tmp), module)
            print(row(name, result), flush=True)
            if "failed" not in result:
                result["wall_s"] = round(time.perf_counter() - started, 1)
                print(json.dumps({"variant": name, **result}), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
