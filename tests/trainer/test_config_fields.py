"""TrainingConfig is derived from the registry: its fields, their types, and the one range check."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Literal, get_origin

import pytest
from pydantic import ValidationError

import trainer.config.typed as typed
from trainer.config import KEYS, PayloadError, Status, TrainingConfig, parse_payload
from trainer.config.fields import FIELDS, INTERNAL, fields_of, render_stub, type_text
from trainer.config.keys import FIELD_TO_KEY
from trainer.config.spec import KEEP, choice, flag, integer, text
from trainer.config.table import STUB_PATH

BASE: dict[str, Any] = {"lr_scheduler": "constant", "lr_warmup": 0}
CONFIG_DIR = Path(__file__).resolve().parents[2] / "trainer" / "config"


def test_the_typed_stub_is_generated_from_the_registry() -> None:
    assert STUB_PATH.read_text(encoding="utf-8") == render_stub(), (
        "trainer/config/typed.py is stale: run python -m trainer.config.table"
    )


def test_the_model_has_one_field_per_registry_field_plus_the_internal_ones() -> None:
    assert set(FIELDS) == set(FIELD_TO_KEY) | set(INTERNAL)
    assert not set(FIELD_TO_KEY) & set(INTERNAL)
    runtime = {name: info.annotation for name, info in TrainingConfig.model_fields.items()}
    seen_by_mypy = {
        name: info.annotation for name, info in typed.TrainingConfig.model_fields.items()
    }
    assert runtime == dict(FIELDS) == seen_by_mypy


def test_field_types_carry_no_range_or_choice() -> None:
    # Ranges and choices live in the registry only; KeySpec.check enforces them.
    for name, info in TrainingConfig.model_fields.items():
        assert info.metadata == [], name
        assert get_origin(info.annotation) is not Literal, name


def test_a_new_registry_row_becomes_a_typed_field() -> None:
    rows = [
        integer("new_steps", 0, 0, 10, "m", unset=None),
        choice("new_mode", "a", ("a", "b"), "m", field="mode"),
        text("new_note", "", "m"),
        flag("host_only", False, "m", status=Status.HOST, reason="r", field=None),
    ]
    found = fields_of(rows)
    assert found == {"new_steps": int | None, "mode": str, "new_note": str}
    assert [type_text(t) for t in found.values()] == ["int | None", "str", "str"]
    assert type_text(dict[str, Any]) == "dict[str, Any]"
    assert type_text(tuple[int, int]) == "tuple[int, int]"


@pytest.mark.parametrize("key", [key for key, spec in KEYS.items() if spec.field])
def test_defaults_and_unset_values_pass_the_registry_check(key: str) -> None:
    # The values the payload edge derives (defaults, "0 means unset") never fail the model.
    spec = KEYS[key]
    default = tuple(map(int, spec.default.split(","))) if key == "max_resolution" else spec.default
    assert spec.check(default) is None
    if spec.unset is not KEEP and spec.unset is not None:
        assert spec.check(spec.unset) is None


@pytest.mark.parametrize(
    ("changes", "key", "words"),
    [
        ({"max_token_length": 100}, "max_token_length", "must be one of 75, 150, 225"),
        ({"save_precision": "fp32"}, "save_precision", "must be one of"),
        ({"optimizer": "torch.optim.RAdam"}, "optimizer", "supported optimizers"),
        ({"lr_scheduler": "inverse_sqrt"}, "lr_scheduler", "must be one of"),
        ({"mixed_precision": "fp8"}, "mixed_precision", "refused"),
        ({"resolution": [100, 100]}, "max_resolution", "multiple of 8 in 64–4096"),
        ({"learning_rate": 2.0}, "learning_rate", "must be in 0–1, got 2.0"),
    ],
)
def test_the_model_checks_ranges_and_choices_with_the_registry(
    changes: dict[str, Any], key: str, words: str
) -> None:
    dumped = parse_payload(BASE).config.model_dump(mode="json")
    with pytest.raises(ValidationError, match=f"{key}: .*{words}"):
        TrainingConfig.model_validate({**dumped, **changes})


def test_payload_edge_and_model_give_the_same_range_message() -> None:
    with pytest.raises(PayloadError) as caught:
        parse_payload({**BASE, "network_dim": 1000})
    (problem,) = caught.value.problems
    assert problem.message == KEYS["network_dim"].check(1000)
    dumped = parse_payload(BASE).config.model_dump(mode="json")
    with pytest.raises(ValidationError, match=f"network_dim: {problem.message}"):
        TrainingConfig.model_validate({**dumped, "network_dim": 1000})


def _imports(path: Path) -> set[str]:
    """trainer.config modules that ``path`` imports, TYPE_CHECKING blocks included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name.rsplit(".", 1)[1] for name in found if name.startswith("trainer.config.")}


def test_config_modules_import_each_other_without_a_cycle() -> None:
    graph = {p.stem: _imports(p) for p in CONFIG_DIR.glob("*.py") if p.stem != "__init__"}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import cycle: " + " -> ".join((*path, module))
        if module not in done:
            for imported in graph.get(module, ()):
                visit(imported, (*path, module))
            done.add(module)

    for module in graph:
        visit(module, ())
