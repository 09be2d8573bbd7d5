"""Safe zip extraction: every member is checked from the central directory before any byte
is written, and again while it is written (a lying header can't inflate past its size)."""

from __future__ import annotations

import errno
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.errors import InsufficientStorage, InvalidInput, Problem
from trainer.data.folders import IMAGE_EXTENSIONS, parse_folder_name

CAPTION_EXTENSIONS = (".txt", ".caption")
ARCHIVE_EXTENSIONS = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst", ".lz4")
JUNK = re.compile(r"(^|/)(__MACOSX/|\._[^/]*$|\.DS_Store$|Thumbs\.db$|desktop\.ini$)")
BAD_CHARS = re.compile(r"[\x00-\x1f\x7f]")
CHUNK = 1024 * 1024
# Tiny members compress absurdly well (a blank caption); the ratio rule starts above this.
RATIO_MIN_BYTES = 1024 * 1024
NAME_MAX_BYTES = 255  # one file or folder name, on every filesystem we run on
# Repeats, from a folder's "<N>_" or the form field: the plan lists every image N times.
MAX_REPEATS = 10_000


@dataclass(frozen=True)
class Limits:
    max_members: int
    max_ratio: float
    max_total_bytes: int


@dataclass(frozen=True)
class PlannedFile:
    info: zipfile.ZipInfo
    target: PurePosixPath  # "<repeats>_<name>/<file>" inside the dataset folder
    kind: str  # "image" | "caption"


@dataclass(frozen=True)
class UploadWarning:
    """What the upload assumed or skipped, under the part of the upload it is about
    (``folders``, ``file``, ``captions``): the API's ``{field, message}``."""

    field: str
    message: str


@dataclass(frozen=True)
class ExtractionPlan:
    files: tuple[PlannedFile, ...]
    total_bytes: int
    warnings: tuple[UploadWarning, ...]


def _problem(member: str, msg: str) -> Problem:
    return Problem(("body", "file", member), msg, "zip_member")


def _check_member(info: zipfile.ZipInfo, limits: Limits) -> str | None:
    """Why this member is refused, or None."""
    name = info.filename.replace("\\", "/")
    if not PurePosixPath(name).parts and not name.endswith("/"):  # "", ".": no file to write
        return "empty member name"
    if BAD_CHARS.search(name):
        return "control characters in the member name"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in PurePosixPath(name).parts:
        return "path traversal ('..')"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic links are not allowed"
    if info.flag_bits & 0x1:
        return "encrypted members are not supported"
    if not info.is_dir() and PurePosixPath(name).suffix.lower() in ARCHIVE_EXTENSIONS:
        return "nested archives are not allowed; upload one flat zip"
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > RATIO_MIN_BYTES and ratio > limits.max_ratio:
        return f"decompression bomb: compression ratio {ratio:.0f} exceeds {limits.max_ratio:.0f}"
    return None


def _strip_wrapper(names: list[str]) -> int:
    """How many leading components to drop: 1 if a single top folder wraps concept folders."""
    parts = [PurePosixPath(n).parts for n in names]
    tops = {p[0] for p in parts}
    if len(tops) == 1 and all(len(p) >= 2 for p in parts) and any(len(p) >= 3 for p in parts):
        return 1
    return 0


def _target_folder(folder: str | None, repeats: int, default_name: str) -> str:
    if folder is None:
        return f"{repeats}_{default_name}"
    parsed = parse_folder_name(folder)
    if parsed is not None and parsed[0] >= 1:
        return folder
    return f"{repeats}_{folder}"


def _assumed_repeats(folder: str | None, target: str, repeats: int) -> UploadWarning | None:
    """What the upload assumed for a folder without Kohya's ``<repeats>_`` prefix, or None.

    sd-scripts ignores such a folder with a warning ("ignore directory without repeats":
    ``library/config_util.py: generate_dreambooth_subsets_config_by_subdirs``, which keeps
    only folders whose name parses as ``<N>_<class tokens>``). lorabox keeps the images with
    ``repeats`` (the upload's ``repeats`` field, 1 by default), but says so: a user who
    expected Kohya's behaviour, or forgot the prefix, sees it in the upload and the plan.
    """
    if folder == target:
        return None
    times = f"{repeats} repeat{'' if repeats == 1 else 's'}"
    if folder is None:
        where = f"images at the zip's root have no <repeats>_<name>/ folder ({target}/)"
    elif parse_folder_name(folder) is None:
        where = f"{folder}/ has no <repeats>_ prefix"
    else:
        where = f"{folder}/ asks for 0 repeats"
    return UploadWarning("folders", f"{where}: using {times}")


