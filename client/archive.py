"""Datasets given as a folder are zipped on the fly into a temporary file."""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def dataset_archive(source: Path) -> Iterator[Path]:
    """Yield a zip of ``source`` (itself if it is already a zip)."""
    if source.is_file():
        yield source
        return
    if not source.is_dir():
        raise FileNotFoundError(f"dataset {source} is neither a folder nor a zip file")
    with tempfile.TemporaryDirectory(prefix="lorabox-") as tmp:
        archive = Path(tmp) / f"{source.name}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as handle:
            # Images are already compressed; storing is faster and the server's
            # bomb checks see honest sizes.
            for path in sorted(source.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    handle.write(path, path.relative_to(source).as_posix())
        yield archive
