"""Builders of small, real inputs for tests: datasets on disk and payloads."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

SEED_PAYLOAD = Path(__file__).parent / "data" / "pdxl-kohya-config.json"

TAGS = ["red", "blue", "circle", "square", "striped", "dotted", "large", "small", "outdoor"]


def draw_image(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A picture with structure (a background gradient and shapes), not noise."""
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x0, y0 = rng.randrange(size[0] // 2), rng.randrange(size[1] // 2)
        x1, y1 = x0 + rng.randrange(8, size[0] // 2 + 8), y0 + rng.randrange(8, size[1] // 2 + 8)
        colour = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    return image


def make_dataset(
    root: Path,
    folders: dict[str, int] | None = None,
    sizes: list[tuple[int, int]] | None = None,
    seed: int = 0,
    caption_extension: str = ".txt",
) -> Path:
    """Kohya folders ``<repeats>_<name>/`` with images and tag captions."""
    rng = random.Random(seed)
    folders = folders or {"2_toy": 4}
    sizes = sizes or [(64, 64)]
    for folder, count in folders.items():
        directory = root / folder
        directory.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            size = sizes[i % len(sizes)]
            draw_image(rng, size).save(directory / f"img{i:03d}.png")
            tags = ["toy"] + rng.sample(TAGS, 4)
            (directory / f"img{i:03d}{caption_extension}").write_text(", ".join(tags))
    return root


def seed_payload() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SEED_PAYLOAD.read_text())
    return data


def tiny_payload(**overrides: Any) -> dict[str, Any]:
    """The seed payload scaled down for a miniature SDXL on a CPU."""
    payload = seed_payload()
    payload.update(
        max_resolution="64,64",
        min_bucket_reso=64,
        max_bucket_reso=128,
        train_batch_size=2,
        epoch=2,
        save_every_n_epochs=1,
        network_dim=4,
        network_alpha=2,
        optimizer="AdamW",
        mixed_precision="no",
        gradient_checkpointing=False,
        output_name="toy",
        max_token_length=75,
    )
    payload.update(overrides)
    return payload
