"""The ZEGO Cloud Recording dialect: ``GET|POST /?Action=...`` with the common parameters in
the query and the body as JSON whatever the Content-Type says.

Each Action is also served on a path of its own, ``POST /zego/{Action}``, where the OpenAPI
document publishes it with its schemas (api/zego/openapi.py says why).

Every answer is HTTP 200 with ``{Code, Message, RequestId, Data?}``.  Unknown query parameters
and unknown body fields are ignored (some clients send ``IsTest=true`` or a ``RoomId`` in
StopRecord).  Rate limits per AppId: StartRecord and StopRecord 50/s, the rest 10/s.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from limits import RateLimitItemPerSecond
from limits.strategies import RateLimiter
from starlette.concurrency import run_in_threadpool

from cloudrec.api.bodies import parse_json, refuse_nul
from cloudrec.api.masking import request_record
from cloudrec.api.zego import codes, openapi
from cloudrec.api.zego.auth import verify
from cloudrec.api.zego.callbacks import FILE_STATUS
from cloudrec.api.zego.schemas import parse_layout, parse_start
from cloudrec.bootstrap import Container
from cloudrec.core.errors import CloudrecError
from cloudrec.core.mixing import MixSpec
from cloudrec.core.tasks import FileFormat, FileStatus, RecordMode, Task, TaskState
from cloudrec.storage.s3 import resolve_endpoint

router = APIRouter(tags=["zego"])
log = logging.getLogger("cloudrec.api.zego")

FAST = RateLimitItemPerSecond(50)
SLOW = RateLimitItemPerSecond(10)
QUERY_WINDOW = timedelta(days=3)
# Pages past this hold nothing (200 tasks per app at once, 3 days), and the row offset of a
# larger one does not fit the database's integer (issue 11: schemathesis, HTTP 500).
MAX_PAGE_OFFSET = 1_000_000
PUBLISHED_PREFIX = "/zego"  # POST /zego/{Action}: one published operation per Action
# Handlers are plain functions run in a worker thread (STYLE.md 12: they wait on the database).
Handler = Callable[[Container, int, dict[str, Any], dict[str, str]], dict[str, Any]]


def new_task_id() -> str:
    """16 characters, the shape of ZEGO's TaskId (``X3CgNeE4I1qAAABN``)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(12)).decode()


def _status(task: Task) -> int:
    """DescribeRecordStatus Status: 1 initialising, 2 recording, 3 ended, 4 ended abnormally,
    5 paused."""
    if task.state is TaskState.FAILED:
        return 4
    if task.state in (TaskState.COMPLETED, TaskState.UPLOADING) or task.ended_at:
        return 3
    if task.state is TaskState.PAUSED:
        return 5
    return 1 if task.state is TaskState.INITIALISING else 2


def _ms(at: datetime | None) -> int:
    return int(at.timestamp() * 1000) if at else 0


def _task_id(body: dict[str, Any]) -> str:
    task_id = body.get("TaskId")
    if not isinstance(task_id, str) or not task_id:
        raise CloudrecError.invalid_argument("missing TaskId (a string)")
    return task_id


def _zego_task(c: Container, app_id: int, task_id: str) -> Task:
    task = c.tasks.get(app_id, task_id)
    if c.clock() - task.created_at > QUERY_WINDOW:
        raise CloudrecError.not_found(
            f"task {task_id!r} is older than 3 days", reason="task_unknown"
        )
    return task


def _running(c: Container, app_id: int, body: dict[str, Any]) -> Task:
    """The task named by the body's TaskId, refused (300001001) once it has stopped."""
    task_id = _task_id(body)
    task = _zego_task(c, app_id, task_id)
    if task.state.terminal or task.state is TaskState.UPLOADING:
        raise CloudrecError.failed_precondition(
            f"task {task_id!r} has stopped", reason="task_ended"
        )
    return task


