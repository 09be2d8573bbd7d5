"""An upload whose caption files sd-scripts would stop on (or read as an empty caption) is a
422 naming each file (``trainer.data.caption_files``; sd-scripts
``library/train_util.py: DreamBoothDataset.__init__.read_caption`` asserts on an empty file)."""

from __future__ import annotations


def _member_locs(response) -> list[str]:
    return [p["loc"][2] for p in response.json()["detail"] if len(p["loc"]) > 2]


def test_empty_and_blank_first_line_captions_are_422_naming_the_files(service, make_zip, make_png):
    data = make_zip({
        "1_a/empty.png": make_png(), "1_a/empty.txt": b"",
        "1_a/blank.png": make_png(), "1_a/blank.caption": b"\nsecond line",
        "1_a/face_1_2_3_4.png": make_png(), "1_a/face.txt": b"  ",
        "1_a/ok.png": make_png(), "1_a/ok.txt": b"\xef\xbb\xbfcat",
        "1_a/notes.txt": b"",  # no image reads it
    })  # fmt: skip
    response = service.upload("alice", data)
    assert response.status_code == 422
    assert sorted(_member_locs(response)) == ["1_a/blank.caption", "1_a/empty.txt", "1_a/face.txt"]
    assert "caption is empty" in response.text and "blank first line" in response.text


def test_face_crop_captions_count_as_captions(service, make_zip, make_png):
    data = make_zip({"1_a/h_1_2_3_4.png": make_png(), "1_a/h.txt": b"face"})
    response = service.upload("alice", data)
    assert response.status_code == 201, response.text
    assert not any("no caption" in w["message"] for w in response.json()["warnings"])
