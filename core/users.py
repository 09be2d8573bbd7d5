"""Users and their bearer tokens (stored as SHA-256 digests, never in clear)."""

from __future__ import annotations

import hashlib
import secrets

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.db.tables import User, utcnow
from core.errors import Conflict, NotFound

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
