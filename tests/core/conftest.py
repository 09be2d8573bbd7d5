"""Fixtures of tests/core."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.db import Database
from core.settings import Settings
from tests.core.sharing_rows import sharing_database


@pytest.fixture
def sharing_db(tmp_path: Path) -> Iterator[tuple[Database, Settings]]:
    """A migrated SQLite file with alice and bob; preemption after 60 s, at most twice."""
    yield from sharing_database(tmp_path)
