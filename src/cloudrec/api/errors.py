"""cloudrec's own API (``/v1``, ``/hooks``): errors as ``{"error": {"kind", "message"}}``."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

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


async def handle_cloudrec_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CloudrecError)
    return error_response(exc)
