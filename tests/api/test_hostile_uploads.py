"""Hypothesis fuzz of the dataset upload path with hostile zips: hostile member names
(traversal, absolute, unicode, control characters, too long, empty), links, duplicates, lying
sizes, corrupt central directories, non-images named .png, truncated images, captions that are
not UTF-8 or full of NULs and BOMs.

Whatever the archive, the upload is accepted or refused with a reason naming a field (never a
crash, never a 5xx); nothing is written outside the new dataset's own folder; a refused upload
leaves nothing behind. The service function is fuzzed hard (fast, no HTTP), the endpoint
lightly; every input that ever failed is kept in ``crashers/`` and replayed by both.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import traceback
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, settings
from hypothesis import strategies as st

from api.datasets.archive import MAX_REPEATS
from api.datasets.service import create_dataset
from api.db import Database, Dataset, User
from api.exceptions import InsufficientStorage, InvalidInput, TooLarge
from tests.conftest import png_bytes, zip_bytes

CRASHERS = Path(__file__).parent / "crashers"
# Absolute member names the fuzz uses: outside the watched tree, so looked at one by one.
ESCAPES = (Path("/lorabox-fuzz-escape.png"), Path("/tmp/lorabox-fuzz-escape.txt"))
FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --- contents ------------------------------------------------------------------------------


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 8), (10, 200, 30)).save(buf, "JPEG")
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A real PNG whose header claims another size (a pixel bomb, or a lie)."""
    raw = bytearray(png_bytes(8, 8))
    ihdr = raw.index(b"IHDR")
    raw[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(raw[ihdr : ihdr + 17]))
    raw[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(raw)


PNG, JPEG = png_bytes(8, 8), _jpeg()
CONTENTS = [
    PNG,
    JPEG,
    PNG[: len(PNG) // 2],  # truncated
    JPEG[: len(JPEG) - 10],
    PNG[:8],  # a signature and nothing else
    _png_claiming(100_000, 100_000),  # a pixel bomb
    _png_claiming(0, 0),
    b"",
    b"not an image, named .png",
    b"a photo of a cat",
    b"\xef\xbb\xbfa caption after a BOM",
    b"\xff\xfeu\x00t\x00f\x00-\x001\x006\x00",  # UTF-16
    b"caf\xe9 (latin-1)",
    b"nul\x00bytes\x00inside",
    b"\xed\xa0\x80 a surrogate as UTF-8",
    b"x" * 300_000,  # one very long line
    b"PK\x03\x04 a zip inside",
]
contents = st.sampled_from(CONTENTS) | st.binary(max_size=64)


# --- member names --------------------------------------------------------------------------

# Names one hostile idea at a time: a single bad member is refused before the layout is looked
# at, so each archive is plausible members plus a twist or two. Hypothesis draws the first
# entries more often: names a dataset may well carry come first, the ones refused outright last.
TWISTS = [
    "日本_語/画像.png", "😀/😀.png", "1_a/" + "ü" * 100 + ".png", "1_Cat/a.png", "cat/a.png",
    "١٢_arabic/a.png", "²_cat/sup.png", "0_zero/a.png", "-1_neg/a.png", " 2_space /a.png",
    "99999999999999999999999_many/a.png", "1_a\\sub\\back.png", "./1_a/dot.png", "1_a/./dot.png",
    "1_a//double.png", "~/home.png", "con/aux.png", ".../a.png", "1_a/UPPER.PNG", "1_a/a.jpeg",
    "1_a/a.webp", "1_a/a.bmp", "1_a/a.caption", "1_a/a.md", "1_a/a.png ", "1_a/a.txt.",
    "1_a/.png", "1_a/.hidden.png", "1_a/._junk.png", "__MACOSX/1_a/a.png", "1_a/.DS_Store",
    "1_a/Thumbs.db", "1_a/", "1_a", "1_a/a.png/", "./", "1_a/a.png/b.png", "a/b/c/deep.png",
    "wrap/1_a/x/deep.png", "1_" + "d" * 300 + "/long.png", "1_a/" + "n" * 300 + ".png",
    "", ".", "..", "/", "1_a/a.zip", "1_a/a.tar.gz", "1_\x01/ctl.png", "1_a/nul\x00.png",
    "1_a/new\nline.png", "1_a/del\x7f.png", "../escape.png", "../../escape.txt",
    "1_a/../../escape.png", "1_a/../b.png", "..\\evil.png", str(ESCAPES[0]), str(ESCAPES[1]),
    "C:/drive.png", "C:\\drive.png", "\\\\server\\share\\x.png",
]  # fmt: skip
PLAIN = ["1_cat/a.png", "1_cat/a.txt", "1_cat/b.jpg", "1_cat/b.txt", "2_dog/c.png", "c.png"]
names = st.sampled_from(TWISTS) | st.text(max_size=12).map(lambda t: f"1_a/{t}.png")


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes
    compression: int = zipfile.ZIP_DEFLATED
    symlink: bool = False


compressions = st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2])
good_contents = st.sampled_from([PNG, JPEG, b"a cat", b"\xef\xbb\xbfa dog, after a BOM"])
plain_members = st.builds(Member, st.sampled_from(PLAIN), good_contents, compressions)
TWIST_KINDS = ["name", "content", "link", "duplicate", "damage"]
CONTENT_NAMES = ["1_cat/x.png", "1_cat/x.txt", "2_dog/y.jpg", "2_dog/y.caption", "z.webp"]


