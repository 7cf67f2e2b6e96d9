"""The JoCloud ``recordoss`` dialect: ``/app/{appid}/v1/recordoss/{applyrecord, startrecord,
stoprecord, updatemixrecord, queryrecord/{roomid}/{recordid}}``.

Every answer is HTTP 200 with ``{code, message, traceId, ...}``, except a wrong HTTP method,
a wrong Content-Type or an unknown endpoint, which the document answers with HTTP 404.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from limits import RateLimitItemPerSecond
from limits.strategies import RateLimiter
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from cloudrec.api.auth import parse_basic
from cloudrec.api.bodies import parse_json, refuse_nul
from cloudrec.api.jocloud import codes, openapi
from cloudrec.api.jocloud.fields import get_int, require
from cloudrec.api.jocloud.mixconfig import parse_mixconfig
from cloudrec.api.jocloud.schemas import parse_start, parse_stop
from cloudrec.api.masking import request_record
from cloudrec.bootstrap import Container
from cloudrec.core.errors import CloudrecError
from cloudrec.core.tasks import Desired, RecordMode, Task, TaskState
from cloudrec.storage.s3 import resolve_endpoint

router = APIRouter(tags=["jocloud"])
log = logging.getLogger("cloudrec.api.jocloud")

PER_SECOND = RateLimitItemPerSecond(10)


@dataclass(frozen=True)
class Call:
    """One request, read off the event loop's hands: the handlers run in a worker thread
    (STYLE.md 12: they wait on the database), so they get the body's bytes, not the request."""

    c: Container
    app_id: int
    rest: str
    raw: bytes
    limiter: RateLimiter

    def body(self) -> dict[str, Any]:
        """The JSON object of the body; its ``appid`` must be the URL's."""
        body = parse_json(self.raw or b"null")
        if not isinstance(body, dict):
            raise CloudrecError.invalid_argument("the body must be a JSON object")
        body_app = get_int(body, "appid")
        if body_app != self.app_id:
            raise CloudrecError.invalid_argument(
                f"appid {body_app} in the body does not match the appid {self.app_id} in the URL"
            )
        return body


Handler = Callable[[Call], dict[str, Any]]


def _answer(trace_id: str, code: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, **extra, "traceId": trace_id})


def _not_found() -> Response:
    return Response(status_code=404)


def _limit(limiter: RateLimiter, *key: str) -> None:
    if not limiter.hit(PER_SECOND, "jocloud", *key):
        raise CloudrecError.resource_exhausted(
            "more than 10 requests per second", reason="rate_limited"
        )


def _authenticate(headers: Headers, c: Container, app_id: int) -> None:
    header_app = headers.get("AppID")
    if not header_app:
        raise CloudrecError.unauthenticated("no AppID header", reason="appid_missing")
    if header_app.strip() != str(app_id):
        raise CloudrecError.unauthenticated(
            f"AppID header {header_app!r} does not match the appid {app_id} in the URL",
            reason="appid_missing",
        )
    token = headers.get("Token") or headers.get("Authorization")
    if not token:
        raise CloudrecError.unauthenticated("no Token header", reason="token_missing")
    user, secret = parse_basic(token)
    if user != str(app_id):
        raise CloudrecError.unauthenticated(f"Token is for app {user!r}, not for {app_id}")
    c.apps.authenticate(app_id, secret)


def applyrecord(call: Call) -> dict[str, Any]:
    resid = call.c.tasks.apply_resource(call.app_id)
    return {"resid": resid}


def startrecord(call: Call) -> dict[str, Any]:
    c, app_id = call.c, call.app_id
    body = call.body()
    resid, spec, storage = parse_start(body, app_id)
    if spec.callback_url:
        c.check_target("callbackurl", spec.callback_url)
    if not c.settings.storage_endpoint_override:
        c.check_target("storagecfg.endpoint", resolve_endpoint(storage).url)
    task = c.tasks.start(app_id, spec, storage, resource_id=resid, request=request_record(body))
    return {"recordid": task.task_id}


def _stopped(task: Task) -> bool:
    """Stopped as the document means it ("after the recording task is stopped, including
    active stop and timeout stop": 4013): asked to stop, stopping on its own, uploading, or
    over (issue 10: queryrecord answered status 1 while the task stopped or uploaded)."""
    return (
        task.desired is Desired.STOPPED
        or task.state in (TaskState.STOPPING, TaskState.UPLOADING)
        or task.state.terminal
    )


