"""Which caption file an image reads, and its text, as sd-scripts reads them
(``library/train_util.py: DreamBoothDataset.__init__.read_caption``, the same at kohya_ss
v24.1.7's commit and at sd-scripts main).

* The caption of ``photo.png`` is ``photo<ext>``; if that file does not exist and the name
  has at least five ``_``-separated parts, the name without its last four
  (``h_1_2_3_4.png`` reads ``h.txt``: the face-crop naming of old sd-scripts tools). The
  first of the two that exists is read. sd-scripts splits the whole path, so a name with
  fewer underscores would make it look for a caption outside the image's folder; here
  only the image's own name is split, which gives the same file whenever sd-scripts
  stays inside the folder.
* UTF-8, first line only (lines end at ``\\n``, ``\\r\\n`` or ``\\r``, as Python's text
  mode reads them), stripped of whitespace.
* An empty file is an error (sd-scripts asserts), and so is a first line that is blank,
  which sd-scripts would train as an empty caption: both are found at upload already.
* A UTF-8 byte-order mark is removed. sd-scripts keeps it as part of the first tag
  (``"\\ufeffcat"``), a defect (docs/kohya-semantics.md, "Where lorabox differs").

Torch-free: the API checks uploads with it.
"""

from __future__ import annotations

import re
from pathlib import Path

from trainer.errors import InvalidDatasetError

_LINE_END = re.compile(r"\r\n|\r|\n")
FACE_CROP_PARTS = 5  # <name>_<4 numbers>: sd-scripts' face-crop file names


def caption_candidates(image: Path, extension: str) -> tuple[Path, ...]:
    """The files that may hold ``image``'s caption, in the order sd-scripts tries them."""
    own = image.with_name(image.stem + extension)
    parts = image.stem.split("_")
    if len(parts) < FACE_CROP_PARTS:
        return (own,)
    return own, image.with_name("_".join(parts[:-4]) + extension)


def caption_file(image: Path, extension: str) -> Path | None:
    """The caption file sd-scripts reads for ``image``, or None (then the class tokens)."""
    return next((p for p in caption_candidates(image, extension) if p.is_file()), None)


def caption_problem(data: bytes) -> str | None:
    """Why ``data`` can't be a caption file's content ("is empty ..."), or None."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return f"is not UTF-8 ({exc.reason} at byte {exc.start}); re-save it as UTF-8"
    if text == "":
        return "is empty (sd-scripts stops on it): write the caption or delete the file"
    if not first_line(text):
        return (
            "has a blank first line (only the first line is read): "
            "put the caption on the first line"
        )
    return None


def first_line(text: str) -> str:
    """The first line of ``text``, stripped, as ``f.readlines()[0].strip()`` gives it."""
    return _LINE_END.split(text, maxsplit=1)[0].strip()


def read_caption_file(path: Path, shown: str) -> str:
    """The caption in ``path``; InvalidDatasetError naming it as ``shown`` when unusable."""
    data = path.read_bytes()
    problem = caption_problem(data)
    if problem:
        raise InvalidDatasetError(f"{shown} {problem}")
    return first_line(data.decode("utf-8-sig"))
