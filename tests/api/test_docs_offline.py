"""/docs and /redoc work on a box without internet: Swagger UI and ReDoc come from the package,
not a CDN (they were blank pages offline)."""

from __future__ import annotations

import re

import pytest

from tests.api.browser import wait

ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_docs_reference_only_assets_the_server_itself_serves(service, page):
    response = service.client.get(page)
    assert response.status_code == 200
    assets = ASSET.findall(response.text)
    assert assets and all(url.startswith("/") for url in assets), assets
    for url in assets:
        asset = service.client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 100, url


@pytest.mark.slow
@pytest.mark.parametrize(
    ("page", "rendered"),
    [("/docs", ".swagger-ui .info .title"), ("/redoc", ".api-info h1")],
)
def test_the_api_docs_render_in_a_browser_with_the_network_blocked(
    browser, watch_stack, page, rendered
):
    from selenium.webdriver.common.by import By

    # No internet: every https URL is blocked (the CDNs FastAPI's default pages load from are
    # all https; the test server is plain http on the loopback).
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["https://*"]})
    browser.get(watch_stack.url + page)
    title = wait(lambda: browser.find_elements(By.CSS_SELECTOR, rendered), 30, f"{page} rendered")
    assert "lorabox" in title[0].text
