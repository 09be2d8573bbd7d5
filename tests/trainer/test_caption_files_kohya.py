"""Caption files as sd-scripts reads them, with lorabox's earlier stop.

Source: sd-scripts ``library/train_util.py: DreamBoothDataset.__init__.read_caption`` (the
same at kohya_ss v24.1.7's ``b8896aad`` and at main ``48d368fa``): ``<image stem><ext>``,
then the stem without its last four ``_``-parts (face-crop names); ``f.readlines()``,
``assert len(lines) > 0``, ``lines[0].strip()``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from trainer.data.caption_files import caption_candidates, caption_problem, first_line
from trainer.data.folders import scan_dataset
from trainer.errors import InvalidDatasetError


def dataset(tmp_path: Path, files: dict[str, bytes], images: list[str]) -> Path:
    folder = tmp_path / "2_cls tok"
    folder.mkdir()
    for name in images:
        Image.new("RGB", (64, 64)).save(folder / name)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return tmp_path


def captions(root: Path) -> dict[str, str]:
    return {r.path.name: r.caption for r in scan_dataset(root, ".txt").images}


def test_face_crop_images_fall_back_to_the_name_without_its_last_four_parts(tmp_path):
    # h_1_2_3_4.png: no h_1_2_3_4.txt, so h.txt; a name with fewer parts has no fallback.
    root = dataset(tmp_path, {"h.txt": b"face", "a_b.txt": b"own"},
                   ["h_1_2_3_4.png", "a_b.png", "x_1_2.png"])  # fmt: skip
    assert captions(root) == {"h_1_2_3_4.png": "face", "a_b.png": "own", "x_1_2.png": "cls tok"}
    image = Path("d/h_1_2_3_4.png")
    assert caption_candidates(image, ".txt") == (Path("d/h_1_2_3_4.txt"), Path("d/h.txt"))


def test_the_images_own_caption_comes_before_the_face_crop_one(tmp_path):
    root = dataset(tmp_path, {"h.txt": b"face", "h_1_2_3_4.txt": b"own"}, ["h_1_2_3_4.png"])
    assert captions(root) == {"h_1_2_3_4.png": "own"}


def test_only_the_first_line_is_read_and_a_bom_is_removed(tmp_path):
    root = dataset(tmp_path, {"a.txt": b"\xef\xbb\xbfcat, dog  \r\nsecond line"}, ["a.png"])
    assert captions(root) == {"a.png": "cat, dog"}
    # Lines end where Python's text mode ends them (\n, \r\n, \r), not at \x85 or \u2028.
    assert first_line("a\u2028b\rc") == "a\u2028b"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"\xef\xbb\xbf", "empty"),
        (b"\n", "blank first line"),
        (b"   \nsecond", "blank first line"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_an_empty_or_blank_caption_stops_the_scan_naming_the_file(tmp_path, data, words):
    root = dataset(tmp_path, {"a.txt": data}, ["a.png"])
    with pytest.raises(InvalidDatasetError, match=f"caption 2_cls tok/a.txt .*{words}"):
        scan_dataset(root, ".txt")
    assert words in (caption_problem(data) or "")


def test_a_caption_that_no_image_reads_does_not_matter(tmp_path):
    root = dataset(tmp_path, {"notes.txt": b""}, ["a.png"])
    assert captions(root) == {"a.png": "cls tok"}
