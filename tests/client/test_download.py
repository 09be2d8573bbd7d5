"""Downloads on a scripted server: a download lands whole, checked, inside its folder, or not
at all."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest

from lorabox_client import ConnectionFailed, DownloadCorrupted, Job, LoraboxError
from lorabox_client.http import Http

FIRST_CHUNK = b"half a LoRA"


def _http(body: Iterator[bytes], headers: dict[str, str] | None = None) -> Http:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers=headers)

    return Http("http://lorabox.test", "t", transport=httpx.MockTransport(answer))


def _dies_after_first_chunk(error: BaseException) -> Iterator[bytes]:
    yield FIRST_CHUNK
    raise error


@pytest.mark.parametrize(
    "error",
    [httpx.ReadError("connection reset"), KeyboardInterrupt()],
    ids=["connection lost", "ctrl-c"],
)
def test_an_interrupted_download_leaves_no_partial_file(tmp_path, error):
    target = tmp_path / "last.safetensors"
    with pytest.raises((ConnectionFailed, KeyboardInterrupt)):
        _http(_dies_after_first_chunk(error)).download("/a", target)
    assert list(tmp_path.iterdir()) == []


def test_a_download_refuses_a_file_that_appeared_meanwhile(tmp_path):
    target = tmp_path / "last.safetensors"

    def body() -> Iterator[bytes]:
        yield FIRST_CHUNK
        target.write_bytes(b"written by someone else during the download")
        yield b" and the rest"

    with pytest.raises(FileExistsError):
        _http(body()).download("/a", target)
    assert target.read_bytes() == b"written by someone else during the download"
    assert list(tmp_path.iterdir()) == [target]
    _http(iter([FIRST_CHUNK])).download("/a", target, overwrite=True)
    assert target.read_bytes() == FIRST_CHUNK and list(tmp_path.iterdir()) == [target]


def test_a_download_whose_bytes_do_not_match_the_servers_checksum_writes_nothing(tmp_path):
    target = tmp_path / "last.safetensors"
    right = {"X-Checksum-Sha256": hashlib.sha256(FIRST_CHUNK).hexdigest()}
    _http(iter([FIRST_CHUNK]), right).download("/a", target)
    assert target.read_bytes() == FIRST_CHUNK
    wrong = {"X-Checksum-Sha256": hashlib.sha256(b"the whole LoRA").hexdigest()}
    with pytest.raises(DownloadCorrupted):
        _http(iter([FIRST_CHUNK]), wrong).download("/a", tmp_path / "other.safetensors")
    assert list(tmp_path.iterdir()) == [target]


def test_an_artifact_name_that_leaves_the_folder_is_refused(tmp_path):
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/jobs/j/artifacts"  # nothing else is fetched
        return httpx.Response(200, json={"items": [{"name": "../evil.sh", "kind": "lora"}]})

    http = Http("http://lorabox.test", "t", transport=httpx.MockTransport(answer))
    folder = tmp_path / "out"
    with pytest.raises(LoraboxError, match="leaves the folder"):
        Job(http, {"id": "j", "status": "succeeded"}).download(folder)
    assert list(tmp_path.iterdir()) == []
