"""The web dashboard end to end in headless Chromium (Debian's chromium + chromium-driver).

A job is submitted through the API; the browser signs in, watches the job's page reach
"succeeded" over SSE, downloads the LoRA and saves a screenshot. In CI a missing browser is
a failure, never a skip.
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


def test_the_dashboard_follows_a_job_to_succeeded_and_downloads_its_lora(
    browser, watch_stack, watch_job_body, tmp_path
):
    from selenium.webdriver.common.by import By

    params = dict(epoch=2, save_every_n_epochs=1, sample_every_n_epochs=1,
                  sample_prompts="a toy --w 64 --h 64 --s 2 --d 3")  # fmt: skip
    job = watch_stack.submit(watch_job_body(**params) | {"name": "browser"})
    _sign_in(browser, watch_stack.url, watch_stack.tokens["alice"])
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, f'tr[data-job="{job["id"]}"]'), 30,
          "the job in the queue")  # fmt: skip
    browser.get(f"{watch_stack.url}/#/jobs/{job['id']}")
    _wait(lambda: _text(browser, "job-status") == "succeeded", 300, "succeeded")
    assert _text(browser, "job-error") == ""
    assert "2 / 2" in _text(browser, "job-numbers")  # steps, from the stream
    assert browser.find_element(By.ID, "job-bar").get_attribute("style").endswith("100%;")
    _wait(lambda: browser.execute_script("return document.getElementById('chart').naturalWidth"),
          30, "the loss chart")  # fmt: skip
    link = _wait(lambda: browser.find_elements(By.LINK_TEXT, "last.safetensors"), 30, "the LoRA")
    link[0].click()
    lora = browser.downloads / "last.safetensors"
    _wait(lambda: lora.exists() and not list(browser.downloads.glob("*.crdownload")), 60,
          "the download")  # fmt: skip
    listed = watch_stack.get(f"/v1/jobs/{job['id']}/artifacts").json()["items"]
    [expected] = [a for a in listed if a["name"] == "last.safetensors"]
    assert hashlib.sha256(lora.read_bytes()).hexdigest() == expected["sha256"]
    # The gallery shows the trainer's real sample PNGs, one per epoch, decoded by the browser.
    gallery = "return [...document.querySelectorAll('#samples img')].map(i => i.naturalWidth)"
    _wait(lambda: browser.execute_script(gallery) == [64, 64], 60, "the two decoded samples")
    assert browser.find_element(By.ID, "cancel").is_displayed() is False
    browser.save_screenshot(str(tmp_path / "dashboard-job.png"))
    assert (tmp_path / "dashboard-job.png").stat().st_size > 10_000


def test_the_cancel_button_cancels_a_queued_job(browser, watch_stack, watch_job_body):
    from selenium.webdriver.common.by import By

    admin = watch_stack.as_("admin")
    watch_stack.client.post("/v1/queue/pause", headers=admin)
    try:
        job = watch_stack.submit(watch_job_body())
        _sign_in(browser, watch_stack.url, watch_stack.tokens["alice"])
        browser.get(f"{watch_stack.url}/#/jobs/{job['id']}")
        _wait(lambda: _text(browser, "job-status") == "queued", 30, "the queued job")
        browser.find_element(By.ID, "cancel").click()
        _wait(lambda: _text(browser, "job-status") == "cancelled", 30, "cancelled")
    finally:
        watch_stack.client.post("/v1/queue/resume", headers=admin)
    assert watch_stack.job(job["id"])["status"] == "cancelled"
