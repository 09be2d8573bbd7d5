"""Kohya's "0 / empty means unset" rules (docs/kohya-semantics.md, "Unset values") and the
warnings the GUI gives."""

from __future__ import annotations

from typing import Any

import pytest

from trainer.config import PayloadError, TrainingConfig, parse_payload

BASE: dict[str, Any] = {"lr_scheduler": "constant", "lr_warmup": 0}


def config(**changes: Any) -> TrainingConfig:
    return parse_payload({**BASE, **changes}).config


def problem_fields(**changes: Any) -> list[str]:
    with pytest.raises(PayloadError) as caught:
        parse_payload({**BASE, **changes})
    return [p.field for p in caught.value.problems]


@pytest.mark.parametrize(
    ("key", "attribute", "expected"),
    [
        ("max_grad_norm", "max_grad_norm", 1.0),  # GUI drops 0: clipping stays on at 1.0
        ("network_alpha", "network_alpha", 1.0),
        ("multires_noise_discount", "multires_noise_discount", 0.3),
        ("seed", "seed", None),
        ("max_train_steps", "max_train_steps", None),
        ("max_train_epochs", "max_train_epochs", None),
        ("vae_batch_size", "vae_batch_size", 1),
        ("max_timestep", "max_timestep", None),  # sd-scripts' None: the schedule's 1000
        ("prior_loss_weight", "prior_loss_weight", 1.0),
        ("huber_c", "huber_c", 0.1),
        ("min_snr_gamma", "min_snr_gamma", None),
        ("save_every_n_epochs", "save_every_n_epochs", None),
        ("lr_scheduler_num_cycles", "lr_scheduler_num_cycles", 1),
        ("lr_scheduler_power", "lr_scheduler_power", 1.0),
        ("lr_warmup_steps", "lr_warmup_steps", None),
    ],
)
def test_zero_means_unset(key: str, attribute: str, expected: Any) -> None:
    assert getattr(config(**{key: 0}), attribute) == expected


@pytest.mark.parametrize("key", ["vae", "network_weights", "metadata_title", "metadata_tags"])
def test_empty_text_means_none(key: str) -> None:
    assert getattr(config(**{key: ""}), key) is None


@pytest.mark.parametrize("name", ["", "..."])
def test_empty_or_elided_output_name_means_last(name: str) -> None:
    assert config(output_name=name).output_name == "last"


def test_empty_number_of_cycles_means_one_per_epoch() -> None:
    assert config(lr_scheduler_num_cycles="", epoch=7).lr_scheduler_num_cycles == 7


def test_empty_number_means_the_gui_default() -> None:
    parsed = parse_payload({**BASE, "network_dim": "", "learning_rate": " "})
    assert parsed.config.network_dim == 8 and parsed.config.learning_rate == 1e-4
    assert parsed.normalized["network_dim"] == 8


def test_numbers_written_as_text_are_read() -> None:
    got = config(learning_rate="1e-4", unet_lr="5e-5", network_dim="16", epoch=36.0)
    assert (got.learning_rate, got.unet_lr, got.network_dim, got.epochs) == (1e-4, 5e-5, 16, 36)


def test_zero_unet_rate_trains_only_the_text_encoders() -> None:
    got = config(unet_lr=0, text_encoder_lr=5e-5, learning_rate=1e-4)
    assert (got.train_unet, got.train_text_encoder) == (False, True)
    assert (got.unet_lr, got.text_encoder_lr) == (0.0, 5e-5)


def test_zero_text_encoder_rate_trains_only_the_unet() -> None:
    got = config(unet_lr=3e-4, text_encoder_lr=0, learning_rate=1e-4)
    assert (got.train_unet, got.train_text_encoder) == (True, False)
    assert (got.unet_lr, got.text_encoder_lr) == (3e-4, 0.0)


def test_both_part_rates_zero_use_the_learning_rate_for_both() -> None:
    got = config(unet_lr=0, text_encoder_lr=0, learning_rate=2e-4)
    assert (got.train_unet, got.train_text_encoder) == (True, True)
    assert (got.unet_lr, got.text_encoder_lr) == (2e-4, 2e-4)