def build_zip(entries: list[Member]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as zf:
        warnings.simplefilter("ignore")  # duplicate names are the point
        for m in entries:
            info = zipfile.ZipInfo(m.name)
            info.compress_type = m.compression
            if m.symlink:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, m.data)
    return buf.getvalue()


# --- archive-level damage ------------------------------------------------------------------


def _central_entries(raw: bytes) -> list[int]:
    """Offsets of the central-directory file headers."""
    found, start = [], 0
    while (i := raw.find(b"PK\x01\x02", start)) != -1:
        found.append(i)
        start = i + 4
    return found


def lie_about_size(raw: bytes, size: int) -> bytes:
    """Every central-directory entry declares ``size`` uncompressed bytes."""
    out = bytearray(raw)
    for cd in _central_entries(raw):
        out[cd + 24 : cd + 28] = struct.pack("<I", size)
    return bytes(out)


def invalid_utf8_name(raw: bytes) -> bytes:
    """The first entry is flagged UTF-8 but its name starts with a byte UTF-8 never has."""
    out = bytearray(raw)
    for cd in _central_entries(raw)[:1]:
        out[cd + 9] |= 0x08  # general-purpose flag bit 11 (0x0800): the name is UTF-8
        if struct.unpack("<H", raw[cd + 28 : cd + 30])[0]:  # the name's length
            out[cd + 46] = 0xFF
    return bytes(out)


@st.composite
def damaged(draw: st.DrawFn, raw: bytes) -> bytes:
    how = draw(st.sampled_from(["truncate", "flip", "lie", "utf8", "wrap"]))
    if how == "truncate":
        return raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    if how == "flip":
        out = bytearray(raw)
        cd = raw.rfind(b"PK\x01\x02")
        low = cd if cd > 0 and draw(st.booleans()) else 0
        for _ in range(draw(st.integers(1, 4))):
            if len(out) > low:
                out[draw(st.integers(low, len(out) - 1))] = draw(st.integers(0, 255))
        return bytes(out)
    if how == "lie":
        return lie_about_size(raw, draw(st.sampled_from([0, 1, 3_000_000_000, 0xFFFFFFFF])))
    if how == "utf8":
        return invalid_utf8_name(raw)
    # "wrap": junk before and after (a self-extractor's stub, trailing garbage)
    return draw(st.binary(max_size=32)) + raw + draw(st.binary(max_size=32))


