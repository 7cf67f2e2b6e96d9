"""Recording tasks in cloudrec's own words: start, list, show, stop, and fetch a task's files
from this server while they are in its spool or backup store.

``/v1/apps/{appid}/tasks[/{task_id}[/stop | /files/{name}]]``, HTTP Basic (app id, server
secret); errors as ``{"error": {"kind", "message"}}``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse

from cloudrec.api.auth import authenticate_basic
from cloudrec.api.masking import request_record
from cloudrec.api.task_models import StartTask
from cloudrec.bootstrap import Container
from cloudrec.core.errors import CloudrecError
from cloudrec.core.rooms import check_id
from cloudrec.core.tasks import FileFormat, RecordedFile, Task
from cloudrec.storage.s3 import resolve_endpoint

router = APIRouter(prefix="/v1/apps/{appid}", tags=["tasks"])
Auth = Annotated[str | None, Header(description="HTTP Basic: app id, server secret")]


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


def _container(request: Request, authorization: str | None, appid: int) -> Container:
    c: Container = request.app.state.container
    authenticate_basic(c.apps, authorization, appid)
    return c


@router.post("/tasks", summary="Start recording a room (storage optional)", status_code=201)
def start_task(
    appid: int, body: StartTask, request: Request, authorization: Auth = None
) -> dict[str, Any]:
    c = _container(request, authorization, appid)
    spec = body.spec()
    storage = body.storage.target() if body.storage is not None else None
    if spec.callback_url:
        c.check_target("callback_url", spec.callback_url)
    if storage is not None and not c.settings.storage_endpoint_override:
        c.check_target("storage.endpoint", resolve_endpoint(storage).url)
    task = c.tasks.start(appid, spec, storage, request=request_record(body.model_dump()))
    return task_view(c, task)


@router.get("/tasks", summary="Tasks of the app, newest first, one page")
def list_tasks(
    appid: int,
    request: Request,
    authorization: Auth = None,
    room_id: Annotated[str | None, Query(max_length=128)] = None,
    active: Annotated[bool, Query(description="recording (true) or ended (false)")] = True,
    hours: Annotated[int, Query(ge=1, le=24 * 90, description="created in the last hours")] = 24,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    c = _container(request, authorization, appid)
    if room_id is not None:
        check_id("room_id", room_id)
    until = datetime.now(UTC) + timedelta(minutes=1)
    total, tasks = c.tasks.page(
        appid, room_id, active, until - timedelta(hours=hours), until, offset, limit
    )
    return {
        "app_id": appid,
        "total": total,
        "offset": offset,
        "tasks": [
            {
                "task_id": t.task_id,
                "room_id": t.spec.room_id,
                "mode": t.spec.mode.value,
                "state": t.state.value,
                "created_at": _iso(t.created_at),
                "ended_at": _iso(t.ended_at),
                "end_reason": t.end_reason,
            }
            for t in tasks
        ],
    }


@router.get("/tasks/{task_id}", summary="A recording task: state, files and events")
def get_task(
    appid: int, task_id: str, request: Request, authorization: Auth = None
) -> dict[str, Any]:
    c = _container(request, authorization, appid)
    return task_view(c, c.tasks.get(appid, task_id))


@router.post("/tasks/{task_id}/stop", summary="Stop a recording; its files are then delivered")
def stop_task(
    appid: int, task_id: str, request: Request, authorization: Auth = None
) -> dict[str, Any]:
    c = _container(request, authorization, appid)
    return task_view(c, c.tasks.stop(appid, task_id))


MEDIA_TYPES = {
    FileFormat.MP4: "video/mp4",
    FileFormat.FLV: "video/x-flv",
    FileFormat.HLS: "application/vnd.apple.mpegurl",
    FileFormat.TS: "video/mp2t",
    FileFormat.AAC: "audio/aac",
    FileFormat.MP3: "audio/mpeg",
    FileFormat.OGG: "audio/ogg",
    FileFormat.JPG: "image/jpeg",
    FileFormat.SOUND_WAVE: "application/json",
}


def local_copy(f: RecordedFile) -> Path | None:
    """Where this server holds the file: its backup copy, else its spool copy (a file that is
    uploaded has neither)."""
    for where in (f.backup_path, f.path):
        if where and Path(where).is_file():
            return Path(where)
    return None


@router.get(
    "/tasks/{task_id}/files/{name:path}",
    summary="A file of the task, from this server's spool or backup store (HTTP ranges)",
    response_class=FileResponse,
)
def get_file(
    appid: int, task_id: str, name: str, request: Request, authorization: Auth = None
) -> FileResponse:
    c = _container(request, authorization, appid)
    task = c.tasks.get(appid, task_id)
    found = next((f for f in c.tasks.files(task.task_id) if f.name == name), None)
    if found is None:
        raise CloudrecError.not_found(f"recording {task_id!r} has no file {name!r}")
    path = local_copy(found)
    if path is None:
        where = f" (uploaded: {found.url})" if found.url else ""
        raise CloudrecError.not_found(f"file {name!r} is not on this server{where}")
    return FileResponse(
        path,
        media_type=MEDIA_TYPES.get(found.format, "application/octet-stream"),
        filename=name.rsplit("/", 1)[-1],
        content_disposition_type="inline",
    )


def task_view(c: Container, task: Task) -> dict[str, Any]:
    """A task as cloudrec's own API answers it: state, files with their upload attempts,
    callbacks with theirs, events."""
    return {
        "task_id": task.task_id,
        "app_id": task.app_id,
        "room_id": task.spec.room_id,
        "mode": task.spec.mode.value,
        "state": task.state.value,
        "desired": task.desired.value,
        "created_at": _iso(task.created_at),
        "started_at": _iso(task.started_at),
        "ended_at": _iso(task.ended_at),
        "heartbeat_at": _iso(task.heartbeat_at),
        "attempt": task.attempt,
        "node": task.node,
        "end_reason": task.end_reason,
        "error": task.error,
        "files": [
            {
                "name": f.name,
                "format": f.format.value,
                "status": f.status.value,
                "stream_id": f.stream_id,
                "user_id": f.user_id,
                "size": f.size,
                "duration_ms": f.duration_ms,
                "width": f.width,
                "height": f.height,
                "track_type": int(f.track_type),
                "begin_ms": f.begin_ms,
                "complete": f.complete,
                "url": f.url,
                "upload_attempts": [
                    {
                        "target": a.target,
                        "at": a.at.isoformat(),
                        "ok": a.ok,
                        "error_kind": a.error_kind,
                        "error": a.error,
                        "duration_ms": a.duration_ms,
                    }
                    for a in c.delivery.upload_attempts(f.id or 0)
                ],
            }
            for f in c.tasks.files(task.task_id)
        ],
        "callbacks": [
            {
                "event": cb.event,
                "message_id": cb.message_id,
                "url": cb.url,
                "status": cb.status,
                "attempts": [
                    {
                        "at": a.at.isoformat(),
                        "http_status": a.http_status,
                        "error": a.error,
                        "duration_ms": a.duration_ms,
                    }
                    for a in attempts
                ],
            }
            for cb, attempts in c.delivery.callbacks(task.task_id)
        ],
        "events": [
            {"kind": kind, "at": at.isoformat(), "detail": detail}
            for kind, at, detail in c.tasks.events(task.task_id)
        ],
    }