def test_all_three_rates_zero_is_a_problem() -> None:
    assert "learning_rate" in problem_fields(unet_lr=0, text_encoder_lr=0, learning_rate=0)


def test_sd_scripts_unet_only_flag_switches_the_text_encoders_off() -> None:
    got = config(network_train_unet_only=True)
    assert (got.train_unet, got.train_text_encoder, got.text_encoder_lr) == (True, False, 0.0)
    assert "network_train_unet_only" in problem_fields(
        network_train_unet_only=True, network_train_text_encoder_only=True
    )


def test_constant_schedule_with_warmup_drops_the_warmup_with_a_warning() -> None:
    parsed = parse_payload({"lr_scheduler": "constant", "lr_warmup": 10})
    assert parsed.config.lr_warmup_percent == 0.0
    assert [w.field for w in parsed.warnings] == ["lr_warmup"]
    assert "warmup set to 0" in parsed.warnings[0].message


def test_absolute_warmup_steps_are_kept_for_warmup_schedules() -> None:
    got = config(lr_scheduler="cosine", lr_warmup=10, lr_warmup_steps=50)
    assert (got.lr_warmup_percent, got.lr_warmup_steps) == (10.0, 50)


def test_max_grad_norm_zero_warns_that_clipping_stays_on() -> None:
    parsed = parse_payload({**BASE, "max_grad_norm": 0})
    assert parsed.config.max_grad_norm == 1.0
    assert any(w.field == "max_grad_norm" for w in parsed.warnings)


def test_adafactor_relative_step_forces_the_adafactor_schedule() -> None:
    parsed = parse_payload(
        {**BASE, "optimizer": "adafactor", "learning_rate": 1e-3, "unet_lr": 1e-4}
    )
    got = parsed.config
    assert got.optimizer == "Adafactor" and got.optimizer_args == {"relative_step": True}
    assert got.lr_scheduler == "adafactor"
    assert got.unet_lr == got.text_encoder_lr == 1e-3  # part rates ignored, initial rate used
    assert {"lr_scheduler", "unet_lr", "text_encoder_lr"} <= {w.field for w in parsed.warnings}


def test_adafactor_without_relative_step_keeps_the_chosen_schedule() -> None:
    got = config(
        optimizer="Adafactor",
        optimizer_args="relative_step=False scale_parameter=False warmup_init=False",
        lr_scheduler="constant_with_warmup",
        lr_warmup=5,
    )
    assert got.lr_scheduler == "constant_with_warmup" and got.unet_lr == 1e-4
    assert "lr_scheduler" in problem_fields(optimizer="AdamW", lr_scheduler="adafactor")


def test_cache_latents_to_disk_implies_cache_latents() -> None:
    assert config(cache_latents=False, cache_latents_to_disk=True).cache_latents


def test_caption_extension_gets_a_leading_dot_and_empty_means_caption() -> None:
    assert config(caption_extension="txt").caption_extension == ".txt"
    assert config(caption_extension="").caption_extension == ".caption"


def test_resolution_accepts_one_number_for_a_square() -> None:
    assert config(max_resolution="768").resolution == (768, 768)
    assert config(max_resolution="1216,832").resolution == (1216, 832)


def test_attention_choices_and_bools_all_map_to_sdpa_without_problems() -> None:
    for value in ("none", "sdpa", "xformers", True, False):
        parse_payload({**BASE, "xformers": value, "mem_eff_attn": True})


def test_bools_accept_zero_and_one_as_the_gui_stores_them() -> None:
    got = config(persistent_data_loader_workers=1, shuffle_caption=0)
    assert got.persistent_data_loader_workers is True and got.shuffle_caption is False
    assert problem_fields(shuffle_caption="true") == ["shuffle_caption"]
    assert problem_fields(shuffle_caption=2) == ["shuffle_caption"]


def test_null_means_the_default() -> None:
    assert config(network_dim=None).network_dim == 8
