"""Kohya's dataset folder convention: ``<repeats>_<name>/`` holding images and captions.

Torch-free, so the API can validate uploads and plan jobs with it.
(sd-scripts ``library/config_util.py: generate_dreambooth_subsets_config_by_subdirs``.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from trainer.data.caption_files import caption_candidates, caption_file, read_caption_file
from trainer.errors import InvalidDatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    caption: str
    size: tuple[int, int]  # (width, height) of the file, before any resize
    folder: str
    repeats: int
    is_reg: bool = False
    has_alpha: bool = False  # an alpha channel or a transparent colour: masked_loss reads it


@dataclass(frozen=True)
class FolderSummary:
    name: str
    repeats: int
    image_count: int


@dataclass(frozen=True)
class DatasetScan:
    images: tuple[ImageRecord, ...]
    folders: tuple[FolderSummary, ...]
    warnings: tuple[str, ...]
    # SHA-256 over each image and caption file the scan read (relative name, size, mtime):
    # the same fingerprint means the same scan, so a plan made from it still holds.
    fingerprint: str = ""

    @property
    def images_x_repeats(self) -> int:
        return sum(record.repeats for record in self.images)


def parse_folder_name(name: str) -> tuple[int, str] | None:
    """``"10_cat toy"`` -> ``(10, "cat toy")``; None when not ``<int>_...``."""
    head, sep, rest = name.partition("_")
    if not sep or not head.isdecimal():  # isdigit() admits "²", which int() refuses
        return None
    return int(head), rest


def read_caption(image: Path, extension: str, class_tokens: str) -> tuple[str, str | None]:
    """The image's caption (``trainer.data.caption_files``), or the folder's class tokens
    with a warning when it has no caption file."""
    path = caption_file(image, extension)
    if path is None:
        warning = (
            f"{image.parent.name}/{image.name}: no {extension} caption, using the folder's class"
        )
        return class_tokens, warning
    return read_caption_file(path, f"caption {image.parent.name}/{path.name}"), None


def image_size(path: Path) -> tuple[int, int]:
    """Read the size from the header, failing with the file's name."""
    return image_header(path)[0]


def image_header(path: Path) -> tuple[tuple[int, int], bool]:
    """(width, height) and whether the image has alpha, from the header alone: what
    ``Image.convert("RGBA")`` would give a non-opaque alpha channel from (sd-scripts
    ``load_image(path, alpha=True)``)."""
    try:
        with Image.open(path) as image:
            alpha = bool({"A", "a"} & set(image.getbands())) or "transparency" in image.info
            return image.size, alpha
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise InvalidDatasetError(
            f"image {path.parent.name}/{path.name} cannot be read: {exc}"
        ) from exc


def scan_dataset(root: Path, caption_extension: str, is_reg: bool = False) -> DatasetScan:
    """Every image of every ``<repeats>_<name>`` folder below ``root`` (non-recursive)."""
    if not root.is_dir():
        raise InvalidDatasetError(f"dataset folder {root.name!r} does not exist")
    records: list[ImageRecord] = []
    folders: list[FolderSummary] = []
    warnings: list[str] = []
    digest = hashlib.sha256()
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        parsed = parse_folder_name(folder.name)
        if parsed is None:
            warnings.append(
                f"folder {folder.name!r} ignored: its name must start with '<repeats>_'"
            )
            continue
        repeats, class_tokens = parsed
        if repeats < 1:
            warnings.append(f"folder {folder.name!r} ignored: repeats must be at least 1")
            continue
        images = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        for image in images:
            caption, warning = read_caption(image, caption_extension, class_tokens)
            if warning:
                warnings.append(warning)
            for path in (image, *caption_candidates(image, caption_extension)):
                _fingerprint(digest, root, path)
            size, alpha = image_header(image)
            records.append(
                ImageRecord(image, caption, size, folder.name, repeats, is_reg, has_alpha=alpha)
            )
        folders.append(FolderSummary(folder.name, repeats, len(images)))
    if not records:
        raise InvalidDatasetError(
            "no images found: put images (png, jpg, jpeg, webp, bmp) in folders named "
            "'<repeats>_<name>', e.g. '10_mycharacter/'"
        )
    return DatasetScan(tuple(records), tuple(folders), tuple(warnings), digest.hexdigest())


def _fingerprint(digest: hashlib._Hash, root: Path, path: Path) -> None:
    try:
        stat = path.stat()
        size, mtime = stat.st_size, stat.st_mtime_ns
    except FileNotFoundError:  # an image without its caption file
        size = mtime = -1
    digest.update(f"{path.relative_to(root)}\0{size}\0{mtime}\n".encode())


def balance_regularization(
    reg: tuple[ImageRecord, ...], images_x_repeats: int
) -> tuple[ImageRecord, ...]:
    """Regularization images registered until they match the training images.

    sd-scripts (``library/train_util.py: DreamBoothDataset.__init__``): a first pass
    registers each reg image with its folder's repeats until the repeat-weighted
    count reaches ``images_x_repeats``; later passes add one repeat to each
    registered image in turn. Images the first pass never reached are unused.
    """
    repeats: list[int] = []
    count = 0
    for record in reg:
        if count >= images_x_repeats:
            break
        repeats.append(record.repeats)
        count += record.repeats
    index = 0
    while repeats and count < images_x_repeats:
        repeats[index % len(repeats)] += 1
        count += 1
        index += 1
    return tuple(
        replace(record, repeats=n, is_reg=True) for record, n in zip(reg, repeats, strict=False)
    )