@st.composite
def archives(draw: st.DrawFn) -> bytes:
    """A plausible dataset with up to two twists, each one hostile idea (none: a clean one)."""
    entries = draw(st.lists(plain_members, max_size=4, unique_by=lambda m: m.name))
    twists = draw(st.lists(st.sampled_from(TWIST_KINDS), max_size=2))
    for twist in twists:
        if twist == "name":
            entries.append(Member(draw(names), draw(good_contents), draw(compressions)))
        elif twist == "content":
            entries.append(Member(draw(st.sampled_from(CONTENT_NAMES)), draw(contents)))
        elif twist == "link":
            entries.append(Member(draw(st.sampled_from(CONTENT_NAMES)), PNG, symlink=True))
        elif twist == "duplicate" and entries:
            entries.append(draw(st.sampled_from(entries)))
    raw = build_zip(draw(st.permutations(entries)))
    return draw(damaged(raw)) if "damage" in twists else raw


# --- what must hold ------------------------------------------------------------------------

DATABASE_FILES = ("lorabox.db", "broker.db")


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every path under ``root`` (but the SQLite files): its kind and size."""
    tree = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            if name.startswith(DATABASE_FILES):
                continue
            info = path.lstat()
            kind = "link" if stat.S_ISLNK(info.st_mode) else "dir" if path.is_dir() else "file"
            tree[str(path.relative_to(root))] = (kind, 0 if kind == "dir" else info.st_size)
    return tree


def assert_clean_outcome(
    before: dict[str, tuple[str, int]],
    after: dict[str, tuple[str, int]],
    home: Path,
    dataset_id: str | None,
) -> None:
    """A refusal changed nothing; an acceptance added only its own folder, of plain files."""
    assert not any(escape.exists() for escape in ESCAPES)
    removed = {p for p in before if p not in after or after[p] != before[p]}
    assert not removed, f"changed or removed: {sorted(removed)[:5]}"
    added = {p: v for p, v in after.items() if p not in before}
    if dataset_id is None:
        assert not added, f"a refused upload left {sorted(added)[:5]}"
        return
    own = str(Path(home.name, "datasets", dataset_id))
    outside = [p for p in added if p != own and not p.startswith(own + os.sep)]
    assert not outside, f"written outside the dataset's folder: {outside[:5]}"
    assert all(kind != "link" for kind, _ in added.values())


def assert_reason(problems: list[dict[str, Any]]) -> None:
    assert problems
    for problem in problems:
        assert problem["loc"] and problem["loc"][0] == "body", problem
        assert problem["msg"], problem


# --- the service function ------------------------------------------------------------------


@dataclass
class Uploads:
    """Calls ``create_dataset`` as the route does, on the service's home and database."""

    settings: Any
    db: Database
    inbox: Path

    def create(self, archive: bytes, *, name: str | None = None, repeats: int = 1) -> str:
        """The new dataset's id; raises what the service raises."""
        self.inbox.write_bytes(archive)
        with self.db.writing() as session:
            owner = session.scalar(sa.select(User).where(User.name == "alice"))
            assert owner is not None
            dataset = create_dataset(
                session,
                self.settings,
                owner=owner,
                zip_path=self.inbox,
                sha256=hashlib.sha256(archive).hexdigest(),
                name=name,
                filename="set.zip",
                repeats=repeats,
            )
            return dataset.id

    def count(self) -> int:
        with self.db.reading() as session:
            return int(session.scalar(sa.select(sa.func.count()).select_from(Dataset)) or 0)

    def folders(self, dataset_id: str) -> list[dict[str, Any]]:
        with self.db.reading() as session:
            dataset = session.get(Dataset, dataset_id)
            assert dataset is not None
            return list(dataset.folders)


@pytest.fixture
def uploads(service, tmp_path_factory):
    db = Database(service.settings.database_url)
    yield Uploads(service.settings, db, tmp_path_factory.mktemp("inbox") / "upload.zip")
    db.dispose()


def _tally(outcome: str) -> None:
    """Under Hypothesis, ``--hypothesis-show-statistics`` shows the mix of outcomes."""
    if currently_in_test_context():
        event(outcome)


