"""The FastAPI application: routes, error handlers, body limits, shared context."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from api import errors, openapi
from api.limits import JsonBodyLimit
from api.routes import (
    account,
    catalog,
    dashboard,
    datasets,
    jobs,
    monitoring,
    queue,
    stream,
    system,
    users,
    watch,
    workers,
)
from api.routes.deps import AppContext, AuthCache
from core.catalog.hashing import HashCache
from core.datasets.staging import sweep_partial_uploads
from core.db import Database
from core.jobs.broker import Broker
from core.settings import Settings, get_settings
from core.watch.webhooks import start_dispatcher, stop_dispatcher


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.ensure_dirs()
        sweep_partial_uploads(settings)  # an upload cut by a crash or restart leaves nothing
        ctx = AppContext(
            settings=settings,
            db=Database.for_settings(settings),
            broker=Broker(settings),
            hashes=HashCache(settings.cache_dir / "model-hashes.json"),
            auth=AuthCache(settings.auth_cache_s),
        )
        app.state.ctx = ctx
        webhooks = start_dispatcher(ctx.db, settings)  # None unless webhooks are allowed
        try:
            yield
        finally:
            await stop_dispatcher(webhooks)
            ctx.broker.close()
            ctx.db.dispose()

    # /docs and /redoc load Swagger UI and ReDoc from the package, not a CDN: the team's box
    # may have no internet (fastapi-offline serves them under /static-offline-docs).
    app = FastAPIOffline(
        title="lorabox",
        version="0.1.0",
        description="Train SDXL LoRAs from Kohya_SS payloads on a shared GPU box.",
        lifespan=lifespan,
    )
    errors.install(app)
    openapi.install(app)
    routers = (datasets, catalog, jobs, queue, system, watch, stream, monitoring, account,
               dashboard, workers, users)  # fmt: skip
    for module in routers:
        app.include_router(module.router, responses=errors.documented_errors())
    app.mount("/static", dashboard.static_files, name="static")
    app.add_middleware(
        JsonBodyLimit,
        max_bytes=settings.max_json_bytes,
        max_depth=settings.max_json_depth,
        upload_paths=("/v1/datasets",),
    )
    return app
