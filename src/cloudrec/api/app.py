"""The HTTP application: cloudrec's own API, the publish hooks, and (later) vendor dialects."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from cloudrec import __version__
from cloudrec.api import hooks, rooms, tasks
from cloudrec.api.errors import handle_cloudrec_error
from cloudrec.api.jocloud import routes as jocloud_routes
from cloudrec.api.zego import routes as zego_routes
from cloudrec.bootstrap import Container
from cloudrec.core.errors import CloudrecError


def create_app(container: Container) -> FastAPI:
    app = FastAPI(
        title="cloudrec",
        version=__version__,
        description="Self-hostable cloud recording for live audio/video rooms.",
    )
    app.state.container = container
    app.state.limiter = MovingWindowRateLimiter(
        storage_from_string(container.settings.rate_limit_storage)
    )
    app.add_exception_handler(CloudrecError, handle_cloudrec_error)
    app.include_router(rooms.router)
    app.include_router(hooks.router)
    app.include_router(tasks.router)
    app.include_router(jocloud_routes.router)
    app.include_router(zego_routes.router)

    @app.get("/healthz", tags=["service"], summary="Liveness: the process answers")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    return app
