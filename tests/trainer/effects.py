"""Which honoured payload key each test shows the effect of.

``@shows_effect("key", ...)`` marks a test that sets a non-default value of each
named key and checks something observable (a formula against an independent
computation, the batch, the loss weights, the saved file). The trainer tests'
conftest fails collection when an honoured key that can change the run has no
such test, so flipping a key to honoured without a test is caught at once.

Coverage is read from the test sources (not only from the collected items), so
the check holds whichever subset of tests is selected.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from trainer.config import KEYS, Status

MARKER = "shows_effect"


def shows_effect(*keys: str) -> pytest.MarkDecorator:
    """Mark a test as showing the effect of a non-default value of each of ``keys``."""
    return getattr(pytest.mark, MARKER)(*keys)


def _marked_keys(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    keys: list[str] = []
    for decorator in node.decorator_list:
        if not isinstance(decorator, ast.Call):
            continue
        func = decorator.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if name == MARKER:
            keys += [arg.value for arg in decorator.args if isinstance(arg, ast.Constant)]
    return keys


def covered_keys(directory: Path) -> dict[str, list[str]]:
    """key -> the tests (``file::name``) in ``directory`` that show its effect."""
    covered: dict[str, list[str]] = {}
    for path in sorted(directory.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
                "test_"
            ):
                for key in _marked_keys(node):
                    covered.setdefault(key, []).append(f"{path.name}::{node.name}")
    return covered


def coverage_problems(directory: Path) -> list[str]:
    """Honoured keys without an effect test, and markers naming no honoured key."""
    covered = covered_keys(directory)
    problems = [
        f"{key}: marked in {', '.join(tests)} but is not an honoured key"
        for key, tests in covered.items()
        if key not in KEYS or KEYS[key].status is not Status.HONOURED
    ]
    missing = [key for key, spec in KEYS.items() if spec.needs_effect_test() and key not in covered]
    if missing:
        problems.append(
            "honoured keys without a test showing a non-default value's effect "
            f"(@shows_effect): {', '.join(missing)}"
        )
    return problems