def start_record(
    c: Container, app_id: int, body: dict[str, Any], query: dict[str, str]
) -> dict[str, Any]:
    spec, storage = parse_start(body)
    if spec.callback_url:
        c.check_target("CallbackUrl", spec.callback_url)
    if not c.settings.storage_endpoint_override and storage.endpoint:
        c.check_target("StorageParams.EndPoint", resolve_endpoint(storage).url)
    client = spec.extra.get("ClientTaskId")
    ref = f"zego-client:{client}" if client else None
    # The same ClientTaskId within the window is the same task (one atomic check and insert).
    task = c.tasks.start(
        app_id,
        spec,
        storage,
        None,
        new_task_id(),
        False,
        ref,
        QUERY_WINDOW,
        request=request_record(body),
    )
    return {"Data": {"TaskId": task.task_id}}


def stop_record(
    c: Container, app_id: int, body: dict[str, Any], query: dict[str, str]
) -> dict[str, Any]:
    task = _running(c, app_id, body)
    c.tasks.stop(app_id, task.task_id)
    return {}


def describe_record_status(
    c: Container, app_id: int, body: dict[str, Any], query: dict[str, str]
) -> dict[str, Any]:
    task = _zego_task(c, app_id, _task_id(body))
    files = []
    # Screenshots are no recording files: a screenshot task has no RecordFiles
    # (video-screenshot.mdx), and a mix's TakeSnapshot pictures are announced by callback.
    recorded = [f for f in c.tasks.files(task.task_id) if f.format is not FileFormat.JPG]
    for f in recorded:
        if f.format in (FileFormat.TS, FileFormat.SOUND_WAVE):
            # A segment uploaded on its own: the playlist stands for it.  A sound wave is no
            # recording: it lies beside its recording file, named after it.
            continue
        name = f.name.rsplit("/", 1)[-1]
        entry: dict[str, Any] = {
            "UserId": f.user_id or "",
            "UserName": f.user_id or "",
            "StreamId": f.stream_id or "",
            "FileId": name,
            "VideoId": "",
            "OutputFileFormat": "hls" if f.format.value == "hls" else f.format.value,
            "FileSize": f.size,
            "Duration": f.duration_ms,
            "ResolutionWidth": f.width or 0,
            "ResolutionHeight": f.height or 0,
            "MediaTrackType": int(f.track_type),
            "BeginTimestamp": f.begin_ms,
            "CustomBeginTimestamp": f.custom_begin_ms,
            "Status": FILE_STATUS[f.status],
        }
        if f.status is FileStatus.UPLOADED and f.url:
            entry["FileUrl"] = f.url
        files.append(entry)
    data: dict[str, Any] = {
        "RoomId": task.spec.room_id,
        "RecordMode": 2 if task.spec.mode is RecordMode.MIXED else 1,
        "StreamType": int(task.spec.extra.get("StreamType", 3)),
        "RecordBeginTimestamp": _ms(task.started_at or task.created_at),
        "RecordEndTimestamp": _ms(task.ended_at),
        "Status": _status(task),
    }
    if files:
        data["RecordFiles"] = files
    return {"Data": data}


def _integer(body: dict[str, Any], name: str, default: int) -> int:
    """A number field as ZEGO's clients send it: a JSON number, or its digits in a string (a
    GET's query); missing, null or 0 is ``default``.  Anything else is refused, naming the
    field (issue 11: schemathesis found ``PageSize: "x"`` and ``StartTime: 1e400`` answered
    HTTP 500)."""
    value = body.get(name)
    try:
        return int(value or default)
    except (TypeError, ValueError, OverflowError):
        raise CloudrecError.invalid_argument(f"{name} must be an integer, not {value!r}") from None


def _utc(ms: int, name: str) -> datetime:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        raise CloudrecError.invalid_argument(f"{name} {ms} is not a time (Unix ms)") from None


