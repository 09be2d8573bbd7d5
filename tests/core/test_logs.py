"""`GET /v1/jobs/{id}/logs?offset=N`: the job's own log, read on from any offset."""

from __future__ import annotations

import pytest

from core.watch.logs import complete_utf8


def test_a_chunk_never_ends_inside_a_multibyte_character():
    text = "loss ✓ schön 🙂".encode()
    for cut in range(len(text) + 1):
        head = complete_utf8(text[:cut])
        head.decode("utf-8")  # never raises
        assert text.startswith(head) and cut - len(head) < 4


@pytest.mark.slow
def test_the_log_reads_whole_and_in_pieces_from_any_offset(watch_stack, watched):
    url = f"/v1/jobs/{watched.job['id']}/logs"
    whole = watch_stack.get(url).json()
    assert whole["offset"] == 0 and whole["finished"] is True
    assert whole["next_offset"] == len(whole["text"].encode()) > 0
    pieces, offset = [], 0
    while offset < whole["next_offset"]:
        chunk = watch_stack.get(url, params={"offset": offset}).json()
        pieces.append(chunk["text"][:50])
        offset += len(chunk["text"][:50].encode())
    assert "".join(pieces) == whole["text"]
    tail = watch_stack.get(url, params={"offset": whole["next_offset"] + 1000}).json()
    assert tail["text"] == "" and tail["finished"] is True
    assert tail["next_offset"] == whole["next_offset"]


@pytest.mark.slow
def test_another_users_log_is_not_found_and_negative_offsets_are_refused(watch_stack, watched):
    url = f"/v1/jobs/{watched.job['id']}/logs"
    assert watch_stack.get(url, user="bob").status_code == 404
    assert watch_stack.get(url, params={"offset": -1}).status_code == 422
    assert watch_stack.get(url, user="admin").status_code == 200


@pytest.mark.slow
def test_lorabox_logs_prints_the_log_and_follow_stops_when_the_job_has_ended(watch_stack, watched):
    whole = watch_stack.get(f"/v1/jobs/{watched.job['id']}/logs").json()["text"]
    whole = whole.replace("\r\n", "\n").replace("\r", "\n")  # text-mode pipes translate \r
    for args in ((), ("-f", "--interval", "0.2")):
        done = watch_stack.cli("logs", watched.job["id"], *args, timeout_s=60)
        assert done.returncode == 0 and done.stdout == whole, done.stderr
