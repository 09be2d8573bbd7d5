"""When to sample, and the sample files (sd-scripts ``library/train_util.py``:
``sample_images_common``).

``sample_every_n_epochs`` wins over ``sample_every_n_steps``: with it set,
images are made after every n-th epoch and the steps setting is ignored.
Otherwise after every n-th optimizer step, and never at an epoch's end (the
step that ends an epoch already had its chance). Files go to
``<output_dir>/sample/<output_name>_<e{epoch:06d}|{step:06d}>_<index:02d>_<YYYYmmddHHMMSS>[_<seed>].png``
(the seed suffix only for prompts with ``--d``), with the prompt and settings
in PNG text chunks, and are reported as ``sample`` artifacts.
"""

from __future__ import annotations

import gc
import time

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from trainer.hooks import ArtifactSaved, PhaseChanged, Reporter
from trainer.placement import borrowed
from trainer.sampling.generate import eval_mode, isolated_rng, render
from trainer.sampling.prompts import SamplePrompt, parse_prompts
from trainer.session import Session
from trainer.storage import atomic_path

SAMPLE_DIR = "sample"


def due_after_step(every_epochs: int | None, every_steps: int | None, step: int) -> bool:
    """After optimizer step ``step``: only when no epoch interval is set."""
    return not every_epochs and bool(every_steps) and step % every_steps == 0  # type: ignore[operator]


def due_after_epoch(every_epochs: int | None, epoch: int) -> bool:
    """After epoch ``epoch`` (1-based)."""
    return bool(every_epochs) and epoch % every_epochs == 0  # type: ignore[operator]


def sample_file_name(
    output_name: str, index: int, *, step: int, epoch: int | None, stamp: str, seed: int | None
) -> str:
    """Kohya's name; ``epoch`` None for a step sample, ``seed`` None without ``--d``."""
    number = f"e{epoch:06d}" if epoch is not None else f"{step:06d}"
    suffix = f"_{seed}" if seed is not None else ""
    return f"{output_name}_{number}_{index:02d}_{stamp}{suffix}.png"


def sample_metadata(
    prompt: SamplePrompt, *, sampler: str, seed: int, step: int, epoch: int
) -> dict[str, str]:
    """What the image was made from: the PNG text chunks and the artifact's metadata."""
    return {
        "prompt": prompt.prompt,
        "negative_prompt": prompt.negative_prompt,
        "seed": str(seed),
        "steps": str(prompt.steps),
        "cfg_scale": str(prompt.scale),
        "sampler": sampler,
        "width": str(prompt.width),
        "height": str(prompt.height),
        "step": str(step),
        "epoch": str(epoch),
    }


def a1111_parameters(metadata: dict[str, str], output_name: str) -> str:
    """The ``parameters`` text A1111, ComfyUI and image sites read from a PNG."""
    lines = [metadata["prompt"]]
    if metadata["negative_prompt"]:
        lines.append(f"Negative prompt: {metadata['negative_prompt']}")
    lines.append(
        f"Steps: {metadata['steps']}, Sampler: {metadata['sampler']}, "
        f"CFG scale: {metadata['cfg_scale']}, Seed: {metadata['seed']}, "
        f"Size: {metadata['width']}x{metadata['height']}, Lora: {output_name}, "
        f"Epoch: {metadata['epoch']}, Step: {metadata['step']}"
    )
    return "\n".join(lines)


def write_png(image: Image.Image, path: str, s: Session, metadata: dict[str, str]) -> None:
    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(key, value)  # PIL stores non-Latin-1 text as an iTXt chunk itself
    info.add_text("parameters", a1111_parameters(metadata, s.config.output_name))
    with atomic_path(s.output_dir / path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)


def sample_prompt(
    s: Session, reporter: Reporter, prompt: SamplePrompt, *, step: int, epoch: int, epoch_end: bool
) -> None:
    """Render, write and report one prompt's image."""
    sampler = prompt.sampler or s.config.sample_sampler
    seed = prompt.seed_for(s.seed)
    image = render(s, prompt, sampler, seed)
    name = sample_file_name(
        s.config.output_name, prompt.index, step=step, epoch=epoch if epoch_end else None,
        stamp=time.strftime("%Y%m%d%H%M%S"), seed=prompt.seed,
    )  # fmt: skip
    metadata = sample_metadata(prompt, sampler=sampler, seed=seed, step=step, epoch=epoch)
    path = f"{SAMPLE_DIR}/{name}"
    write_png(image, path, s, metadata)
    reporter(ArtifactSaved(path, "sample", epoch=epoch, step=step, metadata=metadata))


def sample_if_due(
    s: Session, reporter: Reporter, *, step: int, epoch: int, epoch_end: bool
) -> None:
    """Make every prompt's image if this point is due; the loop calls it after each
    optimizer step (``epoch_end`` False) and after each epoch (True)."""
    config = s.config
    if epoch_end:
        due = due_after_epoch(config.sample_every_n_epochs, epoch)
    else:
        due = due_after_step(config.sample_every_n_epochs, config.sample_every_n_steps, step)
    prompts = parse_prompts(config.sample_prompts) if due else ()
    if not prompts:
        return
    reporter(PhaseChanged("sampling"))
    model = s.model
    try:
        with (
            isolated_rng(s.device),
            # Cached runs keep these on the host (trainer.placement): on the device for
            # sampling only, as sd-scripts brings its VAE (train_util.sample_images_common).
            borrowed(s.device, model.vae, model.text_encoder, model.text_encoder_2),
            eval_mode(model.unet, model.text_encoder, model.text_encoder_2),
        ):
            for prompt in prompts:
                sample_prompt(s, reporter, prompt, step=step, epoch=epoch, epoch_end=epoch_end)
    finally:
        release_memory(s.device)
    reporter(PhaseChanged("training"))


def release_memory(device: torch.device) -> None:
    """Hand the pipeline's activations and caches, and the borrowed parts' device copies,
    back before training resumes."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
