"""Uploads: a good zip becomes a dataset; every unsafe or bad zip is a 422 naming the member,
and a rejected upload leaves nothing behind."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import pytest


def _leftovers(service) -> list[Path]:
    home = service.settings.home
    return list((home / "tmp").iterdir()) + list((home / "datasets").iterdir())


def _member_locs(response) -> list[str]:
    return [p["loc"][2] for p in response.json()["detail"] if len(p["loc"]) > 2]


def test_upload_returns_the_contract_shape_and_adds_repeats_to_bare_folders(
    service, good_dataset_zip
):
    response = service.upload("alice", good_dataset_zip, name="pets", repeats="5")
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) >= {"id", "name", "image_count", "caption_count", "folders", "size_bytes",
                         "sha256", "warnings"}  # fmt: skip
    assert body["name"] == "pets"
    assert (body["image_count"], body["caption_count"]) == (5, 5)
    assert body["folders"] == [
        {"name": "3_cat", "repeats": 3, "image_count": 4},
        {"name": "5_dog", "repeats": 5, "image_count": 1},
    ]
    folder = service.settings.datasets_dir / body["id"]
    assert sorted(p.name for p in folder.iterdir()) == ["3_cat", "5_dog"]
    assert list((service.settings.home / "tmp").iterdir()) == []


def test_a_single_wrapper_folder_is_stripped(service, make_zip, make_png):
    data = make_zip({"export/10_me/a.png": make_png(), "export/10_me/a.txt": b"me"})
    body = service.upload("alice", data).json()
    assert body["folders"] == [{"name": "10_me", "repeats": 10, "image_count": 1}]


def test_images_at_the_root_go_into_one_folder_named_after_the_dataset(service, make_zip, make_png):
    data = make_zip({"a.png": make_png(), "b.png": make_png(), "notes.md": b"x"})
    body = service.upload("alice", data, name="my style", repeats="2").json()
    assert body["folders"] == [{"name": "2_my style", "repeats": 2, "image_count": 2}]
    assert any("neither images nor captions" in w["message"] for w in body["warnings"])
    assert any("no caption" in w["message"] for w in body["warnings"])


def _evil(info: zipfile.ZipInfo, data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("1_ok/fine.txt", b"caption")
        zf.writestr(info, data)
    return buf.getvalue()


def _symlink() -> bytes:
    info = zipfile.ZipInfo("1_ok/link.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return _evil(info, b"/etc/passwd")


def _encrypted() -> bytes:
    raw = bytearray(_evil(zipfile.ZipInfo("1_ok/secret.png")))
    # Set the "encrypted" flag bit in both the local header and the central directory.
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        start = 0
        while (i := raw.find(sig, start)) != -1:
            off = i + (6 if sig == b"PK\x03\x04" else 8)
            raw[off] |= 0x1
            start = i + 4
    return bytes(raw)


@pytest.mark.parametrize(
    ("data", "member", "reason"),
    [
        (lambda: _evil(zipfile.ZipInfo("../../escape.png")), "../../escape.png", "traversal"),
        (lambda: _evil(zipfile.ZipInfo("1_ok/../../x.png")), "1_ok/../../x.png", "traversal"),
        (lambda: _evil(zipfile.ZipInfo("/etc/cron.d/x.png")), "/etc/cron.d/x.png", "absolute"),
        (lambda: _evil(zipfile.ZipInfo("C:/x.png")), "C:/x.png", "absolute"),
        (_symlink, "1_ok/link.png", "symbolic link"),
        (_encrypted, "1_ok/secret.png", "encrypted"),
        (lambda: _evil(zipfile.ZipInfo("1_ok/more.zip")), "1_ok/more.zip", "nested archive"),
        (lambda: _evil(zipfile.ZipInfo("1_ok/more.tar.gz")), "1_ok/more.tar.gz", "nested archive"),
    ],
    ids=[
        "traversal",
        "inner-traversal",
        "absolute",
        "drive",
        "symlink",
        "encrypted",
        "zip",
        "tar.gz",
    ],  # fmt: skip
)
def test_unsafe_members_are_refused_by_name(service, data, member, reason):
    response = service.upload("alice", data())
    assert response.status_code == 422, response.text
    assert member in _member_locs(response)
    assert any(reason in p["msg"] for p in response.json()["detail"])
    assert _leftovers(service) == []


def test_too_many_members_is_refused(service_with, make_zip, make_png):
    service = service_with(zip_max_members=3)
    data = make_zip({f"1_a/{i}.png": make_png() for i in range(5)})
    response = service.upload("alice", data)
    assert response.status_code == 422
    assert "1_a/3.png" in _member_locs(response)
    assert "more than 3 members" in response.text


def test_a_high_compression_ratio_is_a_bomb(service, make_zip, make_png):
    data = make_zip({"1_a/a.png": make_png(), "1_a/a.txt": b"\0" * (8 * 1024 * 1024)})
    response = service.upload("alice", data)
    assert response.status_code == 422
    assert "1_a/a.txt" in _member_locs(response)
    assert "decompression bomb" in response.text
    assert _leftovers(service) == []


def test_an_archive_expanding_past_the_total_limit_is_refused(service_with, make_zip, make_png):
    service = service_with(zip_max_total_bytes=200_000)
    big = bytes(range(256)) * 600  # ~150 kB, incompressible enough to pass the ratio rule
    data = make_zip({"1_a/a.png": make_png(), "1_a/a.txt": big, "1_a/b.txt": big})
    response = service.upload("alice", data)
    assert response.status_code == 422
    assert "1_a/b.txt" in _member_locs(response)


def test_a_lying_size_header_is_caught_while_extracting(service, make_png):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("1_a/a.png", make_png())
        zf.writestr("1_a/a.txt", b"0123456789" * 10)
    raw = bytearray(buf.getvalue())
    # Shrink the declared uncompressed size of a.txt in the central directory to 10 bytes.
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24 : cd + 28] = (10).to_bytes(4, "little")
    response = service.upload("alice", bytes(raw))
    assert response.status_code == 422
    assert "1_a/a.txt" in _member_locs(response)
    assert _leftovers(service) == []


def test_every_bad_image_and_caption_is_listed(service, make_zip, make_png):
    good = make_png()
    data = make_zip({
        "1_a/ok.png": good,
        "1_a/truncated.png": good[: len(good) // 2],
        "1_a/noise.jpg": b"not an image at all",
        "1_a/ok.txt": "caf\xe9".encode("latin-1"),
    })  # fmt: skip
    response = service.upload("alice", data)
    assert response.status_code == 422
    assert sorted(_member_locs(response)) == ["1_a/noise.jpg", "1_a/ok.txt", "1_a/truncated.png"]
    assert "UTF-8" in response.text
    assert _leftovers(service) == []


def test_an_image_over_the_pixel_limit_is_refused(service_with, make_zip, make_png):
    service = service_with(max_image_pixels=64 * 64)
    data = make_zip({"1_a/big.png": make_png(128, 128)})
    response = service.upload("alice", data)
    assert response.status_code == 422
    assert "exceeds the limit" in response.text


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({"1_a/x/deep.png": b"", "2_b/c.png": b""}, "nest too deep"),
        ({"1_a/x.png": b"", "a/1_a/x.png": b"", "b.png": b""}, "nest too deep"),
        ({"notes.md": b"no images"}, "no images"),
    ],
    ids=["deep", "mixed-deep", "no-images"],
)
def test_layout_problems_are_422(service, make_zip, make_png, files, fragment):
    files = {name: (make_png() if name.endswith(".png") else data) for name, data in files.items()}
    response = service.upload("alice", make_zip(files))
    assert response.status_code == 422
    assert fragment in response.text


def test_two_members_mapping_to_one_file_are_refused(service, make_zip, make_png):
    data = make_zip({"cat/a.png": make_png(), "1_cat/a.png": make_png()})
    response = service.upload("alice", data)
    assert response.status_code == 422
    assert "would both become" in response.text


def test_not_a_zip_and_a_missing_file_are_422(service):
    assert service.upload("alice", b"plain text").status_code == 422
    response = service.client.post(
        "/v1/datasets", headers=service.as_("alice"), data={"name": "x"}, files={"other": b"x"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file"]


@pytest.mark.parametrize("repeats", ["0", "-1", "many", "100001"])
def test_repeats_must_be_a_positive_integer(service, good_dataset_zip, repeats):
    response = service.upload("alice", good_dataset_zip, repeats=repeats)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "repeats"]


def test_an_upload_over_the_limit_is_413_and_leaves_nothing(service_with, make_zip, make_png):
    service = service_with(max_upload_bytes=10_000)
    data = make_zip({"1_a/a.png": make_png(), "1_a/a.txt": os.urandom(20_000)})
    assert len(data) > 10_000
    response = service.upload("alice", data)
    assert response.status_code == 413
    assert "detail" in response.json()
    assert _leftovers(service) == []


def test_datasets_are_private_to_their_owner_and_visible_to_admins(service, dataset_id):
    assert (
        service.client.get(f"/v1/datasets/{dataset_id}", headers=service.as_("bob")).status_code
        == 404
    )
    assert (
        service.client.get(f"/v1/datasets/{dataset_id}", headers=service.as_("admin")).status_code
        == 200
    )
    assert service.client.get("/v1/datasets", headers=service.as_("bob")).json() == {"items": []}
    mine = service.client.get("/v1/datasets", headers=service.as_("alice")).json()["items"]
    assert [d["id"] for d in mine] == [dataset_id]
    everyone = service.client.get("/v1/datasets?scope=all", headers=service.as_("admin")).json()
    assert [d["id"] for d in everyone["items"]] == [dataset_id]
    gone = service.client.delete(f"/v1/datasets/{dataset_id}", headers=service.as_("bob"))
    assert gone.status_code == 404


def test_deleting_a_dataset_removes_its_files(service, dataset_id):
    folder = service.settings.datasets_dir / dataset_id
    assert folder.is_dir()
    response = service.client.delete(f"/v1/datasets/{dataset_id}", headers=service.as_("alice"))
    assert response.status_code == 204
    assert not folder.exists()
    assert (
        service.client.get(f"/v1/datasets/{dataset_id}", headers=service.as_("alice")).status_code
        == 404
    )