def _running_task(c: Container, app_id: int, resid: str, room_id: str, record_id: str) -> Task:
    task = c.tasks.get(app_id, record_id)
    if task.spec.room_id != room_id:
        raise CloudrecError.not_found(
            f"recording {record_id!r} is not in room {room_id!r}", reason="task_unknown"
        )
    if task.resource_id != resid:
        raise CloudrecError.failed_precondition(
            f"resid {resid!r} did not start recording {record_id!r}", reason="resource_unknown"
        )
    if _stopped(task):
        raise CloudrecError.failed_precondition(
            f"recording {record_id!r} has stopped ({task.end_reason or task.state.value})",
            reason="task_ended",
        )
    return task


def stoprecord(call: Call) -> dict[str, Any]:
    resid, room_id, record_id = parse_stop(call.body())
    _running_task(call.c, call.app_id, resid, room_id, record_id)
    call.c.tasks.stop(call.app_id, record_id)
    return {"recordid": record_id}


def updatemixrecord(call: Call) -> dict[str, Any]:
    body = call.body()
    resid, room_id, record_id = parse_stop(body)
    task = _running_task(call.c, call.app_id, resid, room_id, record_id)
    if task.spec.mode is not RecordMode.MIXED:
        raise CloudrecError.failed_precondition(
            f"recording {record_id!r} records source streams, not a mixed stream",
            reason="not_mixed",
        )
    mix = parse_mixconfig(require(body, "mixconfig"), room_id)
    call.c.tasks.update_mix(call.app_id, record_id, mix.to_json())
    return {"recordid": record_id}


def queryrecord(call: Call) -> dict[str, Any]:
    app_id = call.app_id
    parts = call.rest.split("/")
    if len(parts) != 3 or not all(parts[1:]):
        raise CloudrecError.invalid_argument("use queryrecord/{roomid}/{recordid}")
    _, room_id, record_id = parts
    _limit(call.limiter, "queryrecord", record_id)
    task = call.c.tasks.get(app_id, record_id)
    if task.spec.room_id != room_id or _stopped(task):
        raise CloudrecError.not_found(
            f"recording {record_id!r} does not exist in room {room_id!r} or has stopped",
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


async def _serve(request: Request, appid: str, rest: str) -> Response:
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
    raw = await request.body() if method == "POST" else b""  # bounded: BodyLimit
    headers, limiter = request.headers, request.app.state.limiter

    def answer() -> JSONResponse:  # in a worker thread: it waits on the database
        try:
            if not appid.isdigit():
                raise CloudrecError.unauthenticated(
                    f"appid {appid!r} is not a number", reason="appid_missing"
                )
            app_id = int(appid)
            _authenticate(headers, c, app_id)
            refuse_nul(rest, "the URL")
            _limit(limiter, "app", str(app_id))
            extra = handler(Call(c, app_id, rest.strip("/"), raw, limiter))
        except CloudrecError as exc:
            code = codes.code_for(exc)
            fields = {"endpoint": endpoint, "code": code, "message": exc.message}
            log.info("jocloud.refused", extra={"fields": {**fields, "traceId": trace_id}})
            return _answer(trace_id, code, exc.message)
        return _answer(trace_id, codes.OK, "success", **extra)

    return await run_in_threadpool(answer)


def _published(endpoint: str) -> Callable[[Request], Awaitable[Response]]:
    """The route of one endpoint: what the catch-all below does for it, published with its
    schemas (FastAPI validates nothing: the parsing and its refusals stay the dialect's)."""

    async def serve(request: Request) -> Response:
        params = request.path_params
        rest = endpoint
        if endpoint == "queryrecord":
            rest = f"queryrecord/{params['roomid']}/{params['recordid']}"
        return await _serve(request, params["appid"], rest)

    return serve


for _endpoint, (_path, _summary, _, _) in openapi.ENDPOINTS.items():
    router.add_api_route(
        f"/app/{{appid}}/v1/recordoss/{_path}",
        _published(_endpoint),
        methods=[ENDPOINTS[_endpoint][0]],
        summary=f"{_endpoint}: {_summary}",
        operation_id=f"jocloud_{_endpoint}",
        openapi_extra=openapi.openapi_extra(_endpoint),
    )


@router.api_route(
    "/app/{appid}/v1/recordoss/{rest:path}",
    methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
    include_in_schema=False,
)
async def recordoss(appid: str, rest: str, request: Request) -> Response:
    """Everything else under recordoss/: a wrong method, an unknown endpoint, a trailing
    slash, or queryrecord without both ids (the published routes above match first)."""
    return await _serve(request, appid, rest)
