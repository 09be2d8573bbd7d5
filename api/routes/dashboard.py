"""The web dashboard: static HTML, JS and CSS served by the API itself (no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
router = APIRouter(include_in_schema=False)
# Same-origin only: the page never loads anything from elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers=SECURITY_HEADERS)


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    """The page names its icon (/static/favicon.svg); this answers the browsers and pages
    (/docs) that ask for the conventional path anyway, instead of a 404."""
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")


static_files = StaticFiles(directory=STATIC_DIR)
