"""The JoCloud ``recordoss`` dialect: ``/app/{appid}/v1/recordoss/{applyrecord, startrecord,
stoprecord, updatemixrecord, queryrecord/{roomid}/{recordid}}``.

Every answer is HTTP 200 with ``{code, message, traceId, ...}``, except a wrong HTTP method,
a wrong Content-Type or an unknown endpoint, which the document answers with HTTP 404.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from limits import RateLimitItemPerSecond
from limits.strategies import RateLimiter

from cloudrec.api.auth import parse_basic
from cloudrec.api.jocloud import codes
from cloudrec.api.jocloud.fields import get_int, require
from cloudrec.api.jocloud.mixconfig import parse_mixconfig
from cloudrec.api.jocloud.schemas import parse_start, parse_stop
from cloudrec.bootstrap import Container
from cloudrec.core.errors import CloudrecError
from cloudrec.core.tasks import RecordMode, Task, TaskState
from cloudrec.storage.s3 import resolve_endpoint

router = APIRouter(tags=["jocloud"])
log = logging.getLogger("cloudrec.api.jocloud")

PER_SECOND = RateLimitItemPerSecond(10)
Handler = Callable[[Request, Container, int, str], Awaitable[dict[str, Any]]]


def _answer(trace_id: str, code: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, **extra, "traceId": trace_id})


def _not_found() -> Response:
    return Response(status_code=404)


def _limit(limiter: RateLimiter, *key: str) -> None:
    if not limiter.hit(PER_SECOND, "jocloud", *key):
        raise CloudrecError.resource_exhausted(
            "more than 10 requests per second", reason="rate_limited"
        )


def _authenticate(request: Request, c: Container, app_id: int) -> None:
    header_app = request.headers.get("AppID")
    if not header_app:
        raise CloudrecError.unauthenticated("no AppID header", reason="appid_missing")
    if header_app.strip() != str(app_id):
        raise CloudrecError.unauthenticated(
            f"AppID header {header_app!r} does not match the appid {app_id} in the URL",
            reason="appid_missing",
        )
    token = request.headers.get("Token") or request.headers.get("Authorization")
    if not token:
        raise CloudrecError.unauthenticated("no Token header", reason="token_missing")
    user, secret = parse_basic(token)
    if user != str(app_id):
        raise CloudrecError.unauthenticated(f"Token is for app {user!r}, not for {app_id}")
    c.apps.authenticate(app_id, secret)


async def _json_body(request: Request, app_id: int) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CloudrecError.invalid_argument(f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise CloudrecError.invalid_argument("the body must be a JSON object")
    body_app = get_int(body, "appid")
    if body_app != app_id:
        raise CloudrecError.invalid_argument(
            f"appid {body_app} in the body does not match the appid {app_id} in the URL"
        )
    return body


async def applyrecord(request: Request, c: Container, app_id: int, rest: str) -> dict[str, Any]:
    resid = c.tasks.apply_resource(app_id)
    return {"resid": resid}


async def startrecord(request: Request, c: Container, app_id: int, rest: str) -> dict[str, Any]:
    body = await _json_body(request, app_id)
    resid, spec, storage = parse_start(body, app_id)
    if spec.callback_url:
        await asyncio.to_thread(c.check_target, "callbackurl", spec.callback_url)
    if not c.settings.storage_endpoint_override:
        endpoint = resolve_endpoint(storage).url
        await asyncio.to_thread(c.check_target, "storagecfg.endpoint", endpoint)
    task = c.tasks.start(app_id, spec, storage, resource_id=resid)
    return {"recordid": task.task_id}


async def _running_task(
    c: Container, app_id: int, resid: str, room_id: str, record_id: str
) -> Task:
    task = c.tasks.get(app_id, record_id)
    if task.spec.room_id != room_id:
        raise CloudrecError.not_found(
            f"recording {record_id!r} is not in room {room_id!r}", reason="task_unknown"
        )
    if task.resource_id != resid:
        raise CloudrecError.failed_precondition(
            f"resid {resid!r} did not start recording {record_id!r}", reason="resource_unknown"
        )
    if task.state.terminal:
        raise CloudrecError.failed_precondition(
            f"recording {record_id!r} has ended ({task.end_reason})", reason="task_ended"
        )
    return task


async def stoprecord(request: Request, c: Container, app_id: int, rest: str) -> dict[str, Any]:
    resid, room_id, record_id = parse_stop(await _json_body(request, app_id))
    await _running_task(c, app_id, resid, room_id, record_id)
    c.tasks.stop(app_id, record_id)
    return {"recordid": record_id}


async def updatemixrecord(request: Request, c: Container, app_id: int, rest: str) -> dict[str, Any]:
    body = await _json_body(request, app_id)
    resid, room_id, record_id = parse_stop(body)
    task = await _running_task(c, app_id, resid, room_id, record_id)
    if task.spec.mode is not RecordMode.MIXED:
        raise CloudrecError.failed_precondition(
            f"recording {record_id!r} records source streams, not a mixed stream",
            reason="not_mixed",
        )
    mix = parse_mixconfig(require(body, "mixconfig"), room_id)
    c.tasks.update_mix(app_id, record_id, mix.to_json())
    return {"recordid": record_id}


async def queryrecord(request: Request, c: Container, app_id: int, rest: str) -> dict[str, Any]:
    parts = rest.split("/")
    if len(parts) != 3 or not all(parts[1:]):
        raise CloudrecError.invalid_argument("use queryrecord/{roomid}/{recordid}")
    _, room_id, record_id = parts
    _limit(request.app.state.limiter, "queryrecord", record_id)
    task = c.tasks.get(app_id, record_id)
    if task.spec.room_id != room_id or task.state.terminal:
        raise CloudrecError.not_found(
            f"recording {record_id!r} does not exist in room {room_id!r} or has ended",
            reason="task_unknown",
        )
    status = 0 if task.state is TaskState.INITIALISING else 1
    started = int(task.started_at.timestamp() * 1000) if task.started_at else 0
    return {
        "recordid": record_id,
        "data": {
            "recordid": record_id,
            "appid": app_id,
            "roomid": room_id,
            "status": status,
            "createtime": int(task.created_at.timestamp() * 1000),
            "starttime": started,
        },
    }


ENDPOINTS: dict[str, tuple[str, Handler]] = {
    "applyrecord": ("GET", applyrecord),
    "startrecord": ("POST", startrecord),
    "stoprecord": ("POST", stoprecord),
    "updatemixrecord": ("POST", updatemixrecord),
    "queryrecord": ("GET", queryrecord),
}


@router.api_route(
    "/app/{appid}/v1/recordoss/{rest:path}",
    methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
    summary="JoCloud recordoss: applyrecord, startrecord, stoprecord, updatemixrecord, "
    "queryrecord/{roomid}/{recordid}",
)
async def recordoss(appid: str, rest: str, request: Request) -> Response:
    trace_id = request.query_params.get("traceId", "")
    endpoint = rest.split("/", 1)[0]
    if endpoint not in ENDPOINTS or (endpoint != "queryrecord" and "/" in rest.strip("/")):
        return _not_found()
    method, handler = ENDPOINTS[endpoint]
    if request.method != method:
        return _not_found()
    content_type = request.headers.get("content-type", "").lower()
    if method == "POST" and not content_type.startswith("application/json"):
        return _not_found()
    c: Container = request.app.state.container
    try:
        if not appid.isdigit():
            raise CloudrecError.unauthenticated(
                f"appid {appid!r} is not a number", reason="appid_missing"
            )
        app_id = int(appid)
        _authenticate(request, c, app_id)
        _limit(request.app.state.limiter, "app", str(app_id))
        extra = await handler(request, c, app_id, rest.strip("/"))
    except CloudrecError as exc:
        code = codes.code_for(exc)
        log.info(
            "jocloud.refused",
            extra={
                "fields": {
                    "endpoint": endpoint,
                    "code": code,
                    "message": exc.message,
                    "traceId": trace_id,
                }
            },
        )
        return _answer(trace_id, code, exc.message)
    return _answer(trace_id, codes.OK, "success", **extra)