def keep_if_failing(archive: bytes, exc: BaseException) -> None:
    """With LORABOX_KEEP_CRASHERS=1 the smallest archive failing in one place is written to
    crashers/new-*.zip (Hypothesis' shrunk example): rename it to say what it broke."""
    if not os.environ.get("LORABOX_KEEP_CRASHERS") or exc.__traceback__ is None:
        return
    where = traceback.extract_tb(exc.__traceback__)[-1]
    path = CRASHERS / f"new-{type(exc).__name__}-{Path(where.filename).stem}-{where.lineno}.zip"
    if not path.exists() or len(archive) < path.stat().st_size:
        path.write_bytes(archive)


def check_service(uploads: Uploads, archive: bytes, **form: Any) -> str | None:
    """Runs one upload through the service and checks every rule; the id when accepted."""
    try:
        return _check_service(uploads, archive, **form)
    except BaseException as exc:
        keep_if_failing(archive, exc)
        raise


def _check_service(uploads: Uploads, archive: bytes, **form: Any) -> str | None:
    home = uploads.settings.home
    watch = home.parent  # the home and around it: a traversal would land beside the home
    before, rows = snapshot(watch), uploads.count()
    dataset_id = None
    try:
        dataset_id = uploads.create(archive, **form)
    except InvalidInput as exc:
        assert_reason([{"loc": list(p.loc), "msg": p.msg} for p in exc.problems])
    except (InsufficientStorage, TooLarge) as exc:
        assert exc.message
    assert_clean_outcome(before, snapshot(watch), home, dataset_id)
    assert uploads.count() == rows + (dataset_id is not None)
    if dataset_id is not None:  # what a job's plan will multiply by: bounded
        assert all(1 <= f["repeats"] <= MAX_REPEATS for f in uploads.folders(dataset_id))
    _tally("accepted" if dataset_id else "refused")
    return dataset_id


def _crashers() -> list[Path]:
    return sorted(CRASHERS.glob("*.zip"))


@pytest.mark.parametrize("crasher", _crashers(), ids=lambda p: p.stem)
def test_kept_crashers_are_refused_or_accepted_cleanly_by_the_service(uploads, crasher):
    check_service(uploads, crasher.read_bytes())


@pytest.mark.parametrize("name", TWISTS, ids=lambda name: ascii(name)[:40])
def test_each_hostile_name_in_a_good_archive_is_handled_cleanly_by_the_service(uploads, name):
    """Every listed twist once for sure (the fuzz below combines them at random)."""
    good = [Member("1_cat/a.png", PNG), Member("1_cat/a.txt", b"a cat")]
    for data in (PNG, b"a caption"):
        check_service(uploads, build_zip([*good, Member(name, data)]))


@given(archive=archives())
@settings(FUZZ, max_examples=250)
def test_any_archive_is_accepted_or_refused_cleanly_by_the_service(uploads, archive):
    check_service(uploads, archive)


# --- the endpoint --------------------------------------------------------------------------


def check_endpoint(service: Any, archive: bytes, **form: str) -> None:
    try:
        _check_endpoint(service, archive, **form)
    except BaseException as exc:
        keep_if_failing(archive, exc)
        raise


def _check_endpoint(service: Any, archive: bytes, **form: str) -> None:
    home = service.settings.home
    before = snapshot(home.parent)
    response = service.upload("alice", archive, **form)
    _tally(f"HTTP {response.status_code}")
    assert response.status_code in (201, 413, 422, 507), response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    dataset_id = body["id"] if response.status_code == 201 else None
    if response.status_code == 422:
        assert_reason(body["detail"])
    elif dataset_id is None:
        assert isinstance(body["detail"], str) and body["detail"]
    assert_clean_outcome(before, snapshot(home.parent), home, dataset_id)


@pytest.mark.parametrize("crasher", _crashers(), ids=lambda p: p.stem)
def test_kept_crashers_get_a_4xx_or_201_from_the_endpoint(service, crasher):
    check_endpoint(service, crasher.read_bytes())


FORM_VALUES = st.sampled_from(["", "1", "0", "-1", "abc", "10001", "²", "1e3", " 5 ", "9" * 50])


