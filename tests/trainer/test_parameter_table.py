"""docs/parameters.md is generated from the registry and kept in step with it."""

from __future__ import annotations

import pytest

from tests.factories import seed_payload
from tests.trainer.effects import coverage_problems, covered_keys
from trainer.config import KEYS
from trainer.config.table import DOC_PATH, main, render


def test_parameter_table_matches_the_registry():
    assert DOC_PATH.read_text(encoding="utf-8") == render(), (
        "docs/parameters.md is stale: run python -m trainer.config.table"
    )


def test_table_has_one_row_per_key_with_every_seed_key():
    rows = [line for line in render().splitlines() if line.startswith("| `")]
    keys = {row.split("`")[1] for row in rows}
    assert set(KEYS) <= keys
    assert set(seed_payload()) <= keys
    assert len(seed_payload()) == 140


def test_check_mode_reports_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "parameters.md"
    stub = ["--stub-out", str(tmp_path / "typed.py")]  # the generator writes both files
    stale.write_text("old")
    assert main(["--out", str(stale), "--check"]) == 1
    assert main(["--out", str(stale), *stub]) == 0
    assert main(["--out", str(stale), "--check"]) == 0
    (tmp_path / "typed.py").write_text("old")
    assert main(["--out", str(stale), *stub, "--check"]) == 1


def test_effect_coverage_names_uncovered_honoured_keys_and_unknown_markers(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "from tests.trainer.effects import shows_effect\n"
        "@shows_effect('noise_offset', 'no_such_key')\n"
        "def test_a():\n    pass\n"
    )
    assert covered_keys(tmp_path) == {
        "noise_offset": ["test_x.py::test_a"],
        "no_such_key": ["test_x.py::test_a"],
    }
    problems = coverage_problems(tmp_path)
    assert any("no_such_key" in p and "not an honoured key" in p for p in problems)
    assert any("seed" in p and "without a test" in p for p in problems)
    assert not any("noise_offset," in p for p in problems)


@pytest.mark.parametrize("key", ["xformers", "sdxl", "v2"])
def test_keys_that_train_the_same_with_every_value_need_no_effect_test(key):
    assert not KEYS[key].needs_effect_test()