def describe_tasks(
    c: Container, app_id: int, body: dict[str, Any], query: dict[str, str]
) -> dict[str, Any]:
    status = body.get("Status")
    if status not in (2, 3):
        raise CloudrecError.invalid_argument("Status must be 2 (recording) or 3 (ended)")
    if body.get("StartTime") in (None, "") or body.get("EndTime") in (None, ""):
        raise CloudrecError.invalid_argument("StartTime and EndTime (Unix ms) are required")
    start, end = _integer(body, "StartTime", 0), _integer(body, "EndTime", 0)
    now_ms = _ms(c.clock())
    if start < now_ms - QUERY_WINDOW.total_seconds() * 1000 - 60_000:
        raise CloudrecError.invalid_argument("StartTime is more than 3 days ago")
    if end <= start or end - start > QUERY_WINDOW.total_seconds() * 1000:
        raise CloudrecError.invalid_argument(
            "EndTime must be after StartTime and at most 3 days later"
        )
    offset = _integer(body, "PageOffset", 1)
    size = _integer(body, "PageSize", 50)
    if not 1 <= offset <= MAX_PAGE_OFFSET or not 1 <= size <= 50:
        raise CloudrecError.invalid_argument(
            f"PageOffset must be in [1, {MAX_PAGE_OFFSET}] and PageSize in [1, 50]"
        )
    room = body.get("RoomId") or None
    if room is not None and not isinstance(room, str):
        raise CloudrecError.invalid_argument(f"RoomId must be a string, not {room!r}")
    total, tasks = c.tasks.page(
        app_id,
        room,
        status == 2,
        _utc(start, "StartTime"),
        _utc(end, "EndTime"),
        (offset - 1) * size,
        size,
    )
    return {
        "Data": {
            "PageOffset": offset,
            "PageSize": size,
            "TotalCount": total,
            "TaskidList": [
                {
                    "TaskId": t.task_id,
                    "RoomId": t.spec.room_id,
                    "RecordBeginTimestamp": _ms(t.started_at or t.created_at),
                    "Status": 2 if status == 2 else 3,
                }
                for t in tasks
            ],
        }
    }


def update_layout(
    c: Container, app_id: int, body: dict[str, Any], query: dict[str, str]
) -> dict[str, Any]:
    task = _running(c, app_id, body)
    task_id = task.task_id
    if task.spec.mode is not RecordMode.MIXED or task.spec.mix is None:
        raise CloudrecError.invalid_argument(
            f"task {task_id!r} records single streams (RecordMode 1): it has no layout"
        )
    mix = MixSpec.from_json(task.spec.mix)
    # The request describes the whole new layout: MixMode defaults to 2 and a missing
    # MixMaxResolutionStreamId gives the large region back to the first to join.  FillMode is
    # not a field of UpdateLayout: the task keeps its own.
    layout = parse_layout(body, "", task.spec.room_id, mix.width, mix.height)
    mode = body.get("MixMode", 2)
    new = replace(mix, **layout, extra={**mix.extra, "MixMode": mode})
    c.tasks.update_mix(app_id, task_id, new.to_json())
    return {}


def pause_record(
    c: Container, app_id: int, body: dict[str, Any], query: dict[str, str]
) -> dict[str, Any]:
    task = _running(c, app_id, body)
    c.tasks.pause(app_id, task.task_id)
    return {}


def resume_record(
    c: Container, app_id: int, body: dict[str, Any], query: dict[str, str]
) -> dict[str, Any]:
    task = _running(c, app_id, body)
    c.tasks.resume(app_id, task.task_id)
    return {}


def take_snapshot(
    c: Container, app_id: int, body: dict[str, Any], query: dict[str, str]
) -> dict[str, Any]:
    task = _running(c, app_id, body)
    c.tasks.take_snapshot(app_id, task.task_id)
    return {}


def whiteboard(
    c: Container, app_id: int, body: dict[str, Any], query: dict[str, str]
) -> dict[str, Any]:
    raise CloudrecError.invalid_argument(
        "UpdateWhiteboard needs ZEGO's whiteboard service, which cloudrec does not have"
    )


