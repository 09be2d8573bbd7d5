"""The one place the client speaks HTTP: authentication, typed errors, paging, downloads."""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from lorabox_client.errors import ConnectionFailed, DownloadCorrupted, error_for

USER_AGENT = "lorabox-client/0.1"


class Http:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_s: float = 60,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT},
            timeout=timeout_s,
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ConnectionFailed(f"cannot reach the server at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise error_for(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response; an error status raises its typed error before any body."""
        try:
            with self._client.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_for(response)
                yield response
        except httpx.HTTPError as exc:
            raise ConnectionFailed(f"connection to {self.url} failed: {exc}") from exc

    def paginate(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            page = self.json("GET", path, params=params | ({"cursor": cursor} if cursor else {}))
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def download(self, path: str, target: Path, *, overwrite: bool = False) -> None:
        """Streams ``path`` into ``target`` through a temporary file beside it, renamed into
        place at the end, so an interrupted download leaves no partial file behind. Without
        ``overwrite``, FileExistsError if ``target`` exists (it is left as it was). The bytes
        are checked against the server's ``X-Checksum-Sha256`` when it sends one."""
        # A name of its own, so two downloads into one folder never share a temporary file.
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with self.stream("GET", path, timeout=httpx.Timeout(60, read=None)) as response:
                expected = response.headers.get("x-checksum-sha256")
                digest = hashlib.sha256()
                with tmp.open("xb") as handle:
                    for chunk in response.iter_bytes(1 << 20):
                        handle.write(chunk)
                        digest.update(chunk)
                    handle.flush()
                    os.fsync(handle.fileno())  # the data is on disk before its name is
            if expected and digest.hexdigest() != expected.lower():
                raise DownloadCorrupted(
                    f"{path}: received bytes have SHA-256 {digest.hexdigest()}, the server "
                    f"says {expected}; nothing was written"
                )
            _publish(tmp, target, overwrite=overwrite)
        finally:
            tmp.unlink(missing_ok=True)  # whatever ended the download, Ctrl-C included


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
