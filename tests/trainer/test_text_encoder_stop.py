"""``stop_text_encoder_training_pct`` counts from the GUI's step estimate, not the run's total.

kohya_ss v24.1.7 ``kohya_gui/lora_gui.py: train_model`` (after its ``max_train_steps``
estimate; the LoRA tab then forces the percentage to 0, which lorabox does not):

    stop_text_encoder_training = math.ceil(
        float(max_train_steps) / 100 * int(stop_text_encoder_training_pct)
    )

with ``max_train_steps = ceil(float(total_steps) / batch / accumulation * epoch * reg_factor)``
over the .jpg/.jpeg/.png/.webp images × repeats - the same number ``lr_warmup_steps`` comes
from. With ``max_train_epochs`` sd-scripts trains a bucket-exact total instead; the stop step
stays the GUI's.
"""

from __future__ import annotations

import math

from tests.factories import make_dataset, tiny_payload
from trainer.config import parse_payload
from trainer.data.folders import scan_dataset
from trainer.hooks import null_reporter
from trainer.plan import plan_from_scan
from trainer.run import TrainingJob, build_session, text_encoder_stop


def test_the_stop_step_is_the_guis_percentage_of_its_own_estimate(tmp_path, tiny_model):
    data = make_dataset(tmp_path / "data", {"3_a": 5, "1_b": 2})
    config = parse_payload(
        tiny_payload(
            epoch=10, max_train_epochs=3, train_batch_size=2, gradient_accumulation_steps=1,
            stop_text_encoder_training_pct=30, save_every_n_epochs=0, cache_latents=False,
        )
    ).config  # fmt: skip
    scan = scan_dataset(data, config.caption_extension)
    plan = plan_from_scan(config, scan)
    pct = config.stop_text_encoder_training_pct  # 30
    gui_max_train_steps = math.ceil(float(3 * 5 + 1 * 2) / 2 / 1 * 10 * 1)  # 85
    expected = math.ceil(float(gui_max_train_steps) / 100 * int(pct))  # 26
    assert text_encoder_stop(config, scan, None) == expected
    assert math.ceil(plan.total_steps / 100 * 30) != expected  # the run's total differs
    # with regularization images the GUI doubles its estimate (reg_factor 2)
    reg = scan_dataset(make_dataset(tmp_path / "reg", {"1_r": 2}), config.caption_extension)
    assert text_encoder_stop(config, scan, reg) == math.ceil(float(2 * 85) / 100 * 30)
    # the session the loop reads holds it
    job = TrainingJob(config, tiny_model, data, tmp_path / "out")
    session = build_session(job, scan, plan, null_reporter, seed=1)
    assert session.text_encoder_stop_step == expected
    unet_only = parse_payload(
        tiny_payload(text_encoder_lr=0, unet_lr=1e-4, stop_text_encoder_training_pct=30)
    ).config
    assert text_encoder_stop(unet_only, scan, None) is None
