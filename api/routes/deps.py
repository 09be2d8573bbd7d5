"""Per-app context and authentication shared by the routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.catalog.hashing import HashCache
from api.db import Database, User
from api.jobs.broker import Broker
from api.settings import Settings
from api.users import authenticate


@dataclass
class AppContext:
    settings: Settings
    db: Database
    broker: Broker
    hashes: HashCache


def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


_bearer = HTTPBearer(auto_error=False, description="a token from `lorabox user add NAME`")


def current_user(
    ctx: Annotated[AppContext, Depends(get_ctx)],
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    challenge = {"WWW-Authenticate": "Bearer"}
    if creds is None:
        raise HTTPException(401, "missing bearer token", headers=challenge)
    with ctx.db.reading() as session:
        user = authenticate(session, creds.credentials)
    if user is None:
        raise HTTPException(401, "invalid or revoked token", headers=challenge)
    return user


Ctx = Annotated[AppContext, Depends(get_ctx)]
CurrentUser = Annotated[User, Depends(current_user)]