def plan_extraction(
    zf: zipfile.ZipFile, limits: Limits, *, repeats: int, default_name: str
) -> ExtractionPlan:
    infos = zf.infolist()
    problems: list[Problem] = []
    if len(infos) > limits.max_members:
        problems.append(
            _problem(infos[limits.max_members].filename, f"more than {limits.max_members} members")
        )
        raise InvalidInput(problems)
    warnings: list[UploadWarning] = []
    kept: list[zipfile.ZipInfo] = []
    total = 0
    for info in infos:
        reason = _check_member(info, limits)
        if reason:
            problems.append(_problem(info.filename, reason))
            continue
        if info.is_dir() or JUNK.search(info.filename.replace("\\", "/")):
            continue
        total += info.file_size
        if total > limits.max_total_bytes:
            problems.append(
                _problem(info.filename, f"archive expands past {limits.max_total_bytes} bytes")
            )
            break
        kept.append(info)
    if problems:
        raise InvalidInput(problems)
    return _layout(kept, repeats=repeats, default_name=default_name, warnings=warnings)


def _layout(
    kept: list[zipfile.ZipInfo],
    *,
    repeats: int,
    default_name: str,
    warnings: list[UploadWarning],
) -> ExtractionPlan:
    names = [i.filename.replace("\\", "/").strip("/") for i in kept]
    drop = _strip_wrapper(names)
    problems: list[Problem] = []
    files: list[PlannedFile] = []
    seen: set[PurePosixPath] = set()
    skipped: list[str] = []
    for info, name in zip(kept, names, strict=True):
        parts = PurePosixPath(name).parts[drop:]
        if len(parts) > 2:
            problems.append(_problem(info.filename, "folders nest too deep: use <repeats>_<name>/"))
            continue
        suffix = PurePosixPath(parts[-1]).suffix.lower()
        kind = (
            "image"
            if suffix in IMAGE_EXTENSIONS
            else "caption"
            if suffix in CAPTION_EXTENSIONS
            else None
        )
        if kind is None:
            skipped.append(info.filename)
            continue
        source = parts[0] if len(parts) == 2 else None
        folder = _target_folder(source, repeats, default_name)
        assumed = _assumed_repeats(source, folder, repeats)
        if kind == "image" and assumed is not None and assumed not in warnings:
            warnings.append(assumed)
        target = PurePosixPath(folder, parts[-1])
        if any(len(part.encode()) > NAME_MAX_BYTES for part in target.parts):
            problems.append(_problem(info.filename, f"a name is over {NAME_MAX_BYTES} bytes"))
            continue
        if (parse_folder_name(folder) or (1, ""))[0] > MAX_REPEATS:
            problems.append(_problem(info.filename, f"folder repeats over {MAX_REPEATS}"))
            continue
        if target in seen:
            problems.append(_problem(info.filename, f"two members would both become {target}"))
            continue
        seen.add(target)
        files.append(PlannedFile(info, target, kind))
    if problems:
        raise InvalidInput(problems)
    if skipped:
        shown = ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        message = f"{len(skipped)} file(s) that are neither images nor captions skipped: {shown}"
        warnings.append(UploadWarning("file", message))
    total = sum(f.info.file_size for f in files)
    return ExtractionPlan(tuple(files), total, tuple(warnings))


def extract(zf: zipfile.ZipFile, plan: ExtractionPlan, root: Path) -> None:
    """Writes the planned files under ``root`` only, counting bytes against each header."""
    root_resolved = root.resolve()
    for planned in plan.files:
        dest = (root / planned.target).resolve()
        if not dest.is_relative_to(root_resolved):  # belt and braces after the name checks
            raise InvalidInput([_problem(planned.info.filename, "would be written outside")])
        dest.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        try:
            with zf.open(planned.info) as src, dest.open("xb") as out:
                while chunk := src.read(CHUNK):
                    written += len(chunk)
                    if written > planned.info.file_size:
                        raise InvalidInput(
                            [
                                _problem(
                                    planned.info.filename, "decompression bomb: size header lies"
                                )
                            ]
                        )
                    out.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise InvalidInput([_problem(planned.info.filename, f"corrupt member: {exc}")]) from exc
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise InsufficientStorage("the disk filled up while extracting") from exc
            raise
