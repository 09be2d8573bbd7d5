"""Browser sign-in: a token becomes an HttpOnly, SameSite=Strict cookie the API accepts."""

from __future__ import annotations


def test_signing_in_sets_a_strict_httponly_cookie_that_authenticates(fresh_service):
    client = fresh_service.client
    response = client.post("/v1/session", json={"token": fresh_service.tokens["alice"]})
    assert response.status_code == 200 and response.json()["name"] == "alice"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("lorabox_session=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert client.get("/v1/me").json()["name"] == "alice"  # the cookie alone
    assert client.get("/v1/jobs").status_code == 200
    assert client.delete("/v1/session").status_code == 204
    client.cookies.clear()
    assert client.get("/v1/me").status_code == 401


def test_a_bad_token_gets_no_cookie(fresh_service):
    response = fresh_service.client.post("/v1/session", json={"token": "lbx_wrong"})
    assert response.status_code == 401 and "set-cookie" not in response.headers
    revoked_cookie = {"lorabox_session": "lbx_wrong"}
    assert fresh_service.client.get("/v1/me", cookies=revoked_cookie).status_code == 401


def test_a_bearer_token_wins_over_the_cookie(fresh_service):
    client = fresh_service.client
    client.post("/v1/session", json={"token": fresh_service.tokens["alice"]})
    assert client.get("/v1/me", headers=fresh_service.as_("bob")).json()["name"] == "bob"
    client.cookies.clear()


def test_the_dashboard_is_served_at_the_root_with_its_assets(fresh_service):
    page = fresh_service.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/app.js"' in page.text
    for asset, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        response = fresh_service.client.get(f"/static/{asset}")
        assert response.status_code == 200 and kind in response.headers["content-type"]


PROGRESS_FIELDS = ["phase", "step", "total_steps", "epoch", "total_epochs", "loss", "avg_loss",
                   "lr", "samples_per_s", "s_per_step", "elapsed_s", "eta_s",
                   "peak_gpu_mem_bytes", "max_norm"]  # fmt: skip


def test_the_progress_fields_are_named_and_documented_in_the_openapi_schema(fresh_service):
    schema = fresh_service.client.get("/openapi.json").json()
    progress = schema["components"]["schemas"]["ProgressRead"]["properties"]
    assert list(progress) == PROGRESS_FIELDS
    assert all(field.get("description") for field in progress.values())
