"""A thin, typed wrapper over the REST API for the command-line client."""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


class ClientError(Exception):
    """A request failed: the server's reason, or why the server could not be reached."""


@dataclass(frozen=True)
class Connection:
    url: str
    token: str

    @classmethod
    def from_env(cls) -> Connection:
        url = os.environ.get("LORABOX_URL", "http://127.0.0.1:8000")
        token = os.environ.get("LORABOX_TOKEN", "")
        if not token:
            raise ClientError(
                "set LORABOX_TOKEN (lorabox user add NAME prints one; lorabox user token NAME"
                " replaces a lost one)"
            )
        return cls(url.rstrip("/"), token)


def _reason(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    if isinstance(detail, list):
        lines = [
            f"  {'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}"
            for item in detail
        ]
        return f"HTTP {response.status_code}:\n" + "\n".join(lines)
    return f"HTTP {response.status_code}: {detail}"


class Api:
    def __init__(
        self,
        connection: Connection,
        timeout_s: float = 60,
        transport: httpx.BaseTransport | None = None,  # tests: a scripted server
    ) -> None:
        self._http = httpx.Client(
            base_url=connection.url,
            headers={"Authorization": f"Bearer {connection.token}"},
            timeout=timeout_s,
            transport=transport,
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the server: {exc}") from exc
        if response.status_code >= 400:
            raise ClientError(_reason(response))
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def upload_dataset(self, archive: Path, name: str) -> dict[str, Any]:
        with archive.open("rb") as handle:
            files = {"file": (archive.name, handle, "application/zip")}
            result: dict[str, Any] = self.json(
                "POST", "/v1/datasets", files=files, data={"name": name}, timeout=None
            )
            return result

    def download(self, path: str, target: Path, *, overwrite: bool = False) -> None:
        """Streams ``path`` into ``target`` through a temporary file beside it, renamed into
        place at the end, so an interrupted download leaves no partial file behind. Without
        ``overwrite``, FileExistsError if ``target`` exists (it is left as it was)."""
        # A name of its own, so two downloads into one folder never share a temporary file.
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with self._http.stream("GET", path, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ClientError(_reason(response))
                with tmp.open("xb") as handle:
                    for chunk in response.iter_bytes(1 << 20):
                        handle.write(chunk)
                    handle.flush()
                    os.fsync(handle.fileno())  # the data is on disk before its name is
            _publish(tmp, target, overwrite=overwrite)
        except httpx.HTTPError as exc:
            raise ClientError(f"download failed: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)  # whatever ended the download, Ctrl-C included

    def paginate(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            page = self.json(
                "GET", path, params={**params, **({"cursor": cursor} if cursor else {})}
            )
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return


def _publish(tmp: Path, target: Path, *, overwrite: bool) -> None:
    """Gives the finished ``tmp`` the name ``target`` in one step."""
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        # A hard link refuses an existing name atomically: a file that appeared at ``target``
        # while we downloaded is not overwritten either. ``tmp`` is unlinked by the caller.
        os.link(tmp, target)
    except FileExistsError:
        raise
    except OSError:
        # A filesystem without hard links (FAT, some network mounts): check, then rename.
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from None
        os.replace(tmp, target)
