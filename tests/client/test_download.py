"""Api.download on a scripted server: a download lands whole, or not at all."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from client.http import Api, ClientError, Connection

FIRST_CHUNK = b"half a LoRA"


def _api(body: Iterator[bytes]) -> Api:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    return Api(Connection("http://lorabox.test", "t"), transport=httpx.MockTransport(answer))


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
    with pytest.raises((ClientError, KeyboardInterrupt)):
        _api(_dies_after_first_chunk(error)).download("/a", target)
    assert list(tmp_path.iterdir()) == []


def test_a_download_refuses_a_file_that_appeared_meanwhile(tmp_path):
    target = tmp_path / "last.safetensors"

    def body() -> Iterator[bytes]:
        yield FIRST_CHUNK
        target.write_bytes(b"written by someone else during the download")
        yield b" and the rest"

    with pytest.raises(FileExistsError):
        _api(body()).download("/a", target)
    assert target.read_bytes() == b"written by someone else during the download"
    assert list(tmp_path.iterdir()) == [target]
    _api(iter([FIRST_CHUNK])).download("/a", target, overwrite=True)
    assert target.read_bytes() == FIRST_CHUNK and list(tmp_path.iterdir()) == [target]
