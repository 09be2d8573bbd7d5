"""SHA-256 of large files, remembered across restarts by (size, mtime)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

CHUNK = 4 * 1024 * 1024


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class HashCache:
    """A JSON file of ``{path: [size, mtime_ns, sha256]}``; a 7 GB model is hashed once."""

    def __init__(self, file: Path) -> None:
        self._file = file
        self._lock = threading.Lock()

    def _load(self) -> dict[str, list[object]]:
        try:
            data = json.loads(self._file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def file_sha256(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        with self._lock:
            entry = self._load().get(key)
        if entry and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            return str(entry[2])
        digest = sha256_file(path)
        with self._lock:
            data = self._load()
            data[key] = [st.st_size, st.st_mtime_ns, digest]
            self._file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self._file)
        return digest
