"""Recording tasks in cloudrec's own words: ``GET /v1/apps/{appid}/tasks/{task_id}``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request

from cloudrec.api.auth import authenticate_basic
from cloudrec.bootstrap import Container

router = APIRouter(prefix="/v1/apps/{appid}", tags=["tasks"])


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


@router.get("/tasks/{task_id}", summary="A recording task: state, files and events")
def get_task(
    appid: int,
    task_id: str,
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    c: Container = request.app.state.container
    authenticate_basic(c.apps, authorization, appid)
    task = c.tasks.get(appid, task_id)
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