ACTIONS: dict[str, tuple[Handler, Any]] = {
    "StartRecord": (start_record, FAST),
    "StopRecord": (stop_record, FAST),
    "DescribeRecordStatus": (describe_record_status, SLOW),
    "DescribeTasks": (describe_tasks, SLOW),
    "UpdateLayout": (update_layout, SLOW),
    "PauseRecord": (pause_record, SLOW),
    "ResumeRecord": (resume_record, SLOW),
    "TakeSnapshot": (take_snapshot, SLOW),
    "UpdateWhiteboard": (whiteboard, SLOW),
}


def _answer(code: int, message: str, request_id: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"Code": code, "Message": message, "RequestId": request_id, **extra})


@router.api_route("/", methods=["GET", "POST"], include_in_schema=False)
async def zego(request: Request) -> JSONResponse:
    """ZEGO's own form, ``/?Action=...`` (every Action; published per Action below)."""
    return await _serve(request, dict(request.query_params))


async def _serve(request: Request, query: dict[str, str]) -> JSONResponse:
    method = request.method
    raw = await request.body()  # bounded: BodyLimit
    c: Container = request.app.state.container
    limiter = request.app.state.limiter
    return await run_in_threadpool(_handle, c, limiter, method, query, raw)


def _published(action: str) -> Callable[[Request], Awaitable[JSONResponse]]:
    """``POST /zego/{action}``: ``/?Action={action}`` on a path of its own, so that the
    OpenAPI document can give each Action its schemas (api/zego/openapi.py).  An ``Action``
    in the query must be the path's."""

    async def serve(request: Request) -> JSONResponse:
        query = dict(request.query_params)
        if query.setdefault("Action", action) != action:
            message = f"Action {query['Action']!r} in the query is not the path's {action!r}"
            return _answer(codes.INVALID_PARAMETER, message, secrets.token_hex(8))
        return await _serve(request, query)

    return serve


for _action, (_summary, _, _) in openapi.ACTIONS.items():
    router.add_api_route(
        f"{PUBLISHED_PREFIX}/{_action}",
        _published(_action),
        methods=["POST"],
        summary=f"{_action}: {_summary}",
        operation_id=f"zego_{_action}",
        openapi_extra=openapi.openapi_extra(_action),
    )


def _handle(
    c: Container, limiter: RateLimiter, method: str, query: dict[str, str], raw: bytes
) -> JSONResponse:
    """Verify, limit and answer one request (in a worker thread: it waits on the database)."""
    request_id = secrets.token_hex(8)
    action = query.get("Action", "")
    try:
        if action not in ACTIONS:
            raise CloudrecError.invalid_argument(f"unknown Action {action!r}")
        handler, limit = ACTIONS[action]
        refuse_nul(query, "the query")  # before the nonce is stored
        app_id = verify(query, _secret_lookup(c), c.clock().timestamp(), c.nonces)
        if not limiter.hit(limit, "zego", str(app_id), action):
            raise CloudrecError.resource_exhausted(
                f"more than {limit.amount} {action} requests per second", reason="rate_limited"
            )
        body: Any = parse_json(raw) if raw.strip() else {}  # JSON whatever the Content-Type
        if method == "GET":
            body = {**query, **(body if isinstance(body, dict) else {})}
        if not isinstance(body, dict):
            raise CloudrecError.invalid_argument("the body must be a JSON object")
        extra = handler(c, app_id, body, query)
    except CloudrecError as exc:
        code = codes.code_for(exc)
        log.info(
            "zego.refused",
            extra={"fields": {"action": action, "code": code, "message": exc.message}},
        )
        return _answer(code, exc.message, request_id)
    return _answer(codes.OK, "succeed", request_id, **extra)


def _secret_lookup(c: Container) -> Callable[[int], str | None]:
    def lookup(app_id: int) -> str | None:
        try:
            return c.apps.get(app_id).server_secret
        except CloudrecError:
            return None

    return lookup
