"""The web dashboard end to end in headless Chromium (Debian's chromium + chromium-driver).

A job is submitted through the API; the browser signs in, watches the job's page reach
"succeeded" over SSE, finds the final LoRA first in its files, downloads it, reads each
sample's prompt and saves a screenshot. With the queue paused, the queue page shows two users'
jobs (the caller's marked, a colleague's not openable), why they wait and the worker's panel;
the waiting job's page shows where it stands instead of an empty chart, and is cancelled. The
console stays free of errors (the favicon is served). In CI a missing browser is a failure,
never a skip.
"""

from __future__ import annotations

import hashlib

import pytest

from tests.api.browser import wait as _wait

pytestmark = pytest.mark.slow


def _text(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, element_id).text)


def _sign_in(driver, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    _wait(lambda: driver.find_element(By.ID, "token").is_displayed(), 30, "the sign-in form")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()
    _wait(lambda: _text(driver, "who") == "alice", 30, "sign-in")


def _severe(driver) -> list[str]:
    """The console's errors (a failed load, a script error), but the sign-in probe's 401: the
    page asks GET /v1/me to learn whether the cookie still signs it in."""
    messages = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return [m for m in messages if not ("/v1/me " in m and "status of 401" in m)]


def test_the_dashboard_follows_a_job_to_succeeded_and_downloads_its_lora(
    browser, watch_stack, watch_job_body, tmp_path
):
    from selenium.webdriver.common.by import By

    params = dict(epoch=2, save_every_n_epochs=1, sample_every_n_epochs=1,
                  sample_prompts="a toy --w 64 --h 64 --s 2 --d 3")  # fmt: skip
    job = watch_stack.submit(watch_job_body(**params) | {"name": "browser"})
    _sign_in(browser, watch_stack.url, watch_stack.tokens["alice"])
    row = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, f'tr[data-job="{job["id"]}"]'),
                30, "the job in the list")  # fmt: skip
    # A job reads as its name, owner, base model and submission time, not a bare hex id.
    assert [c.text for c in row[0].find_elements(By.TAG_NAME, "td")][:3] == [
        "browser",
        "alice",
        "tiny-sdxl",
    ]
    browser.get(f"{watch_stack.url}/#/jobs/{job['id']}")
    _wait(lambda: _text(browser, "job-status") == "succeeded", 300, "succeeded")
    assert _text(browser, "job-title") == "browser"
    assert _text(browser, "job-meta").startswith("alice · tiny-sdxl · submitted ")
    assert _text(browser, "job-error") == ""
    assert "2 / 2" in _text(browser, "job-numbers")  # steps, from the stream
    assert browser.find_element(By.ID, "job-bar").get_attribute("style").endswith("100%;")
    _wait(lambda: browser.execute_script("return document.getElementById('chart').naturalWidth"),
          30, "the loss chart")  # fmt: skip
    assert not browser.find_element(By.ID, "job-waiting").is_displayed()
    # The final LoRA comes first and is marked; the epoch checkpoint follows it.
    listed = watch_stack.get(f"/v1/jobs/{job['id']}/artifacts").json()["items"]
    [final] = [a for a in listed if a["kind"] == "lora"]
    rows = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#artifacts tr"), 30, "files")
    assert rows[0].get_attribute("class") == "final" and "final LoRA" in rows[0].text
    assert [r.find_element(By.TAG_NAME, "a").text for r in rows][:2] == [
        final["name"],
        next(a["name"] for a in listed if a["kind"] == "checkpoint"),
    ]
    rows[0].find_element(By.TAG_NAME, "a").click()
    lora = browser.downloads / final["name"].rsplit("/", 1)[-1]
    _wait(lambda: lora.exists() and not list(browser.downloads.glob("*.crdownload")), 60,
          "the download")  # fmt: skip
    assert hashlib.sha256(lora.read_bytes()).hexdigest() == final["sha256"]
    # The gallery shows the trainer's real sample PNGs, one per epoch, decoded by the browser,
    # each captioned with its prompt (the options after " --" are not the prompt).
    gallery = "return [...document.querySelectorAll('#samples img')].map(i => i.naturalWidth)"
    _wait(lambda: browser.execute_script(gallery) == [64, 64], 60, "the two decoded samples")
    captions = browser.find_elements(By.CSS_SELECTOR, "#samples figcaption")
    assert [c.find_element(By.CLASS_NAME, "prompt").text for c in captions] == ["a toy"] * 2
    assert [c.find_element(By.TAG_NAME, "small").text for c in captions] == [
        "epoch 1 · step 1",
        "epoch 2 · step 2",
    ]
    assert browser.find_element(By.ID, "cancel").is_displayed() is False
    assert _severe(browser) == []
    browser.save_screenshot(str(tmp_path / "dashboard-job.png"))
    assert (tmp_path / "dashboard-job.png").stat().st_size > 10_000


