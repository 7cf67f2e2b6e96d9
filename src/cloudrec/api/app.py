"""The HTTP application: cloudrec's own API, the publish hooks, and (later) vendor dialects."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from cloudrec import __version__
from cloudrec.api import hooks, rooms
from cloudrec.api.errors import handle_cloudrec_error
from cloudrec.bootstrap import Container
from cloudrec.core.errors import CloudrecError


def create_app(container: Container) -> FastAPI:
    app = FastAPI(
        title="cloudrec",
        version=__version__,
        description="Self-hostable cloud recording for live audio/video rooms.",
    )
    app.state.container = container
    app.add_exception_handler(CloudrecError, handle_cloudrec_error)
    app.include_router(rooms.router)
    app.include_router(hooks.router)

    @app.get("/healthz", tags=["service"], summary="Liveness: the process answers")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    return app
