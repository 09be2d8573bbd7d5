"""Total steps and warmup as kohya_ss v24.1.7 and its sd-scripts compute them.

Sources: kohya_ss ``kohya_gui/lora_gui.py: train_model`` (the step estimate and
``lr_warmup_steps = round(float(int(lr_warmup) * int(max_train_steps) / 100))``);
sd-scripts ``train_network.py: NetworkTrainer.train`` (``max_train_epochs`` recomputes
``max_train_steps`` and keeps ``lr_warmup_steps``, at ``b8896aad`` and at main ``48d368fa``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tests.factories import tiny_payload
from tests.trainer.effects import shows_effect
from trainer.config import parse_payload
from trainer.data.folders import DatasetScan, ImageRecord
from trainer.plan import plan_from_scan


def config(**overrides: Any):
    payload = tiny_payload(lr_scheduler="linear", max_resolution="128,128", **overrides)
    return parse_payload(payload).config


def scan(sizes: list[tuple[int, int]], names: list[str] | None = None) -> DatasetScan:
    names = names or [f"{i}.png" for i in range(len(sizes))]
    records = tuple(
        ImageRecord(Path(name), "", size, "1_x", 1) for name, size in zip(names, sizes, strict=True)
    )
    return DatasetScan(records, (), ())


# Five 128x128 and three 64x128 images at max_resolution 128,128 without upscale: two buckets,
# ceil(5/2) + ceil(3/2) = 5 batches per epoch at batch 2; the GUI estimate counts 8 images.
MIXED = [(128, 128)] * 5 + [(64, 128)] * 3


@shows_effect("max_train_epochs")
def test_max_train_epochs_wins_over_max_train_steps():
    plan = plan_from_scan(config(max_train_epochs=3, max_train_steps=50, lr_warmup=0), scan(MIXED))
    assert plan.batches_per_epoch == 5
    assert plan.total_steps == 3 * math.ceil(5 / 1) == 15
    assert plan.epochs == 3


@shows_effect("lr_warmup")
def test_warmup_with_max_train_epochs_is_the_guis_number():
    # GUI: max_train_steps = ceil(8 / 2 / 1 * epoch 4 * 1) = 16; warmup round(10 * 16 / 100) = 2,
    # kept while sd-scripts' total becomes 3 epochs x 5 batches = 15.
    plan = plan_from_scan(config(epoch=4, max_train_epochs=3, lr_warmup=10), scan(MIXED))
    assert (plan.total_steps, plan.warmup_steps) == (15, 2)
    # With max_train_steps set, the GUI takes its percentage of that number.
    plan = plan_from_scan(
        config(epoch=4, max_train_epochs=3, max_train_steps=100, lr_warmup=10), scan(MIXED)
    )
    assert (plan.total_steps, plan.warmup_steps) == (15, 10)


def test_a_fractional_warmup_percentage_is_truncated():
    # int(lr_warmup): 15.9 % of 100 steps is 15 steps, not 16.
    plan = plan_from_scan(config(max_train_steps=100, lr_warmup=15.9), scan(MIXED))
    assert plan.warmup_steps == 15
    plan = plan_from_scan(config(max_train_steps=30, lr_warmup=5), scan(MIXED))
    assert plan.warmup_steps == round(float(5 * 30 / 100)) == 2  # round half to even: 1.5 -> 2


def test_the_gui_estimate_leaves_out_bmp_files():
    # train_model counts names ending in .jpg .jpeg .png .webp only; sd-scripts trains the .bmp.
    names = ["a.png", "b.BMP", "c.JPG", "d.webp"]
    plan = plan_from_scan(config(epoch=1, lr_warmup=0), scan([(64, 64)] * 4, names))
    assert plan.total_steps == math.ceil(3 / 2)
    assert plan.images_x_repeats == 4  # ss_num_train_images counts every trained image