def _bobs_job(watch_stack, watch_job_body, make_zip, make_png) -> dict:
    data = make_zip({"1_toy/b.png": make_png(64, 64, (90, 20, 200)), "1_toy/b.txt": b"a toy"})
    body = watch_job_body() | {"dataset_id": watch_stack.dataset(data, user="bob"),
                               "name": "bob-waits", "priority": "low"}  # fmt: skip
    return watch_stack.submit(body, user="bob")


def _icon_loads(driver) -> bool:
    """The page's icon and /favicon.ico both load and decode as images."""
    script = """const done = arguments[arguments.length - 1];
      const load = (src) => new Promise((ok) => {
        const img = new Image(); img.onload = () => ok(img.naturalWidth > 0);
        img.onerror = () => ok(false); img.src = src; });
      const link = document.querySelector("link[rel=icon]");
      Promise.all([load(link.href), load("/favicon.ico")]).then((r) => done(r.every(Boolean)));"""
    return bool(driver.execute_async_script(script))


def test_the_queue_page_shows_everyones_jobs_and_a_waiting_job_can_be_cancelled(
    browser, watch_stack, watch_job_body, make_zip, make_png
):
    from selenium.webdriver.common.by import By

    admin = watch_stack.as_("admin")
    watch_stack.client.post("/v1/queue/pause", headers=admin)
    theirs: dict = {}
    try:
        job = watch_stack.submit(watch_job_body() | {"name": "alice-waits"})
        theirs = _bobs_job(watch_stack, watch_job_body, make_zip, make_png)
        _sign_in(browser, watch_stack.url, watch_stack.tokens["alice"])
        browser.get(f"{watch_stack.url}/#/queue")
        mine = _wait(lambda: browser.find_elements(By.CSS_SELECTOR,
                                                   f'tr[data-queue-job="{job["id"]}"]'),
                     30, "alice's job in the queue")[0]  # fmt: skip
        other = browser.find_element(By.CSS_SELECTOR, f'tr[data-queue-job="{theirs["id"]}"]')
        assert mine.get_attribute("class") == "mine" and "yours" in mine.text
        assert other.get_attribute("class") == "" and "yours" not in other.text
        assert other.find_elements(By.TAG_NAME, "a") == []  # a colleague's job doesn't open
        cells = [c.text for c in other.find_elements(By.TAG_NAME, "td")]
        assert cells[1:4] == ["bob-waits", "bob", "tiny-sdxl"] and cells[5] == "low"
        _wait(lambda: "paused" in mine.find_element(By.CLASS_NAME, "reason").text, 30,
              "the reason it waits, in words")  # fmt: skip
        assert "paused" in _text(browser, "queue-summary")
        panel = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#workers .worker"), 30,
                      "a worker's panel")[0]  # fmt: skip
        assert "memory in use:" in panel.text and panel.find_element(By.CLASS_NAME, "gpu").text
        assert _icon_loads(browser)

        mine.find_element(By.TAG_NAME, "a").click()
        _wait(lambda: _text(browser, "job-status") == "queued", 30, "the queued job")
        assert _text(browser, "job-title") == "alice-waits"
        assert _text(browser, "job-meta").startswith("alice · tiny-sdxl · submitted ")
        # A waiting job says where it stands; no empty chart.
        assert _text(browser, "job-waiting").startswith("Waiting to start")
        assert not browser.find_element(By.ID, "chart").is_displayed()
        browser.find_element(By.ID, "cancel").click()
        _wait(lambda: _text(browser, "job-status") == "cancelled", 30, "cancelled")
        assert _severe(browser) == []
    finally:
        watch_stack.client.post("/v1/queue/resume", headers=admin)
        if theirs:
            watch_stack.client.post(
                f"/v1/jobs/{theirs['id']}/cancel", headers=watch_stack.as_("bob")
            )
    assert watch_stack.job(job["id"])["status"] == "cancelled"
