"""optimizer_args / lr_scheduler_args: Kohya "k=v" strings parsed into typed values."""

from __future__ import annotations

from typing import Any

import pytest

from trainer.config import PayloadError, parse_payload
from trainer.config.arguments import parse_arguments

BASE: dict[str, Any] = {"lr_scheduler": "constant", "lr_warmup": 0}


def messages(**changes: Any) -> list[str]:
    with pytest.raises(PayloadError) as caught:
        parse_payload({**BASE, **changes})
    return [str(p) for p in caught.value.problems]


def test_values_are_python_literals() -> None:
    got = parse_arguments("betas=0.9,0.999 weight_decay=0.01 decouple=True d_coef=2 name='x'")
    assert got == {
        "betas": (0.9, 0.999),
        "weight_decay": 0.01,
        "decouple": True,
        "d_coef": 2,
        "name": "x",
    }
    assert isinstance(got["d_coef"], int) and isinstance(got["decouple"], bool)


def test_lists_become_tuples_and_double_quotes_are_removed() -> None:
    assert parse_arguments('milestones=[1,10] "eps=1e-8"') == {"milestones": (1, 10), "eps": 1e-8}


def test_empty_string_means_no_arguments() -> None:
    assert parse_arguments("") == {} and parse_arguments("   ") == {}


def test_bare_word_is_an_error_naming_the_item() -> None:
    with pytest.raises(ValueError, match=r"item 'foo=bar'.*single quotes"):
        parse_arguments("weight_decay=0.1 foo=bar")


@pytest.mark.parametrize("text", ["eps=1e999", "eps=nan", "betas=0.9,inf", "eps=-1e999"])
def test_nan_and_infinity_are_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_arguments(text)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("weight_decay = 0.1", "no spaces around '='"),
        ("a=b=c", "exactly one '='"),
        ("eps=1e-8 eps=1e-6", "given twice"),
        ("1x=2", "not a valid argument name"),
        ("x=1j", "unsupported value type"),
        ("x={1,2}", "unsupported value type"),
    ],
)
def test_malformed_strings_are_errors(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_arguments(text)


def test_optimizer_arguments_are_checked_against_the_optimizer() -> None:
    got = parse_payload(
        {**BASE, "optimizer": "Prodigy", "optimizer_args": "d_coef=2 decouple=True"}
    )
    assert got.config.optimizer_args == {"d_coef": 2, "decouple": True}
    (message,) = messages(optimizer="AdamW", optimizer_args="d_coef=2")
    assert (
        message.startswith("optimizer_args:") and "'d_coef' is not an argument of AdamW" in message
    )


def test_eight_bit_optimizers_accept_their_bitsandbytes_arguments() -> None:
    args = "betas=0.9,0.99 weight_decay=0.01 min_8bit_size=4096"
    assert parse_payload({**BASE, "optimizer": "AdamW8bit", "optimizer_args": args}).config
    # bitsandbytes >= 0.46 has no percentile_clipping / block_wise any more.
    assert (
        "'block_wise' is not an argument"
        in messages(optimizer="AdamW8bit", optimizer_args="block_wise=True")[0]
    )
    assert (
        "'min_8bit_size' is not an argument of AdamW"
        in messages(optimizer="AdamW", optimizer_args="min_8bit_size=4096")[0]
    )


def test_learning_rate_is_not_an_optimizer_argument() -> None:
    assert "'lr'" in messages(optimizer_args="lr=1")[0]


def test_payload_reports_the_bad_item_of_optimizer_args() -> None:
    (message,) = messages(optimizer_args="weight_decay=high")
    assert "optimizer_args" in message and "weight_decay=high" in message


def test_scheduler_arguments_are_checked_against_the_schedule() -> None:
    got = parse_payload({**BASE, "lr_scheduler": "polynomial", "lr_scheduler_args": "lr_end=1e-6"})
    assert got.config.lr_scheduler_args == {"lr_end": 1e-6}
    (message,) = messages(lr_scheduler="linear", lr_scheduler_args="num_cycles=2")
    assert "lr_scheduler_args" in message and "accepted: none" in message
