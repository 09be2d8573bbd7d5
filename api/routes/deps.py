"""Per-app context and authentication shared by the routes."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from core.catalog.hashing import HashCache
from core.db import Database, User
from core.jobs.broker import Broker
from core.settings import Settings
from core.users import authenticate, digest


class AuthCache:
    """Token digest -> user for a few seconds: polling scripts authenticate on every request.

    A revoked token stops working within ``ttl_s``."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, User]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> User | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: str, user: User) -> None:
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self.ttl_s, user)


@dataclass
class AppContext:
    settings: Settings
    db: Database
    broker: Broker
    hashes: HashCache
    auth: AuthCache = field(default_factory=lambda: AuthCache(0))


async def get_ctx(request: Request) -> AppContext:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a hop on every request.
    ctx: AppContext = request.app.state.ctx
    return ctx


_bearer = HTTPBearer(auto_error=False, description="a token from `lorabox user add NAME`")
SESSION_COOKIE = "lorabox_session"
# The dashboard's sign-in (POST /v1/session): a browser's EventSource can't send a header.
_cookie = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False, description="set by POST /v1/session (browsers)"
)


async def current_user(
    ctx: Annotated[AppContext, Depends(get_ctx)],
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> User:
    # async, with one indexed read inline: a thread hop per request costs more than the query.
    challenge = {"WWW-Authenticate": "Bearer"}
    token = creds.credentials if creds is not None else cookie
    if not token:
        raise HTTPException(401, "missing bearer token", headers=challenge)
    key = digest(token)
    user = ctx.auth.get(key)
    if user is None:
        with ctx.db.on_event_loop(), ctx.db.reading() as session:
            user = authenticate(session, token)
        if user is not None:
            ctx.auth.put(key, user)
    if user is None:
        raise HTTPException(401, "invalid or revoked token", headers=challenge)
    return user


Ctx = Annotated[AppContext, Depends(get_ctx)]
CurrentUser = Annotated[User, Depends(current_user)]
