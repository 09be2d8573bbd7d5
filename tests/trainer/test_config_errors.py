"""Problems: unknown keys, bad values, refusals, aliases, secrets, cross-field rules."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from trainer.config import KEYS, PayloadError, Problem, Status, TrainingConfig, parse_payload

BASE: dict[str, Any] = {"lr_scheduler": "constant", "lr_warmup": 0}


def problems(**changes: Any) -> tuple[Problem, ...]:
    with pytest.raises(PayloadError) as caught:
        parse_payload({**BASE, **changes})
    return caught.value.problems


def fields(**changes: Any) -> list[str]:
    return [p.field for p in problems(**changes)]


def test_unknown_key_suggests_the_nearest_known_key() -> None:
    (problem,) = problems(netwrok_dim=16)
    assert problem.field == "netwrok_dim"
    assert "unknown key" in problem.message and "'network_dim'" in problem.message


def test_unknown_key_far_from_everything_has_no_suggestion() -> None:
    (problem,) = problems(zzzzqqq=1)
    assert problem.message == "unknown key"


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), float("-inf"), "NaN", "Infinity", "-inf", "1e999"]
)
def test_nan_and_infinity_are_rejected(value: Any) -> None:
    (problem,) = problems(learning_rate=value)
    assert problem.field == "learning_rate" and "finite" in problem.message


def test_nan_is_rejected_after_json_decoding() -> None:
    payload = json.loads('{"noise_offset": NaN, "network_alpha": Infinity}')
    with pytest.raises(PayloadError) as caught:
        parse_payload({**BASE, **payload})
    assert {p.field for p in caught.value.problems} == {"noise_offset", "network_alpha"}


def test_all_problems_are_reported_at_once_with_their_fields() -> None:
    found = fields(
        network_dim=0,
        learning_rate="fast",
        mixed_precision="fp32",
        netwrok_alpha=1,
        train_batch_size=2.5,
        LoRA_type="LyCORIS/LoHaX",
        min_timestep=900,
        max_timestep=100,
    )
    assert set(found) == {
        "network_dim",
        "learning_rate",
        "mixed_precision",
        "netwrok_alpha",
        "train_batch_size",
        "LoRA_type",
        "min_timestep",
    }
    assert len(found) == len(set(found))


def test_range_messages_name_the_allowed_range() -> None:
    (problem,) = problems(network_dim=1000)
    assert "1–512" in problem.message and "1000" in problem.message


def test_booleans_are_not_numbers() -> None:
    assert fields(network_dim=True) == ["network_dim"]


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("sdxl", False, "only SDXL"),
        ("v2", True, "SD 2.x"),
        ("save_model_as", "ckpt", "safetensors"),
        ("mixed_precision", "fp8", "fp16"),
        ("weighted_captions", True, "SDXL"),
        ("dataset_config", "/data/ds.toml", "a path on the server"),
        ("resume", "/out/last-state", "resumes from its own newest training state"),
        ("additional_parameters", "--foo 1", "unsafe: free-form"),
        ("extra_accelerate_launch_args", "--bar", "unsafe: free-form"),
    ],
)
def test_unsupported_values_are_refused_with_a_reason(key: str, value: Any, words: str) -> None:
    (problem,) = problems(**{key: value})
    assert problem.field == key and "refused" in problem.message and words in problem.message


def test_default_values_of_refused_keys_are_accepted() -> None:
    refused = {k: s.default for k, s in KEYS.items() if s.status is Status.REFUSED}
    parse_payload({**BASE, **refused, "multires_noise_discount": 0})


def test_host_keys_accept_any_valid_value() -> None:
    host = {"gpu_ids": "0,1", "num_processes": 2, "dynamo_backend": "inductor", "output_dir": "/o"}
    assert parse_payload({**BASE, **host}).normalized["gpu_ids"] == "0,1"
    assert fields(dynamo_backend="warp-drive") == ["dynamo_backend"]


@pytest.mark.parametrize("name", ["torch.optim.SGD", "bitsandbytes.optim.AdEMAMix8bit", "SGD"])
def test_optimizer_import_paths_and_other_names_are_refused_with_the_list(name: str) -> None:
    (problem,) = problems(optimizer=name)
    assert problem.field == "optimizer"
    assert "AdamW, AdamW8bit, Lion, Lion8bit, Adafactor, Prodigy" in problem.message


def test_optimizer_name_is_case_insensitive_and_canonical() -> None:
    parsed = parse_payload({**BASE, "optimizer": "lion8BIT"})
    assert parsed.config.optimizer == parsed.normalized["optimizer"] == "Lion8bit"


def test_sd_scripts_spellings_are_aliases() -> None:
    parsed = parse_payload(
        {**BASE, "optimizer_type": "Prodigy", "resolution": "768,768", "no_half_vae": True}
    )
    assert parsed.config.optimizer == "Prodigy" and parsed.config.resolution == (768, 768)
    assert parsed.config.no_half_vae
    assert parsed.normalized["max_resolution"] == "768,768"
    assert "optimizer_type" not in parsed.normalized


def test_same_setting_under_two_spellings_must_agree() -> None:
    parse_payload({**BASE, "optimizer": "AdamW", "optimizer_type": "adamw"})
    (problem,) = problems(optimizer="AdamW", optimizer_type="Lion")
    assert problem.field == "optimizer_type" and "'optimizer'" in problem.message
    assert fields(xformers="none", sdpa=True) == ["sdpa"]


def test_secret_is_refused_and_never_echoed() -> None:
    secret = "wandb-SECRET-1234567890"
    with pytest.raises(PayloadError) as caught:
        parse_payload({**BASE, "wandb_api_key": secret, "huggingface_token": secret + "x"})
    assert {p.field for p in caught.value.problems} == {"wandb_api_key", "huggingface_token"}
    assert secret not in str(caught.value)
    assert all(secret not in p.message for p in caught.value.problems)


def test_empty_secret_is_accepted_and_normalized_holds_no_secret() -> None:
    parsed = parse_payload({**BASE, "wandb_api_key": ""})
    assert parsed.normalized["wandb_api_key"] == "" and parsed.normalized["huggingface_token"] == ""


def test_non_text_secret_is_reported_without_its_value() -> None:
    (problem,) = problems(wandb_api_key=123456789)
    assert "123456789" not in problem.message


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"min_bucket_reso": 1088}, "min_bucket_reso"),
        ({"max_bucket_reso": 960}, "max_bucket_reso"),
        ({"min_bucket_reso": 300}, "min_bucket_reso"),
        ({"bucket_reso_steps": 48}, "bucket_reso_steps"),
        ({"min_timestep": 600, "max_timestep": 500}, "min_timestep"),
        ({"min_timestep": 1000, "max_timestep": 1000}, "min_timestep"),
        ({"output_name": "../escape/x"}, "output_name"),
    ],
)
def test_cross_field_rules_are_problems(changes: dict[str, Any], field: str) -> None:
    assert field in fields(max_resolution="1024,1024", **changes)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"full_fp16": True, "full_bf16": True}, "full_bf16"),
        ({"full_fp16": True, "mixed_precision": "bf16"}, "full_fp16"),
        ({"color_aug": True}, "color_aug"),
        ({"random_crop": True}, "random_crop"),
        ({"cache_text_encoder_outputs": True}, "sdxl_cache_text_encoder_outputs"),
        ({"scale_v_pred_loss_like_noise_pred": True}, "scale_v_pred_loss_like_noise_pred"),
        ({"v_parameterization": True, "v_pred_like_loss": 0.1}, "v_pred_like_loss"),
        ({"adaptive_noise_scale": 0.1, "noise_offset": 0.0}, "adaptive_noise_scale"),
        ({"fp8_base": True, "mixed_precision": "no"}, "fp8_base"),
    ],
)
def test_cross_field_rules_hold_in_the_model(changes: dict[str, Any], field: str) -> None:
    # A config built directly (not through parse_payload) obeys the same rules.
    dumped = parse_payload(BASE).config.model_dump(mode="json")
    with pytest.raises(ValidationError, match=field):
        TrainingConfig.model_validate({**dumped, **changes})


def test_model_rejects_out_of_range_and_unknown_fields() -> None:
    dumped = parse_payload(BASE).config.model_dump(mode="json")
    with pytest.raises(ValidationError, match="network_dim"):
        TrainingConfig.model_validate({**dumped, "network_dim": 0})
    with pytest.raises(ValidationError):
        TrainingConfig.model_validate({**dumped, "surprise": 1})
    with pytest.raises(ValidationError):
        parse_payload(BASE).config.network_dim = 4  # type: ignore[misc]


def test_payload_must_be_an_object() -> None:
    with pytest.raises(PayloadError):
        parse_payload(["not", "a", "mapping"])  # type: ignore[arg-type]
