"""Decodes every image once (Pillow, under a pixel limit) and checks captions are UTF-8."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from core.datasets.archive import ExtractionPlan
from core.errors import InvalidInput, Problem
from trainer.data.folders import FolderSummary, parse_folder_name


@dataclass(frozen=True)
class DatasetSummary:
    image_count: int
    caption_count: int
    folders: tuple[FolderSummary, ...]
    warnings: tuple[str, ...]


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
    for planned in plan.files:
        path = root / planned.target
        check = check_image if planned.kind == "image" else None
        reason = check(path, max_pixels) if check else check_caption(path)
        if reason:
            problems.append(Problem(("body", "file", planned.info.filename), reason, "bad_file"))
        elif planned.kind == "image":
            images.setdefault(planned.target.parts[0], []).append(path)
        else:
            captions.add(path)
    if problems:
        raise InvalidInput(problems)
    if not images:
        raise InvalidInput(
            [Problem(("body", "file"), "no images (png, jpg, jpeg, webp, bmp) in the zip")]
        )
    return _summarise(images, captions, plan.warnings)


def _summarise(
    images: dict[str, list[Path]], captions: set[Path], plan_warnings: tuple[str, ...]
) -> DatasetSummary:
    folders = []
    for name in sorted(images):
        parsed = parse_folder_name(name)
        folders.append(FolderSummary(name, parsed[0] if parsed else 1, len(images[name])))
    all_images = [p for paths in images.values() for p in paths]
    captioned = {p.with_suffix("") for p in captions}
    uncaptioned = [p for p in all_images if p.with_suffix("") not in captioned]
    notes = list(plan_warnings)
    if uncaptioned:
        notes.append(
            f"{len(uncaptioned)} image(s) have no caption file; the trainer uses the folder's "
            f"name as their caption (e.g. {uncaptioned[0].parent.name}/{uncaptioned[0].name})"
        )
    image_stems = {p.with_suffix("") for p in all_images}
    orphans = [p for p in captions if p.with_suffix("") not in image_stems]
    if orphans:
        notes.append(f"{len(orphans)} caption(s) have no image (e.g. {orphans[0].name})")
    return DatasetSummary(len(all_images), len(captions), tuple(folders), tuple(notes))
