"""Trainer overhead: seconds per step of ``trainer`` vs a bare loop, same model and data.

    python bench/trainer_overhead.py [--steps 40] [--image 128]

Both runs use the miniature SDXL, the scaled-down seed payload, cached latents
and the same batches. The bare loop does only tokenise, encode text, noise,
UNet forward, MSE, backward, clip and optimizer step - what any trainer must -
so the ratio is what the trainer's own structure (reporting, bucket order,
caption processing, loss weighting, stop polling) costs. Target: <= 1.10.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.factories import make_dataset, tiny_payload  # noqa: E402
from trainer.config import parse_payload  # noqa: E402
from trainer.data.batches import epoch_batches  # noqa: E402
from trainer.data.folders import scan_dataset  # noqa: E402
from trainer.hooks import StepCompleted, null_reporter  # noqa: E402
from trainer.loop import run_training  # noqa: E402
from trainer.models.tiny import write_tiny_sdxl  # noqa: E402
from trainer.plan import plan_from_scan  # noqa: E402
from trainer.run import TrainingJob, build_session, seed_everything  # noqa: E402


def session(root: Path, steps: int, image: int):
    model = write_tiny_sdxl(root / "models")
    data = make_dataset(root / "data", {"1_bench": 16}, sizes=[(image, image)])
    payload = tiny_payload(
        max_train_steps=steps, save_every_n_epochs=0, max_resolution=f"{image},{image}",
        max_bucket_reso=max(128, image), train_batch_size=2, gradient_checkpointing=False,
    )  # fmt: skip
    config = parse_payload(payload).config
    job = TrainingJob(config, model, data, root / "out")
    scan = scan_dataset(data, config.caption_extension)
    seed_everything(0)
    return build_session(job, scan, plan_from_scan(config, scan), null_reporter, seed=0)


def trainer_step_times(s) -> list[float]:
    times: list[float] = []

    def reporter(event):
        if isinstance(event, StepCompleted):
            times.append(event.s_per_step)

    run_training(s, reporter, lambda: None)
    return times


def bare_step_times(s, steps: int) -> list[float]:
    model, params = s.model, list(s.network.parameters())
    batches = [b for e in range(1, 100) for b in epoch_batches(s.images, 2, 0, e)][:steps]
    times = []
    for batch in batches:
        start = time.perf_counter()
        latents = torch.stack([s.latents[i] for i in batch.images])
        captions = [s.images[i].record.caption for i in batch.images]
        ids_1 = model.tokenizer(captions, padding="max_length", max_length=77, truncation=True,
                                return_tensors="pt").input_ids  # fmt: skip
        ids_2 = model.tokenizer_2(captions, padding="max_length", max_length=77, truncation=True,
                                  return_tensors="pt").input_ids  # fmt: skip
        out_1 = model.text_encoder(ids_1, output_hidden_states=True)
        out_2 = model.text_encoder_2(ids_2, output_hidden_states=True)
        context = torch.cat([out_1.hidden_states[-2], out_2.hidden_states[-2]], dim=-1)
        h, w = batch.bucket[1], batch.bucket[0]
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32).repeat(len(captions), 1)
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, 1000, (len(captions),))
        noisy = model.noise_scheduler.add_noise(latents, noise, timesteps)
        cond = {"text_embeds": out_2.text_embeds, "time_ids": time_ids}
        prediction = model.unet(noisy, timesteps, context, added_cond_kwargs=cond).sample
        loss = torch.nn.functional.mse_loss(prediction.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        s.optimizer.step()
        s.optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--image", type=int, default=128, help="training image side in pixels")
    parser.add_argument("--rounds", type=int, default=3, help="alternating trainer/bare rounds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # Alternate the two runs so machine noise hits both alike; drop warm-up steps.
        warm = 5
        trainer_runs, bare_runs = [], []
        for round_ in range(args.rounds):
            s = session(root / f"t{round_}", args.steps, args.image)
            trainer_runs += trainer_step_times(s)[warm:]
            s = session(root / f"b{round_}", args.steps, args.image)
            bare_runs += bare_step_times(s, args.steps)[warm:]
    trainer_s, bare_s = statistics.median(trainer_runs), statistics.median(bare_runs)
    threads = torch.get_num_threads()
    print(f"image {args.image}px, batch 2, {len(trainer_runs)} timed steps each, {threads} threads")
    print(f"trainer: {trainer_s * 1000:.1f} ms/step (median)")
    print(f"bare loop: {bare_s * 1000:.1f} ms/step (median)")
    print(f"overhead ratio: {trainer_s / bare_s:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
