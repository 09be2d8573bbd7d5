"""``python -m trainer``: train one LoRA from a Kohya payload, printing progress.

    python -m trainer --config PAYLOAD.json --base MODEL --data DATASET_DIR --out OUT_DIR

The first thing a new user or a bug report reaches for: no server, no queue.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trainer.config import PayloadError, parse_payload
from trainer.errors import TrainerError, TrainingCancelled
from trainer.hooks import (
    ArtifactRemoved,
    ArtifactSaved,
    EpochCompleted,
    EventHandler,
    Notice,
    PhaseChanged,
    StepCompleted,
    TrainingStarted,
)
from trainer.run import TrainingJob, train


class ProgressPrinter(EventHandler):
    """One line per event on stdout, flushed at once: the log of a run in a terminal."""

    def on_step_completed(self, event: StepCompleted) -> None:
        print(
            f"step {event.step}/{event.total_steps} epoch {event.epoch}/{event.total_epochs} "
            f"loss {event.loss:.4f} avr_loss {event.avg_loss:.4f} "
            f"lr {' '.join(f'{k}={v:.2e}' for k, v in event.lr.items())} "
            f"{event.s_per_step:.2f} s/step",
            flush=True,
        )

    def on_training_started(self, event: TrainingStarted) -> None:
        print(
            f"training {event.total_steps} steps over {event.total_epochs} epochs "
            f"({event.batches_per_epoch} batches per epoch)",
            flush=True,
        )

    def on_phase_changed(self, event: PhaseChanged) -> None:
        print(f"[{event.phase}]", flush=True)

    def on_epoch_completed(self, event: EpochCompleted) -> None:
        print(f"epoch {event.epoch} done, avr_loss {event.avg_loss:.4f}", flush=True)

    def on_artifact_saved(self, event: ArtifactSaved) -> None:
        print(f"saved {event.kind}: {event.path}", flush=True)

    def on_artifact_removed(self, event: ArtifactRemoved) -> None:
        print(f"removed: {event.path}", flush=True)

    def on_notice(self, event: Notice) -> None:
        print(f"warning: {event.field + ': ' if event.field else ''}{event.message}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="Kohya_SS GUI JSON payload")
    parser.add_argument(
        "--base", type=Path, required=True, help="SDXL .safetensors or diffusers folder"
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="folder of <repeats>_<name>/ folders"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--base-config", type=Path, help="diffusers config folder for --base")
    parser.add_argument("--vae", type=Path, help="VAE .safetensors (overrides the payload's vae)")
    parser.add_argument("--network-weights", type=Path, help="Kohya LoRA to continue from")
    parser.add_argument(
        "--resume", type=Path, help="training state (*-state.safetensors) to continue exactly"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        parsed = parse_payload(json.loads(args.config.read_text()))
    except PayloadError as exc:
        for problem in exc.problems:
            print(f"error: {problem.field}: {problem.message}", file=sys.stderr)
        return 2
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: cannot read {args.config}: {exc}", file=sys.stderr)
        return 2
    for warning in parsed.warnings:
        print(f"warning: {warning.field}: {warning.message}")
    config = parsed.config
    vae = args.vae or (Path(config.vae) if config.vae else None)
    weights = args.network_weights or (
        Path(config.network_weights) if config.network_weights else None
    )
    job = TrainingJob(
        config=config, base_model=args.base, data_dir=args.data, output_dir=args.out,
        base_config=args.base_config, vae=vae, network_weights=weights, resume_state=args.resume,
    )  # fmt: skip
    try:
        result = train(job, reporter=ProgressPrinter())
    except TrainerError as exc:
        print(f"error ({exc.code}): {exc.message}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, TrainingCancelled):
        print("interrupted", file=sys.stderr)
        return 130
    print(f"done: {result.lora_path} after {result.steps} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
