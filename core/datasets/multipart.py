"""Streams a multipart/form-data body to disk: bounded memory, size-capped, framework-free."""

from __future__ import annotations

import errno
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header

from core.errors import InsufficientStorage, InvalidInput, Problem, TooLarge

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 16


@dataclass
class ReceivedForm:
    fields: dict[str, str] = field(default_factory=dict)
    file_path: Path | None = None
    filename: str | None = None
    file_bytes: int = 0
    file_sha256: str = ""


class _Receiver:
    """python-multipart callbacks: the `file` part goes to disk, small fields to memory."""

    def __init__(self, dest: Path, file_field: str, max_bytes: int) -> None:
        self.form = ReceivedForm()
        self._dest = dest
        self._file_field = file_field
        self._max_bytes = max_bytes
        self._headers: dict[bytes, bytes] = {}
        self._hfield = b""
        self._hvalue = b""
        self._name = ""
        self._out: IO[bytes] | None = None
        self._hash = hashlib.sha256()
        self._value = bytearray()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._add("_hfield", d[s:e]),
            "on_header_value": lambda d, s, e: self._add("_hvalue", d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _add(self, attr: str, data: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + data)

    def _part_begin(self) -> None:
        self._headers, self._name, self._value = {}, "", bytearray()

    def _header_end(self) -> None:
        self._headers[self._hfield.lower()] = self._hvalue
        self._hfield, self._hvalue = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if self._name == self._file_field and filename is not None:
            if self._out is not None:
                raise InvalidInput([Problem(("body", "file"), "send exactly one file")])
            self.form.filename = filename.decode("utf-8", "replace")
            self.form.file_path = self._dest / "upload.zip"
            self._out = self.form.file_path.open("wb")
        elif len(self.form.fields) >= MAX_FIELDS:
            raise InvalidInput([Problem(("body",), "too many form fields")])

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._out is not None and self._name == self._file_field:
            self.form.file_bytes += len(chunk)
            if self.form.file_bytes > self._max_bytes:
                raise TooLarge(f"upload larger than the limit of {self._max_bytes} bytes")
            self._out.write(chunk)
            self._hash.update(chunk)
            return
        self._value += chunk
        if len(self._value) > MAX_FIELD_BYTES:
            raise InvalidInput([Problem(("body", self._name), "form field too long")])

    def _part_end(self) -> None:
        if self._out is not None and self._name == self._file_field:
            self._out.close()
            self.form.file_sha256 = self._hash.hexdigest()
        elif self._name:
            try:
                self.form.fields[self._name] = self._value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput([Problem(("body", self._name), "not UTF-8 text")]) from exc

    def close(self) -> None:
        if self._out is not None and not self._out.closed:
            self._out.close()


async def receive_form(
    chunks: AsyncIterator[bytes],
    content_type: str,
    dest: Path,
    *,
    max_bytes: int,
    file_field: str = "file",
) -> ReceivedForm:
    """Writes the file part to ``dest/upload.zip`` as it arrives; raises TooLarge past the cap."""
    ctype, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise InvalidInput([Problem(("body",), "expected multipart/form-data with a boundary")])
    receiver = _Receiver(dest, file_field, max_bytes)
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in chunks:
            parser.write(chunk)
        parser.finalize()
    except (TooLarge, InvalidInput):
        raise
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise InsufficientStorage("the server's disk is full; upload discarded") from exc
        raise
    except Exception as exc:  # python-multipart raises its own errors on malformed bodies
        raise InvalidInput([Problem(("body",), f"malformed multipart body: {exc}")]) from exc
    finally:
        receiver.close()
    if receiver.form.file_path is None:
        raise InvalidInput([Problem(("body", file_field), "Field required", "missing")])
    return receiver.form
