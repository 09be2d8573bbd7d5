from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.routes.deps import Ctx, CurrentUser
from api.schemas.catalog import ModelList, ModelRead
from core.catalog import list_models
from core.catalog.discovery import model_sha256

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelList)
async def get_models(ctx: Ctx, _user: CurrentUser) -> ModelList:
    """Base models and VAEs in the models directory (a file's hash is cached once computed)."""

    def scan() -> ModelList:
        return ModelList(
            items=[
                ModelRead(
                    name=m.name,
                    kind=m.kind,
                    format=m.format,
                    size_bytes=m.size_bytes(),
                    sha256=model_sha256(m, ctx.hashes),
                )
                for m in list_models(ctx.settings.models_dir)
            ]
        )

    return await run_in_threadpool(scan)
