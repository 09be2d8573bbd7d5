"""A dataset folder without Kohya's ``<repeats>_`` prefix is kept with 1 repeat (sd-scripts
would ignore it), and both the upload and the job's plan say what was assumed."""

from __future__ import annotations

FOLDERS = "folders"


def _folder_warnings(body: dict) -> list[str]:
    return [w["message"] for w in body["warnings"] if w["field"] == FOLDERS]


def test_a_folder_without_repeats_is_one_repeat_and_the_upload_says_so(service, make_zip, make_png):
    data = make_zip({"cat/a.png": make_png(), "cat/a.txt": b"a cat", "cat/b.png": make_png(),
                     "3_dog/c.png": make_png(), "3_dog/c.txt": b"a dog"})  # fmt: skip
    response = service.upload("alice", data)
    assert response.status_code == 201, response.text
    body = response.json()
    assert {"name": "1_cat", "repeats": 1, "image_count": 2} in body["folders"]
    # one warning per folder, however many images it holds; none for the prefixed folder
    assert _folder_warnings(body) == ["cat/ has no <repeats>_ prefix: using 1 repeat"]
    again = service.client.get(f"/v1/datasets/{body['id']}", headers=service.as_("alice"))
    assert again.json()["warnings"] == body["warnings"]


def test_a_flat_zip_and_the_upload_repeats_field_are_named(service, make_zip, make_png):
    flat = service.upload("alice", make_zip({"a.png": make_png()}), name="flat", repeats="4")
    assert _folder_warnings(flat.json()) == [
        "images at the zip's root have no <repeats>_<name>/ folder (4_flat/): using 4 repeats"
    ]
    named = service.upload("alice", make_zip({"2_ok/a.png": make_png(), "2_ok/a.txt": b"ok"}))
    assert _folder_warnings(named.json()) == []


def test_the_jobs_plan_repeats_what_the_upload_assumed(service, job_body):
    # job_body's dataset (good_dataset_zip) has 3_cat/ and a bare dog/
    plan = service.client.post("/v1/jobs/validate", headers=service.as_("alice"), json=job_body)
    assert plan.status_code == 200, plan.text
    assert {"field": FOLDERS, "message": "dog/ has no <repeats>_ prefix: using 1 repeat"} in (
        plan.json()["warnings"]
    )
    job = service.submit("alice", job_body).json()
    assert _folder_warnings(job["plan"]) == ["dog/ has no <repeats>_ prefix: using 1 repeat"]
