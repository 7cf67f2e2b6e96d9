"""The Agora Cloud Recording routes: ``/v1/apps/{appid}/cloud_recording/acquire``, then
``resourceid/{resourceid}/mode/{mode}/start`` and ``…/sid/{sid}/mode/{mode}/{query,stop}``.

HTTP Basic: the customer ID is the app id, the customer secret the app's server secret.
Bodies are read on the event loop; the handlers run in a worker thread (STYLE.md 12: they
wait on the database, and a synchronous stop waits for the upload).  A success is HTTP 200; a
failure is the status and body of status-codes.mdx (``codes``).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from limits import RateLimitItemPerSecond
from limits.strategies import RateLimiter
from starlette.concurrency import run_in_threadpool

from cloudrec.api.agora import answers, codes
from cloudrec.api.agora.mix import parse_update_layout
from cloudrec.api.agora.resources import issue, redeem
from cloudrec.api.agora.schemas import (
    check_mode,
    parse_acquire,
    parse_names,
    parse_start,
    parse_stop,
    parse_update,
)
from cloudrec.api.auth import parse_basic
from cloudrec.api.bodies import parse_json, refuse_nul
from cloudrec.api.masking import request_record
from cloudrec.bootstrap import Container
from cloudrec.core.apps import App
from cloudrec.core.errors import CloudrecError
from cloudrec.core.mixing import MixSpec
from cloudrec.core.tasks import Desired, Task, TaskState
from cloudrec.storage.s3 import resolve_endpoint

router = APIRouter(tags=["agora"])
log = logging.getLogger("cloudrec.api.agora")

PREFIX = "/v1/apps/{appid}/cloud_recording"
PER_SECOND = RateLimitItemPerSecond(20)  # per app, every endpoint together
# A synchronous stop ("async_stop": false) answers once the files are uploaded; Agora expects
# that within 20 s (stop.mdx).  Past it, the answer says "unknown" and the upload goes on.
STOP_WAIT_S = 20.0
POLL_S = 0.2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Call:
    """One request, read off the event loop: the handlers get bytes, never the request."""

    c: Container
    app: App
    params: dict[str, str]
    raw: bytes
    stop_wait_s: float = STOP_WAIT_S

    def body(self) -> dict[str, Any]:
        body = parse_json(self.raw or b"null")
        if not isinstance(body, dict):
            raise CloudrecError.invalid_argument("the body must be a JSON object")
        return body


Handler = Callable[[Call], dict[str, Any]]


def _authenticate(c: Container, header: str | None, appid: str) -> App:
    if not header:
        raise CloudrecError.unauthenticated("no Authorization", reason="agora_no_credentials")
    customer_id, secret = parse_basic(header)
    if customer_id != appid or not (appid.isascii() and appid.isdigit() and len(appid) <= 10):
        raise CloudrecError.unauthenticated(f"customer ID {customer_id!r} is not app {appid!r}")
    return c.apps.authenticate(int(appid), secret)


def _over_load(c: Container, app_id: int) -> None:
    total, _ = c.tasks.page(app_id, None, True, _EPOCH, c.clock() + timedelta(days=1), 0, 1)
    if total >= c.settings.max_tasks_per_app:
        raise CloudrecError.invalid_argument(
            f"app {app_id} already runs {total} recordings, its limit", reason="vendor_over_load"
        )


def acquire(call: Call) -> dict[str, Any]:
    asked = parse_acquire(call.body())
    _over_load(call.c, call.app.app_id)
    core = call.c.tasks.apply_resource(call.app.app_id)
    rid = issue(call.app.server_secret, core, asked.cname, asked.uid, asked.expired_hour)
    return {"cname": asked.cname, "uid": asked.uid, "resourceId": rid}


def _conflict(c: Container, app_id: int, cname: str, uid: str, core: str) -> None:
    """Code 53: a task of this cname and uid already records (7 if it is this resource's)."""
    _, running = c.tasks.page(app_id, cname, True, _EPOCH, c.clock() + timedelta(days=1), 0, 500)
    for task in running:
        if task.desired is Desired.STOPPED:
            continue  # exiting: its cname and uid are free again
        if task.spec.dialect == "agora" and task.spec.extra.get("uid") == uid:
            if task.resource_id == core:
                raise CloudrecError.conflict("already started", reason="resource_in_use")
            raise CloudrecError.conflict(
                f"recording {task.task_id} of cname {cname!r} and uid {uid!r} is running",
                reason="task_conflict",
            )


def start(call: Call) -> dict[str, Any]:
    c, app_id, p = call.c, call.app.app_id, call.params
    mode = check_mode(p["mode"])
    body = call.body()
    cname, uid, spec, storage = parse_start(mode, body)
    core, hours = redeem(call.app.server_secret, p["resourceid"], cname, uid)
    spec = replace(spec, extra={**spec.extra, "resourceExpiredHour": hours})
    if call.app.callback_url:  # the app's NCS URL: Agora's requests name none
        c.check_target("the app's callback URL", call.app.callback_url)
        spec = replace(spec, callback_url=call.app.callback_url)
    if not c.settings.storage_endpoint_override:
        c.check_target("clientRequest.storageConfig", resolve_endpoint(storage).url)
    if spec.mix and spec.mix.get("background_image"):
        c.check_target("transcodingConfig.backgroundImage", spec.mix["background_image"]["url"])
    _conflict(c, app_id, cname, uid, core)
    task = c.tasks.start(
        app_id,
        spec,
        storage,
        resource_id=core,
        task_id=_new_sid(),
        require_live=False,  # Agora's recorder joins an empty channel and waits maxIdleTime
        request=request_record(body),
    )
    return {"cname": cname, "uid": uid, "resourceId": p["resourceid"], "sid": task.task_id}


def _new_sid() -> str:
    return secrets.token_hex(16)  # 32 hex characters, the shape of Agora's sid


def _task(call: Call) -> Task:
    """The live task of the URL's resourceid, sid and mode; 404 once it has exited."""
    c, p = call.c, call.params
    mode = check_mode(p["mode"])
    task = c.tasks.get(call.app.app_id, p["sid"])
    core = p["resourceid"].split(".", 1)[0]
    gone = task.spec.dialect != "agora" or task.resource_id != core or task.state.terminal
    hours = int(task.spec.extra.get("resourceExpiredHour", 72))
    if gone or c.clock() > task.created_at + timedelta(hours=hours):
        raise CloudrecError.not_found(
            f"no recording {p['sid']!r} of resource {p['resourceid']!r} is running",
            reason="worker_unknown",
        )
    if task.spec.extra.get("mode") != mode:
        raise CloudrecError.invalid_argument(
            f"recording {p['sid']!r} was started in mode {task.spec.extra.get('mode')}, not {mode}"
        )
    return task


def _exiting(task: Task) -> bool:
    """Stopped, or stopping on its own (idle, maximum time): its files are being closed."""
    return task.desired is Desired.STOPPED or task.state in (
        TaskState.STOPPING,
        TaskState.UPLOADING,
    )


def update(call: Call) -> dict[str, Any]:
    """New subscription lists for a running task (update.mdx): users no longer subscribed
    have their files closed, new ones get files from now on."""
    c, p = call.c, call.params
    task = _task(call)
    cname, uid, client = parse_names(call.body())
    _same_names(task, cname, uid)
    if _exiting(task):
        raise CloudrecError.not_found("the task is exiting", reason="worker_unknown")
    users = parse_update(client, task.spec.media, task.spec.user_ids)
    c.tasks.update_users(call.app.app_id, task.task_id, users)
    return {**_names(task), "resourceId": p["resourceid"], "sid": p["sid"]}


def update_layout(call: Call) -> dict[str, Any]:
    """A new layout for a running mix, drawn from the next frame on (update-layout.mdx)."""
    c, p = call.c, call.params
    if p["mode"] != "mix":
        check_mode(p["mode"])
        raise CloudrecError.invalid_argument("updateLayout is only for mode mix")
    task = _task(call)
    cname, uid, client = parse_names(call.body())
    _same_names(task, cname, uid)
    if _exiting(task):
        raise CloudrecError.not_found("the task is exiting", reason="worker_unknown")
    mix = parse_update_layout(client, MixSpec.from_json(task.spec.mix or {}), cname)
    if mix.background_image is not None:
        c.check_target("clientRequest.backgroundImage", mix.background_image.url)
    # The subscription lists of the start stay: the layout names where users go, not who.
    c.tasks.update_mix(call.app.app_id, task.task_id, mix.to_json(), keep_users=True)
    return {**_names(task), "resourceId": p["resourceid"], "sid": p["sid"]}


def _same_names(task: Task, cname: str, uid: str) -> None:
    if (cname, uid) != (task.spec.extra["cname"], task.spec.extra["uid"]):
        raise CloudrecError.invalid_argument(
            f"cname {cname!r} and uid {uid!r} are not those of recording {task.task_id!r}"
        )


def _names(task: Task) -> dict[str, Any]:
    return {"cname": task.spec.extra["cname"], "uid": task.spec.extra["uid"]}


def query(call: Call) -> dict[str, Any]:
    task = _task(call)
    p = call.params
    server = answers.query_response(task, call.c.tasks.files(task.task_id))
    return {
        **_names(task),
        "resourceId": p["resourceid"],
        "sid": p["sid"],
        "serverResponse": server,
    }


def stop(call: Call) -> dict[str, Any]:
    c, app_id, p = call.c, call.app.app_id, call.params
    task = _task(call)
    cname, uid, async_stop = parse_stop(call.body())
    _same_names(task, cname, uid)
    if _exiting(task):
        raise CloudrecError.failed_precondition("the task is already exiting", reason="task_ended")
    task = c.tasks.stop(app_id, task.task_id)
    deadline = time.monotonic() + (0.0 if async_stop else call.stop_wait_s)
    while not task.state.terminal and time.monotonic() < deadline:
        time.sleep(POLL_S)
        task = c.tasks.get(app_id, task.task_id)
    files = c.tasks.files(task.task_id)
    if task.state.terminal and not files:
        raise CloudrecError.failed_precondition(
            "no user sent a stream in the channel", reason="no_recorded_data"
        )
    server = answers.stop_response(task, files)
    return {
        **_names(task),
        "resourceId": p["resourceid"],
        "sid": p["sid"],
        "serverResponse": server,
    }


def _answer(failure: codes.Failure, detail: str) -> JSONResponse:
    return JSONResponse(failure.body(detail), status_code=failure.status)


async def _serve(request: Request, name: str, handler: Handler) -> Response:
    c: Container = request.app.state.container
    raw = await request.body() if request.method == "POST" else b""  # bounded: BodyLimit
    params = dict(request.path_params)
    header = request.headers.get("Authorization")
    limiter: RateLimiter = request.app.state.limiter
    wait_s = getattr(request.app.state, "agora_stop_wait_s", STOP_WAIT_S)

    def answer() -> JSONResponse:  # in a worker thread: it waits on the database
        try:
            refuse_nul(params, "the URL")
            app = _authenticate(c, header, params["appid"])
            if not limiter.hit(PER_SECOND, "agora", str(app.app_id)):
                raise CloudrecError.resource_exhausted("rate limited", reason="rate_limited")
            result = handler(Call(c, app, params, raw, wait_s))
        except CloudrecError as exc:
            failure = codes.failure_for(exc)
            fields = {"endpoint": name, "status": failure.status, "code": failure.code}
            log.info("agora.refused", extra={"fields": {**fields, "message": exc.message}})
            return _answer(failure, exc.message)
        except Exception:  # a defect: Agora's 500, one log line with its traceback
            log.exception("agora.failed", extra={"fields": {"endpoint": name}})
            return _answer(codes.INTERNAL, "internal error")
        return JSONResponse(result)

    return await run_in_threadpool(answer)


def _route(name: str, handler: Handler) -> Callable[[Request], Any]:
    async def serve(request: Request) -> Response:
        return await _serve(request, name, handler)

    return serve


ENDPOINTS: list[tuple[str, str, str, Handler]] = [
    ("acquire", "POST", "/acquire", acquire),
    ("start", "POST", "/resourceid/{resourceid}/mode/{mode}/start", start),
    ("query", "GET", "/resourceid/{resourceid}/sid/{sid}/mode/{mode}/query", query),
    ("stop", "POST", "/resourceid/{resourceid}/sid/{sid}/mode/{mode}/stop", stop),
    ("update", "POST", "/resourceid/{resourceid}/sid/{sid}/mode/{mode}/update", update),
    (
        "updateLayout",
        "POST",
        "/resourceid/{resourceid}/sid/{sid}/mode/{mode}/updateLayout",
        update_layout,
    ),
]
for _name, _method, _path, _handler in ENDPOINTS:
    router.add_api_route(
        PREFIX + _path,
        _route(_name, _handler),
        methods=[_method],
        include_in_schema=False,
        name=f"agora_{_name}",
    )


@router.api_route(
    PREFIX + "/{rest:path}",
    methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
    include_in_schema=False,
)
async def no_route(rest: str) -> Response:
    """A wrong method or an unknown endpoint."""
    return _answer(codes.NO_ROUTE, "")
