"""Metadata fields as sd-scripts writes them at kohya_ss v24.1.7's commit ``b8896aad``.

Sources: ``train_network.py: NetworkTrainer.train`` (the ``ss_*`` dict, ``save_model``),
``library/train_util.py: BaseDataset.make_buckets`` (``bucket_info``), ``get_sai_model_spec``
and ``library/sai_model_spec.py: build_metadata`` (``modelspec.timestep_range``),
``get_optimizer`` (``args.lr_scheduler = f"adafactor:{lr}"``); argparse defaults of
``--caption_dropout_rate`` 0.0, ``--caption_dropout_every_n_epochs`` 0,
``--caption_tag_dropout_rate`` 0.0.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tests.factories import tiny_payload
from trainer import saving
from trainer.config import parse_payload
from trainer.data.batches import bucket_images
from trainer.data.folders import DatasetScan, ImageRecord
from trainer.lora.metadata import RunFacts, run_metadata
from trainer.plan import plan_from_scan

SIZES = [(128, 128), (100, 128), (128, 96), (120, 128)]


def metadata(sizes=SIZES, **overrides: Any) -> dict[str, str]:
    payload = tiny_payload(max_resolution="128,128", lr_scheduler="constant", lr_warmup=0)
    config = parse_payload({**payload, **overrides}).config
    records = tuple(ImageRecord(Path(f"{i}.png"), "a, b", s, "1_x", 1) for i, s in enumerate(sizes))
    scan = DatasetScan(records, (), ())
    images = bucket_images(records, config)
    facts = RunFacts(
        plan_from_scan(config, scan), scan, images, Path("base.safetensors"), None, "o", 1, 0.0,
        "no",
    )  # fmt: skip
    random.seed(0)
    return run_metadata(config, facts)


def test_timestep_range_is_written_whenever_the_gui_passes_a_timestep():
    # The GUI always passes max_timestep (1000 by default): sd-scripts writes "min,max".
    assert metadata()["modelspec.timestep_range"] == "0,1000"
    assert metadata(min_timestep=100, max_timestep=0)["modelspec.timestep_range"] == "100,1000"
    assert "modelspec.timestep_range" not in metadata(min_timestep=0, max_timestep=0)


def test_bucket_info_has_sd_scripts_indices_and_mean_aspect_error():
    info = json.loads(metadata(bucket_no_upscale=True)["ss_bucket_info"])
    # No upscale: per-image buckets floored to 64, sorted; errors |bucket ar - image ar|.
    buckets = [(64, 128), (128, 64), (128, 128)]
    assert info["buckets"] == {
        str(i): {"resolution": list(b), "count": c}
        for i, (b, c) in enumerate(zip(buckets, [2, 1, 1], strict=True))
    }
    chosen = [(128, 128), (64, 128), (128, 64), (64, 128)]
    errors = [abs(b[0] / b[1] - s[0] / s[1]) for b, s in zip(chosen, SIZES, strict=True)]
    assert info["mean_img_ar_error"] == float(np.mean(errors))
    # Predefined buckets: only the used ones are listed, numbered in sorted order.
    sizes = [(128, 128), (64, 128), (200, 100)]
    info = json.loads(
        metadata(sizes, bucket_no_upscale=False, max_bucket_reso=256)["ss_bucket_info"]
    )
    assert [tuple(v["resolution"]) for v in info["buckets"].values()] == [(64, 192), (128, 128)]
    assert list(info["buckets"]) == ["0", "1"]
    assert metadata(enable_bucket=False, sizes=[(128, 128)])["ss_bucket_info"] == "null"


def test_unset_caption_dropout_is_written_as_sd_scripts_defaults():
    meta = metadata()
    assert (meta["ss_caption_dropout_rate"], meta["ss_caption_dropout_every_n_epochs"]) == (
        "0.0",
        "0",
    )
    assert meta["ss_caption_tag_dropout_rate"] == "0.0"
    meta = metadata(caption_dropout_rate=0.1, caption_dropout_every_n_epochs=2)
    assert (meta["ss_caption_dropout_rate"], meta["ss_caption_dropout_every_n_epochs"]) == (
        "0.1",
        "2",
    )


@pytest.mark.parametrize(
    ("key", "value", "written"),
    [
        ("network_alpha", 16, "16"),
        ("network_alpha", 0.5, "0.5"),
        ("max_grad_norm", 1, "1"),
        ("prior_loss_weight", 1, "1"),
        ("learning_rate", 1, "1"),
        ("min_snr_gamma", 5, "5"),
    ],
)
def test_numbers_are_written_as_the_payload_gives_them(key, value, written):
    assert metadata(**{key: value})[f"ss_{key}"] == written


def test_adafactor_relative_step_writes_the_schedule_with_its_rate():
    meta = metadata(optimizer="Adafactor", learning_rate=0.0002)
    assert meta["ss_lr_scheduler"] == "adafactor:0.0002"


def test_loss_settings_are_written():
    meta = metadata(loss_type="smooth_l1", huber_schedule="exponential", huber_c=0.25)
    assert (meta["ss_loss_type"], meta["ss_huber_schedule"], meta["ss_huber_c"]) == (
        "smooth_l1",
        "exponential",
        "0.25",
    )


def test_every_saved_file_has_a_finish_time(monkeypatch, tmp_path):
    # save_model in train_network.py sets ss_training_finished_at on every save.
    written: list[dict[str, str]] = []

    def save_lora(network, path, precision, meta):
        written.append(meta)
        return meta

    monkeypatch.setattr(saving, "save_lora", save_lora)
    monkeypatch.setattr(saving.time, "time", lambda: 123.5)
    session = SimpleNamespace(
        metadata={"ss_output_name": "toy"}, network=None, output_dir=tmp_path,
        config=SimpleNamespace(save_precision="fp16"),
    )  # fmt: skip
    saving.save_checkpoint(session, lambda event: None, "toy-000001.safetensors", 4, 1, False)  # type: ignore[arg-type]
    assert written[0]["ss_training_finished_at"] == "123.5"
    assert (written[0]["ss_steps"], written[0]["ss_epoch"]) == ("4", "1")
