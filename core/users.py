"""Users and their bearer tokens (stored as SHA-256 digests, never in clear)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.db.tables import User, utcnow
from core.errors import Conflict, Forbidden, InvalidInput, NotFound, Problem
from core.jobs.usage import decayed_usage, window_usage
from core.settings import Settings

TOKEN_PREFIX = "lbx_"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def add_user(session: Session, *, name: str, admin: bool = False) -> str:
    """Creates (or re-enables a revoked) user; returns the new token, shown once."""
    token = _new_token()
    user = session.scalar(sa.select(User).where(User.name == name))
    if user is not None and user.token_digest is not None:
        raise Conflict(f"user {name!r} already exists")
    if user is None:
        user = User(name=name)
        session.add(user)
    user.token_digest = digest(token)
    user.is_admin = admin
    user.revoked_at = None
    return token


def reissue_token(session: Session, *, name: str) -> str:
    """Replaces an active user's token; returns the new one, shown once. Only the digest of
    the old token is stored, so it can't be shown again: a new one is the only way back in,
    and the old one stops working (API processes trust a token they looked up for
    ``Settings.auth_cache_s`` more). A revoked user stays revoked: ``add_user`` re-enables."""
    user = session.scalar(sa.select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user {name!r}")
    if user.token_digest is None:
        raise Conflict(f"user {name!r} is revoked")
    token = _new_token()
    user.token_digest = digest(token)
    return token


def revoke_user(session: Session, *, name: str) -> None:
    user = session.scalar(sa.select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user {name!r}")
    user.token_digest = None
    user.revoked_at = utcnow()


def authenticate(session: Session, token: str) -> User | None:
    if not token:
        return None
    return session.scalar(sa.select(User).where(User.token_digest == digest(token)))


def require_admin(user: User, what: str) -> None:
    if not user.is_admin:
        raise Forbidden(f"only admins can {what}")


def set_quota(
    session: Session, *, name: str, gpu_seconds: int | None, window_s: int | None
) -> User:
    """An active user's GPU-time budget: at most ``gpu_seconds`` of worker time in any
    rolling ``window_s`` (docs/scheduling.md, "Quotas"); both None clears it. Over budget,
    the user's jobs still queue and wait (``blocked_reason: quota``)."""
    if (gpu_seconds is None) != (window_s is None):
        missing = "window_s" if window_s is None else "gpu_seconds"
        problem = Problem((missing,), "a quota needs both gpu_seconds and window_s")
        raise InvalidInput([problem])
    user = session.scalar(sa.select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user {name!r}")
    user.quota_gpu_seconds, user.quota_window_s = gpu_seconds, window_s
    return user


@dataclass(frozen=True)
class GpuTime:
    """A user's worker time as the scheduler sees it (docs/scheduling.md, "Usage", "Quotas")."""

    fair_share_s: float  # decayed: what orders owners under the fair policy
    quota_gpu_seconds: int | None
    quota_window_s: int | None
    window_s_used: float | None  # undecayed seconds inside the quota's window; None: no quota

    @property
    def over_quota(self) -> bool:
        used, budget = self.window_s_used, self.quota_gpu_seconds
        return used is not None and budget is not None and used >= budget


def gpu_time(
    session: Session, settings: Settings, user: User, now: datetime | None = None
) -> GpuTime:
    now = now or utcnow()
    decayed = decayed_usage(session, half_life_s=settings.fairshare_half_life_s, now=now)
    used = None
    if user.quota_window_s is not None:
        window = window_usage(session, user_ids=[user.id], window_s=user.quota_window_s, now=now)
        used = window.get(user.id, 0.0)
    return GpuTime(
        fair_share_s=decayed.get(user.id, 0.0),
        quota_gpu_seconds=user.quota_gpu_seconds,
        quota_window_s=user.quota_window_s,
        window_s_used=used,
    )
