"""The HTTP application: cloudrec's own API, the publish hooks, and (later) vendor dialects."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloudrec import __version__
from cloudrec.api import hooks, rooms, tasks
from cloudrec.api.agora import codes as agora_codes
from cloudrec.api.agora import routes as agora_routes
from cloudrec.api.bodies import BodyLimit, Scope
from cloudrec.api.errors import (
    HTTP_STATUS,
    handle_cloudrec_error,
    handle_http_error,
    handle_validation_error,
)
from cloudrec.api.jocloud import codes as jocloud_codes
from cloudrec.api.jocloud import openapi as jocloud_openapi
from cloudrec.api.jocloud import routes as jocloud_routes
from cloudrec.api.openapi import publish
from cloudrec.api.zego import codes as zego_codes
from cloudrec.api.zego import openapi as zego_openapi
from cloudrec.api.zego import routes as zego_routes
from cloudrec.bootstrap import Container
from cloudrec.console import routes as console
from cloudrec.console.session import COOKIE, Sessions
from cloudrec.core.errors import CloudrecError
from cloudrec.metrics import CountRequests, Metrics
from cloudrec.secretbox import load_key


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
    app.add_exception_handler(CloudrecError, handle_error)
    app.add_exception_handler(console.SignInError, to_sign_in)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
    app.add_middleware(
        BodyLimit,
        max_bytes=container.settings.max_body_bytes,
        refuse=too_large,
    )
    app.state.metrics = Metrics(container.engine)
    app.add_middleware(CountRequests, metrics=app.state.metrics)
    app.state.console_sessions = Sessions(
        load_key(container.settings.secret_key, container.settings.data_dir).encode()
    )
    app.include_router(console.router)
    app.mount("/console/static", StaticFiles(directory=console.HERE / "static"), name="static")
    app.include_router(rooms.router)
    app.include_router(hooks.router)
    app.include_router(tasks.router)
    app.include_router(jocloud_routes.router)
    app.include_router(zego_routes.router)
    app.include_router(agora_routes.router)
    publish(app, {**jocloud_openapi.COMPONENTS, **zego_openapi.COMPONENTS})

    @app.get("/healthz", tags=["service"], summary="Liveness: the process answers")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get(
        "/metrics",
        tags=["service"],
        summary="Prometheus metrics (text format; no task or room ids)",
        response_class=Response,
    )
    def metrics() -> Response:
        registry = app.state.metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def handle_error(request: Request, exc: Exception) -> Response:
    """A refusal: a page in the console, the envelope of cloudrec's own API elsewhere (the
    dialects answer their errors themselves)."""
    assert isinstance(exc, CloudrecError)
    if request.url.path.startswith("/console/"):
        session = request.app.state.console_sessions.read(request.cookies.get(COOKIE))
        page = console.templates.TemplateResponse(
            request, "error.html", {"session": session, "error": exc.message}
        )
        page.status_code = HTTP_STATUS[exc.kind]
        return page
    return await handle_cloudrec_error(request, exc)


async def to_sign_in(request: Request, _exc: Exception) -> Response:
    if request.headers.get("HX-Request"):  # a fragment: htmx sends the whole page there
        return Response(status_code=401, headers={"HX-Redirect": "/console/login"})
    return RedirectResponse("/console/login", status_code=303)


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
    elif path.startswith("/v1/apps/") and "/cloud_recording/" in path:
        body = agora_codes.INVALID.body(message)
    elif path == "/" or path.startswith(zego_routes.PUBLISHED_PREFIX + "/"):
        body = {
            "Code": zego_codes.INVALID_PARAMETER,
            "Message": message,
            "RequestId": secrets.token_hex(8),
        }
    else:
        body = {"error": {"kind": "invalid_argument", "message": message}}
    return JSONResponse(body, status_code=413)
