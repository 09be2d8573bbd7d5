"""The caller's own account: who they are, the secret that signs their webhooks, and the
browser sign-in (a cookie) for the dashboard."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from api.routes.deps import SESSION_COOKIE, Ctx, CurrentUser
from api.schemas.users import GpuTimeRead
from core.db import User
from core.users import authenticate, gpu_time
from core.watch.webhooks import SIGNATURE_HEADER, ensure_secret, standard_secret

router = APIRouter(prefix="/v1", tags=["account"])


class SessionRead(BaseModel):
    name: str
    is_admin: bool


class MeRead(BaseModel):
    name: str
    is_admin: bool
    webhook_secret: str = Field(
        description=f"verify webhooks with it: {SIGNATURE_HEADER} is sha256=<hex HMAC-SHA256 "
        "of the raw request body keyed by this secret>"
    )
    webhook_standard_secret: str = Field(
        pattern="^whsec_[A-Za-z0-9+/]+={0,2}$",
        description="the same secret for Standard Webhooks libraries (e.g. Python's "
        "standardwebhooks: Webhook(secret).verify(body, headers)): webhook-signature is "
        "v1,<base64 HMAC-SHA256 of 'webhook-id.webhook-timestamp.body'>; see docs/webhooks.md",
    )
    gpu_time: GpuTimeRead = Field(description="your usage and budget (docs/scheduling.md)")


@router.get("/me", response_model=MeRead)
def me(ctx: Ctx, user: CurrentUser) -> MeRead:
    with ctx.db.writing() as session:
        row = session.get(User, user.id)
        assert row is not None
        secret = ensure_secret(session, row)
        time = gpu_time(session, ctx.settings, row)
        return MeRead(
            name=row.name,
            is_admin=row.is_admin,
            webhook_secret=secret,
            webhook_standard_secret=standard_secret(secret),
            gpu_time=GpuTimeRead.of(time),
        )


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=200)


@router.post("/session", response_model=SessionRead)
def sign_in(body: SessionCreate, request: Request, response: Response, ctx: Ctx) -> SessionRead:
    """Browsers: trade a token for an HttpOnly, SameSite=Strict cookie the API accepts like
    a bearer token (SameSite=Strict keeps other sites from using it: no CSRF)."""
    with ctx.db.reading() as session:
        user = authenticate(session, body.token)
    if user is None:
        raise HTTPException(401, "invalid or revoked token")
    response.set_cookie(
        SESSION_COOKIE,
        body.token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return SessionRead(name=user.name, is_admin=user.is_admin)


@router.delete("/session", status_code=204)
def sign_out() -> Response:
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
