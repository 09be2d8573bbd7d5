"""Which URLs a webhook may target: only hosts the operator allowed (none by default)."""

from __future__ import annotations

from urllib.parse import urlsplit

from core.settings import Settings


def notify_url_problem(settings: Settings, url: str | None) -> str | None:
    """Why ``url`` can't be a webhook target (None: it can)."""
    if url is None:
        return None
    if not settings.webhook_hosts:
        return "webhooks are turned off on this server (LORABOX_WEBHOOK_ALLOWED_HOSTS is empty)"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute http:// or https:// URL"
    if parts.username or parts.password:
        return "must not carry credentials"
    if parts.hostname.lower() not in settings.webhook_hosts:
        return f"host {parts.hostname!r} is not on this server's webhook allow-list"
    return None
