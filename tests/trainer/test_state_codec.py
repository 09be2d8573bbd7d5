"""The pickle-free state codec: exact round trips of real optimizer, scheduler and RNG states."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load, save

from trainer.optim.optimizers import build_optimizer
from trainer.optim.schedulers import build_scheduler
from trainer.state.codec import StateFormatError, TensorStore, decode, encode


def round_trip(tree: object) -> object:
    """Through JSON text and safetensors bytes, as a state file stores them."""
    tensors = TensorStore()
    encoded = json.dumps(encode(tree, tensors, "t"))
    return decode(json.loads(encoded), load(save(dict(tensors))))


def test_plain_values_keep_their_types_int_keys_tuples_and_non_finite_floats():
    tree = {
        "a": (1, 2.5, None, True, "x"),
        7: [math.inf, -math.inf],
        "$odd": {"nested": ({"deep": ()},)},
    }
    back = round_trip(tree)
    assert back == tree
    assert isinstance(back["a"], tuple) and 7 in back  # type: ignore[index, operator]
    assert math.isnan(round_trip({"x": math.nan})["x"])  # type: ignore[index]


def test_tensors_and_numpy_arrays_come_back_bit_exact_with_their_dtypes():
    tree = {
        "f": torch.randn(3, 4),
        "scalar": torch.tensor(5.0),
        "u8": torch.randint(0, 255, (10,), dtype=torch.uint8),
        "mt": np.random.RandomState(3).get_state()[1],  # uint32, which torch lacks
    }
    back = round_trip(tree)
    assert isinstance(back, dict)
    for key in ("f", "scalar", "u8"):
        assert back[key].dtype == tree[key].dtype
        assert torch.equal(back[key], tree[key])
    assert back["mt"].dtype == np.uint32 and np.array_equal(back["mt"], tree["mt"])


def test_a_tensor_shared_between_entries_is_stored_once_and_stays_shared():
    shared = torch.arange(4.0)
    tensors = TensorStore()
    encoded = encode({"a": shared, "b": shared, "view": shared[1:]}, tensors, "s")
    assert len(tensors) == 2  # the view of shared memory is a copy; the alias isn't
    back = decode(encoded, tensors)
    assert back["a"] is back["b"]
    assert torch.equal(back["view"], shared[1:])


def test_decoding_refuses_references_to_missing_tensors():
    with pytest.raises(StateFormatError, match="lacks its tensor"):
        decode({"$tensor": "nope"}, {})


def test_rng_states_round_trip_and_replay_the_same_stream():
    rng = random.Random(5)
    np.random.seed(9)
    states = {
        "python": rng.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    back = round_trip(states)
    assert isinstance(back, dict)
    expected = ([rng.random() for _ in range(3)], np.random.rand(3), torch.rand(3))
    other = random.Random()
    other.setstate(back["python"])
    np.random.set_state(back["numpy"])
    torch.set_rng_state(back["torch"])
    assert [other.random() for _ in range(3)] == expected[0]
    assert np.array_equal(np.random.rand(3), expected[1])
    assert torch.equal(torch.rand(3), expected[2])


def _params() -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(64, 32)), torch.nn.Parameter(torch.randn(32))]


def _train(params, optimizer, scheduler, steps: range) -> None:
    for step in steps:
        loss = sum((p * (step + 1)).sin().sum() for p in params)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()


@pytest.mark.parametrize(
    ("name", "args", "schedule"),
    [
        ("AdamW", {}, "cosine"),
        ("AdamW8bit", {}, "cosine_with_restarts"),
        ("Lion", {}, "linear"),
        ("Adafactor", {"relative_step": True, "warmup_init": True}, "adafactor"),
        ("Prodigy", {"d_coef": 2.0}, "polynomial"),
    ],
)  # fmt: skip
def test_optimizer_and_scheduler_state_resume_exactly(name, args, schedule):
    def build(params):
        lr = None if schedule == "adafactor" else 1e-3
        optimizer = build_optimizer(name, [{"params": params, "lr": lr}], args)
        return optimizer, build_scheduler(schedule, optimizer, 10, 2, 2, 1.0, {})

    straight = _params()
    optimizer, scheduler = build(straight)
    _train(straight, optimizer, scheduler, range(6))

    resumed = _params()
    first_optimizer, first_scheduler = build(resumed)
    _train(resumed, first_optimizer, first_scheduler, range(3))
    saved = round_trip({"o": first_optimizer.state_dict(), "s": first_scheduler.state_dict()})
    assert isinstance(saved, dict)
    weights = [p.detach().clone() for p in resumed]
    fresh = [torch.nn.Parameter(w) for w in weights]
    optimizer2, scheduler2 = build(fresh)
    optimizer2.load_state_dict(saved["o"])
    scheduler2.load_state_dict(saved["s"])
    _train(fresh, optimizer2, scheduler2, range(3, 6))
    assert all(torch.equal(a, b) for a, b in zip(straight, fresh, strict=True))
