"""cloudrec's own API (``/v1``, ``/hooks``): errors as ``{"error": {"kind", "message"}}``."""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloudrec.core.errors import CloudrecError, Kind

HTTP_STATUS = {
    Kind.INVALID_ARGUMENT: 400,
    Kind.UNAUTHENTICATED: 401,
    Kind.PERMISSION_DENIED: 403,
    Kind.NOT_FOUND: 404,
    Kind.CONFLICT: 409,
    Kind.RESOURCE_EXHAUSTED: 429,
    Kind.FAILED_PRECONDITION: 412,
    Kind.UNAVAILABLE: 503,
    Kind.INTERNAL: 500,
}


def error_response(exc: CloudrecError) -> JSONResponse:
    headers = (
        {"WWW-Authenticate": 'Basic realm="cloudrec"'} if exc.kind is Kind.UNAUTHENTICATED else None
    )
    return JSONResponse(
        {"error": {"kind": exc.kind.value, "message": exc.message}},
        status_code=HTTP_STATUS[exc.kind],
        headers=headers,
    )


def validation_message(exc: RequestValidationError) -> str:
    """Pydantic's errors as one line: ``body.mix.fps: Input should be less than or equal to
    30; query.limit: …`` (never the input values, which may hold secrets)."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


async def handle_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """A request FastAPI could not validate (cloudrec's own API: the dialects parse their
    bodies themselves): HTTP 400 in cloudrec's envelope."""
    assert isinstance(exc, RequestValidationError)
    return error_response(CloudrecError.invalid_argument(validation_message(exc)))


KINDS = {400: Kind.INVALID_ARGUMENT, 401: Kind.UNAUTHENTICATED, 403: Kind.PERMISSION_DENIED}


async def handle_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (an unknown path, a wrong method, a body FastAPI could not
    parse): in cloudrec's envelope under ``/v1/``; the dialects' paths keep their answers."""
    assert isinstance(exc, StarletteHTTPException)
    if not request.url.path.startswith("/v1/"):
        return await http_exception_handler(request, exc)
    kind = KINDS.get(exc.status_code, Kind.NOT_FOUND if exc.status_code == 404 else None)
    body = {"error": {"kind": kind.value if kind else "http", "message": str(exc.detail)}}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def handle_cloudrec_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CloudrecError)
    return error_response(exc)
