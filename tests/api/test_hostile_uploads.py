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
import os
import stat
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, settings
from hypothesis import strategies as st

from core.datasets.archive import MAX_REPEATS
from core.datasets.service import create_dataset
from core.db import Database, Dataset, User
from core.errors import InsufficientStorage, InvalidInput, TooLarge
from tests.api.hostile_archives import ESCAPES, PNG, TWISTS, Member, archives, build_zip
from tests.conftest import png_bytes, zip_bytes

CRASHERS = Path(__file__).parent / "crashers"
FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


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
