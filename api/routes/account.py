"""The caller's own account: who they are and the secret that signs their webhooks."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.db import User
from api.routes.deps import Ctx, CurrentUser
from api.watch.webhooks import SIGNATURE_HEADER, ensure_secret

router = APIRouter(prefix="/v1", tags=["account"])


class MeRead(BaseModel):
    name: str
    is_admin: bool
    webhook_secret: str = Field(
        description=f"verify webhooks with it: {SIGNATURE_HEADER} is sha256=<hex HMAC-SHA256 "
        "of the raw request body keyed by this secret>"
    )


@router.get("/me", response_model=MeRead)
def me(ctx: Ctx, user: CurrentUser) -> MeRead:
    with ctx.db.writing() as session:
        row = session.get(User, user.id)
        assert row is not None
        secret = ensure_secret(session, row)
        return MeRead(name=row.name, is_admin=row.is_admin, webhook_secret=secret)
