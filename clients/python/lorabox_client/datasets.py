"""Datasets as the client sends them: a folder zipped reproducibly, identified by content.

The server keeps each upload's SHA-256, so the same content zipped the same way is found
again (``GET /v1/datasets?sha256=``) instead of being uploaded twice. For that, zipping a
folder must give the same bytes every time: members in sorted order, with fixed dates and
permissions (``zipfile.ZipInfo``), not the files' modification times.
"""

from __future__ import annotations

import hashlib
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The earliest date a zip can hold (its DOS date starts in 1980).
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Dataset:
    """An uploaded dataset. ``reused``: found on the server by its content, not uploaded."""

    id: str
    name: str
    sha256: str
    image_count: int
    warnings: list[Any] = field(default_factory=list)
    reused: bool = False
    data: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any], *, reused: bool = False) -> Dataset:
        return cls(
            id=data["id"],
            name=data.get("name", ""),
            sha256=data.get("sha256", ""),
            image_count=data.get("image_count", 0),
            warnings=list(data.get("warnings") or []),
            reused=reused,
            data=data,
        )


def warning_text(warning: Any) -> str:
    """A dataset or plan warning as one line (a string, or ``{field, message}``)."""
    if isinstance(warning, dict):
        where = warning.get("field")
        return f"{where}: {warning.get('message')}" if where else str(warning.get("message"))
    return str(warning)


def _zip_folder(source: Path, archive: Path) -> None:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as handle:
        # Images are already compressed; storing is faster and the server's bomb checks see
        # honest sizes. Symlinks are skipped: they could point outside the folder.
        for path in sorted(source.rglob("*")):
            if path.is_file() and not path.is_symlink():
                info = zipfile.ZipInfo(path.relative_to(source).as_posix(), ZIP_EPOCH)
                info.external_attr = 0o644 << 16
                with path.open("rb") as src, handle.open(info, "w") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)


@contextmanager
def dataset_archive(source: Path) -> Iterator[Path]:
    """Yield a zip of ``source`` (itself if it is already a file), removed afterwards."""
    if source.is_file():
        yield source
        return
    if not source.is_dir():
        raise FileNotFoundError(f"dataset {source} is neither a folder nor a zip file")
    with tempfile.TemporaryDirectory(prefix="lorabox-") as tmp:
        archive = Path(tmp) / f"{source.resolve().name or 'dataset'}.zip"
        _zip_folder(source, archive)
        yield archive


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
