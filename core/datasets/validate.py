"""Decodes every image once (Pillow, under a pixel limit) and checks captions: UTF-8, and
none that an image reads is empty or starts with a blank line (sd-scripts stops on an empty
caption file; ``trainer.data.caption_files``)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from core.datasets.archive import CAPTION_EXTENSIONS, ExtractionPlan, UploadWarning
from core.errors import InvalidInput, Problem
from trainer.data.caption_files import caption_file, caption_problem
from trainer.data.folders import FolderSummary, parse_folder_name


@dataclass(frozen=True)
class DatasetSummary:
    image_count: int
    caption_count: int
    folders: tuple[FolderSummary, ...]
    warnings: tuple[UploadWarning, ...]


def check_image(path: Path, max_pixels: int) -> str | None:
    """Why the image can't be used, or None. Decodes it fully: truncated files fail here."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    return f"{width}x{height} exceeds the limit of {max_pixels} pixels"
                image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return f"too many pixels: {exc}"
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...)
        return f"not a readable image: {exc}"
    return None


def check_caption(path: Path) -> str | None:
    try:
        path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return f"caption is not UTF-8 ({exc.reason} at byte {exc.start})"
    return None


def validate_extracted(root: Path, plan: ExtractionPlan, *, max_pixels: int) -> DatasetSummary:
    problems: list[Problem] = []
    images: dict[str, list[Path]] = {}
    captions: set[Path] = set()
    members: dict[Path, str] = {}
    for planned in plan.files:
        path = root / planned.target
        members[path] = planned.info.filename
        check = check_image if planned.kind == "image" else None
        reason = check(path, max_pixels) if check else check_caption(path)
        if reason:
            problems.append(Problem(("body", "file", planned.info.filename), reason, "bad_file"))
        elif planned.kind == "image":
            images.setdefault(planned.target.parts[0], []).append(path)
        else:
            captions.add(path)
    problems += _read_caption_problems(images, captions, members)
    if problems:
        raise InvalidInput(problems)
    if not images:
        raise InvalidInput(
            [Problem(("body", "file"), "no images (png, jpg, jpeg, webp, bmp) in the zip")]
        )
    return _summarise(images, captions, plan.warnings)


def _read_caption_problems(
    images: dict[str, list[Path]], captions: set[Path], members: dict[Path, str]
) -> list[Problem]:
    """Each caption file an image would read (with either caption extension: the job picks
    one later) that sd-scripts would stop on or train as an empty caption."""
    problems: list[Problem] = []
    checked: set[Path] = set()
    for paths in images.values():
        for image in paths:
            for extension in CAPTION_EXTENSIONS:
                path = caption_file(image, extension)
                if path is None or path in checked or path not in captions:
                    continue
                checked.add(path)
                if reason := caption_problem(path.read_bytes()):
                    problem = Problem(
                        ("body", "file", members[path]), f"caption {reason}", "bad_file"
                    )
                    problems.append(problem)
    return problems


def _read_captions(image: Path) -> set[Path]:
    """The caption files ``image`` would read, one per caption extension."""
    found = (caption_file(image, extension) for extension in CAPTION_EXTENSIONS)
    return {path for path in found if path is not None}


def _summarise(
    images: dict[str, list[Path]], captions: set[Path], plan_warnings: tuple[UploadWarning, ...]
) -> DatasetSummary:
    folders = []
    for name in sorted(images):
        parsed = parse_folder_name(name)
        folders.append(FolderSummary(name, parsed[0] if parsed else 1, len(images[name])))
    all_images = [p for paths in images.values() for p in paths]
    read = {image: _read_captions(image) for image in all_images}
    uncaptioned = [p for p in all_images if not read[p]]
    notes = list(plan_warnings)
    if uncaptioned:
        example = f"{uncaptioned[0].parent.name}/{uncaptioned[0].name}"
        notes.append(
            UploadWarning(
                "captions",
                f"{len(uncaptioned)} image(s) have no caption file; the trainer uses the "
                f"folder's name as their caption (e.g. {example})",
            )
        )
    used = set().union(*read.values())
    orphans = [p for p in captions if p not in used]
    if orphans:
        message = f"{len(orphans)} caption(s) have no image (e.g. {orphans[0].name})"
        notes.append(UploadWarning("captions", message))
    return DatasetSummary(len(all_images), len(captions), tuple(folders), tuple(notes))