@given(
    archive=archives(),
    name=st.text(max_size=30) | st.sampled_from(["../../x", "\x00", "a" * 500]),
    repeats=FORM_VALUES,
)
@settings(FUZZ, max_examples=60)
@example(archive=zip_bytes({"1_cat/a.png": PNG}), name="", repeats="")
def test_any_upload_gets_201_or_a_4xx_naming_the_reason(service, archive, name, repeats):
    check_endpoint(service, archive, name=name, repeats=repeats)


# --- the multipart body itself -------------------------------------------------------------

BOUNDARY = "hostileboundary"


def _part(headers: str, data: bytes) -> bytes:
    return f"--{BOUNDARY}\r\n{headers}\r\n\r\n".encode() + data + b"\r\n"


FILE_HEADERS = 'Content-Disposition: form-data; name="file"; filename="set.zip"'
GOOD = zip_bytes({"1_cat/a.png": PNG})
END = f"--{BOUNDARY}--\r\n".encode()
MULTIPART = {
    "no-boundary": ("multipart/form-data", _part(FILE_HEADERS, GOOD) + END),
    "other-boundary": ("multipart/form-data; boundary=nope", _part(FILE_HEADERS, GOOD) + END),
    "not-multipart": ("application/zip", GOOD),
    "two-files": (None, _part(FILE_HEADERS, GOOD) * 2 + END),
    "file-without-filename": (None, _part('Content-Disposition: form-data; name="file"', GOOD)),
    "cut-short": (None, _part(FILE_HEADERS, GOOD)[:-20]),
    "no-parts": (None, END),
    "empty-body": (None, b""),
    "garbage": (None, b"\x00\xff" * 100),
    "name-not-utf8": (None, _part('Content-Disposition: form-data; name="name"', b"\xff\xfe")
                      + _part(FILE_HEADERS, GOOD) + END),
    "field-too-long": (None, _part('Content-Disposition: form-data; name="name"', b"n" * 70_000)
                       + _part(FILE_HEADERS, GOOD) + END),
    "too-many-fields": (None, b"".join(_part(f'Content-Disposition: form-data; name="f{i}"', b"x")
                                       for i in range(20)) + _part(FILE_HEADERS, GOOD) + END),
    "huge-part-header": (None, f"--{BOUNDARY}\r\nX-Pad: ".encode() + b"a" * 200_000 + b"\r\n"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MULTIPART))
def test_malformed_multipart_is_a_4xx_naming_the_reason_and_leaves_nothing(service, case):
    content_type, body = MULTIPART[case]
    home = service.settings.home
    before = snapshot(home.parent)
    headers = service.as_("alice") | {
        "content-type": content_type or f"multipart/form-data; boundary={BOUNDARY}"
    }
    response = service.client.post("/v1/datasets", content=body, headers=headers)
    assert response.status_code == 422, response.text
    assert_reason(response.json()["detail"])
    assert_clean_outcome(before, snapshot(home.parent), home, None)


def test_a_dataset_name_loses_its_control_characters(service):
    """Crasher (PostgreSQL): a NUL in the name failed the INSERT, a 500."""
    response = service.upload("alice", GOOD, name="a\x00b\x1fc\x7f")
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "abc"


def test_folder_repeats_past_the_limit_are_refused_before_a_job_plans_them(service, job_body):
    """Crasher: "99999999999999999999999_many/" uploaded fine, then every submission on it was
    a 500 (the plan lists each image N times: OverflowError, or memory for a large N)."""
    data = (CRASHERS / "folder-repeats-overflow-the-job-plan.zip").read_bytes()
    response = service.upload("alice", data)
    assert response.status_code == 422, response.text
    assert any("repeats over 10000" in p["msg"] for p in response.json()["detail"])
    edge = service.upload("alice", zip_bytes({"10000_edge/a.png": png_bytes()}))
    assert edge.status_code == 201, edge.text
    body = job_body | {"dataset_id": edge.json()["id"]}
    plan = service.client.post("/v1/jobs/validate", headers=service.as_("alice"), json=body)
    assert plan.status_code == 200, plan.text
