"""The HTTP application: cloudrec's own API, the publish hooks, and (later) vendor dialects."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from cloudrec import __version__
from cloudrec.api import hooks, rooms, tasks
from cloudrec.api.bodies import BodyLimit, Scope
from cloudrec.api.errors import handle_cloudrec_error
from cloudrec.api.jocloud import codes as jocloud_codes
from cloudrec.api.jocloud import openapi as jocloud_openapi
from cloudrec.api.jocloud import routes as jocloud_routes
from cloudrec.api.openapi import publish
from cloudrec.api.zego import codes as zego_codes
from cloudrec.api.zego import openapi as zego_openapi
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
    app.add_middleware(
        BodyLimit,
        max_bytes=container.settings.max_body_bytes,
        refuse=too_large,
    )
    app.include_router(rooms.router)
    app.include_router(hooks.router)
    app.include_router(tasks.router)
    app.include_router(jocloud_routes.router)
    app.include_router(zego_routes.router)
    publish(app, {**jocloud_openapi.COMPONENTS, **zego_openapi.COMPONENTS})

    @app.get("/healthz", tags=["service"], summary="Liveness: the process answers")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    return app


def too_large(scope: Scope, message: str) -> JSONResponse:
    """HTTP 413 in the envelope of the dialect the path belongs to."""
    path: str = scope.get("path", "")
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if path.startswith("/app/") and "/v1/recordoss/" in path:
        trace_id = query.get("traceId", [""])[0]
        body: dict[str, Any] = {
            "code": jocloud_codes.INVALID_PARAMETER,
            "message": message,
            "traceId": trace_id,
        }
    elif path == "/" or path.startswith(zego_routes.PUBLISHED_PREFIX + "/"):
        body = {
            "Code": zego_codes.INVALID_PARAMETER,
            "Message": message,
            "RequestId": secrets.token_hex(8),
        }
    else:
        body = {"error": {"kind": "invalid_argument", "message": message}}
    return JSONResponse(body, status_code=413)
