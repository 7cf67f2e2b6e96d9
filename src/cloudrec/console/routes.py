"""The console's pages: sign in, rooms with their live streams, start a recording, tasks with
filters and paging, a task's timeline, files (played in the page), uploads and callbacks, and
the operator's view of workers and recent failures.

Pages are server-rendered; the parts that change while a recording runs are re-fetched by htmx
every 2 s (``…/live`` fragments).  Every form that changes something carries the session's CSRF
token.  Database work runs in the thread pool, never on the event loop.
"""

from __future__ import annotations

import hmac
import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import av
from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from limits import RateLimitItemPerMinute
from starlette.concurrency import run_in_threadpool

from cloudrec.api.rooms import stream_view
from cloudrec.api.tasks import MEDIA_TYPES, local_copy, task_view
from cloudrec.bootstrap import Container
from cloudrec.console.session import COOKIE, SESSION_S, Session, Sessions
from cloudrec.core.errors import CloudrecError
from cloudrec.core.mixing import MixSpec
from cloudrec.core.rooms import check_id
from cloudrec.core.tasks import FileFormat, RecordedFile, RecordingSpec, RecordMode, Task
from cloudrec.media.preview import preview_jpeg

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/console", include_in_schema=False)
LOGINS = RateLimitItemPerMinute(10)
PAGE = 25
MAX_PAGE = 400  # 10,000 recordings back: further is the API's (``offset``) or the CLI's


class SignInError(Exception):
    """Not signed in (or the session ran out): to the sign-in page."""


def _c(request: Request) -> Container:
    c: Container = request.app.state.container
    return c


def _session(request: Request) -> Session:
    sessions: Sessions = request.app.state.console_sessions
    session = sessions.read(request.cookies.get(COOKIE))
    if session is None:
        raise SignInError()
    return session


def _render(request: Request, name: str, session: Session | None, **ctx: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"session": session, **ctx})


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form (the body limit bounds it), one value per field."""
    raw = (await request.body()).decode("utf-8", "replace")
    try:
        fields = parse_qs(raw, max_num_fields=50)
    except ValueError as exc:  # more fields than any console form has
        raise CloudrecError.invalid_argument("the form has too many fields") from exc
    return {k: v[0] for k, v in fields.items()}


def _checked(request: Request, form: dict[str, str]) -> Session:
    session = _session(request)
    if not hmac.compare_digest(form.get("csrf", ""), session.csrf):
        raise CloudrecError.permission_denied("the form is stale: reload the page")
    return session


def _apps(c: Container, session: Session) -> list[int]:
    if session.app_id is not None:
        return [session.app_id]
    return [a.app_id for a in c.apps.list()]


def _task(c: Container, session: Session, task_id: str) -> Task:
    """The task, if the session may see it (the operator sees every app's)."""
    if not 0 < len(task_id) <= 128 or "\x00" in task_id:
        raise CloudrecError.not_found(f"recording {task_id!r} does not exist")
    with c.uow() as uow:
        task = uow.tasks.get(task_id)
    if task is None or (session.app_id is not None and task.app_id != session.app_id):
        raise CloudrecError.not_found(f"recording {task_id!r} does not exist")
    return task


# -- signing in ---------------------------------------------------------------------------
@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, error: str = "") -> HTMLResponse:
    operator = bool(_c(request).settings.admin_token)
    return _render(request, "login.html", None, error=error, operator=operator)


@router.post("/login")
async def login(request: Request) -> Response:
    c = _c(request)
    form = await _form(request)
    who = request.client.host if request.client else "?"
    limiter = request.app.state.limiter
    if not await run_in_threadpool(limiter.hit, LOGINS, "console-login", who):
        return _back_to_login("too many sign-ins from this address: wait a minute")
    token = form.get("admin_token", "")
    app_id: int | None
    if token:
        admin = c.settings.admin_token
        if not admin or not hmac.compare_digest(token, admin):
            return _back_to_login("wrong operator token")
        app_id = None
    else:
        try:
            app_id = int(form.get("app_id", ""))
            await run_in_threadpool(c.apps.authenticate, app_id, form.get("secret", ""))
        except (ValueError, CloudrecError):
            return _back_to_login("wrong app id or server secret")
    _, cookie = request.app.state.console_sessions.new(app_id)
    response = RedirectResponse("/console/rooms", status_code=303)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=SESSION_S,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/console",
    )
    return response


def _back_to_login(error: str) -> Response:
    return RedirectResponse(f"/console/login?error={quote(error)}", status_code=303)


@router.post("/logout")
async def logout(request: Request) -> Response:
    _checked(request, await _form(request))
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/")
def home() -> Response:
    return RedirectResponse("/console/rooms", status_code=303)


# -- rooms --------------------------------------------------------------------------------
def _rooms(c: Container, session: Session) -> list[dict[str, Any]]:
    rooms: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for app_id in _apps(c, session):
        for s in c.rooms.live(app_id):
            rooms.setdefault((app_id, s.room_id), []).append(stream_view(s))
    return [
        {
            "app_id": app_id,
            "room_id": room,
            "streams": sorted(streams, key=lambda s: s["stream_id"]),
        }
        for (app_id, room), streams in sorted(rooms.items())
    ]


@router.get("/rooms", response_class=HTMLResponse)
def rooms_page(request: Request, error: str = "") -> HTMLResponse:
    session = _session(request)
    rooms = _rooms(_c(request), session)
    tick = int(time.time() // 10)  # previews: a new picture every 10 s
    return _render(request, "rooms.html", session, rooms=rooms, error=error, tick=tick)


@router.get("/rooms/live", response_class=HTMLResponse)
def rooms_live(request: Request) -> HTMLResponse:
    session = _session(request)
    rooms = _rooms(_c(request), session)
    return _render(request, "_rooms.html", session, rooms=rooms, tick=int(time.time() // 10))


class Previews:
    """Preview pictures, each kept ``TTL_S`` (however many pages show it), at most ``AT_ONCE``
    being pulled at a time: a page open in many tabs costs the ingest a pull per stream per
    ``TTL_S``, never more."""

    TTL_S = 5.0
    AT_ONCE = 2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.AT_ONCE)
        self._kept: dict[tuple[int, str, str], tuple[float, bytes]] = {}

    def get(self, key: tuple[int, str, str], url: str) -> bytes:
        now = time.monotonic()
        with self._lock:
            self._kept = {k: v for k, v in self._kept.items() if now - v[0] < self.TTL_S}
            if key in self._kept:
                return self._kept[key][1]
        if not self._slots.acquire(timeout=5):
            raise CloudrecError.unavailable("previews are busy: try again")
        try:
            picture = preview_jpeg(url)
        finally:
            self._slots.release()
        with self._lock:
            self._kept[key] = (time.monotonic(), picture)
        return picture


PREVIEWS = Previews()


@router.get("/apps/{app_id}/rooms/{room_id}/streams/{stream_id}/preview.jpg")
def preview(request: Request, app_id: int, room_id: str, stream_id: str) -> Response:
    session = _session(request)
    if session.app_id is not None and session.app_id != app_id:
        raise CloudrecError.permission_denied(f"signed in as app {session.app_id}")
    check_id("room", room_id)
    check_id("stream", stream_id)
    live = [s for s in _c(request).rooms.live(app_id, room_id) if s.stream_id == stream_id]
    if not live:
        raise CloudrecError.not_found(f"stream {stream_id!r} is not live in room {room_id!r}")
    try:
        picture = PREVIEWS.get((app_id, room_id, stream_id), live[0].pull_url)
    except (LookupError, av.error.FFmpegError, OSError) as exc:
        raise CloudrecError.not_found(f"no picture of stream {stream_id!r}: {exc}") from exc
    return Response(
        picture, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=5"}
    )


@router.post("/apps/{app_id}/rooms/{room_id}/record")
async def record(request: Request, app_id: int, room_id: str) -> Response:
    """Start recording a room from the page: kept on this server (no storage)."""
    c = _c(request)
    form = await _form(request)
    session = _checked(request, form)
    if session.app_id is not None and session.app_id != app_id:
        raise CloudrecError.permission_denied(f"signed in as app {session.app_id}")
    fmt = (
        FileFormat(form.get("format", "mp4"))
        if form.get("format") in ("mp4", "flv", "hls")
        else FileFormat.MP4
    )
    if form.get("mode") == "mixed":
        layout = form.get("layout", "grid")
        if layout not in ("grid", "horizontal", "vertical", "floating"):
            layout = "grid"
        mix = MixSpec(width=1280, height=720, fps=15, gop=30, bitrate_kbps=1500, auto_layout=layout)
        spec = RecordingSpec(
            room_id=room_id, mode=RecordMode.MIXED, formats=(fmt,), mix=mix.to_json()
        )
    else:
        spec = RecordingSpec(room_id=room_id, formats=(fmt,))
    try:
        task = await run_in_threadpool(c.tasks.start, app_id, spec, None)
    except CloudrecError as exc:
        return RedirectResponse(f"/console/rooms?error={quote(exc.message)}", status_code=303)
    return RedirectResponse(f"/console/tasks/{task.task_id}", status_code=303)


# -- tasks --------------------------------------------------------------------------------
def _tasks(c: Container, session: Session, q: dict[str, str]) -> dict[str, Any]:
    active = q.get("state", "active") != "ended"
    hours = (
        min(max(int(q.get("hours") or 24), 1), 24 * 90)
        if (q.get("hours") or "24").isdigit()
        else 24
    )
    page = min(int(q["page"]), MAX_PAGE) if q.get("page", "").isdigit() else 0
    room = q.get("room") or None
    if room is not None:
        check_id("room", room)
    until = datetime.now(UTC) + timedelta(minutes=1)
    total, rows = 0, []
    for app_id in _apps(c, session):
        n, tasks = c.tasks.page(
            app_id, room, active, until - timedelta(hours=hours), until, 0, (page + 1) * PAGE
        )
        total += n
        rows += tasks
    rows.sort(key=lambda t: t.created_at, reverse=True)
    shown = rows[page * PAGE : (page + 1) * PAGE]
    return {
        "tasks": shown,
        "total": total,
        "page": page,
        "pages": max(1, -(-total // PAGE)),
        "filters": {"state": "active" if active else "ended", "hours": hours, "room": room or ""},
    }


@router.get("/tasks", response_class=HTMLResponse)
def tasks_page(request: Request) -> HTMLResponse:
    session = _session(request)
    listing = _tasks(_c(request), session, dict(request.query_params))
    return _render(request, "tasks.html", session, **listing)


@router.get("/tasks/list", response_class=HTMLResponse)
def tasks_live(request: Request) -> HTMLResponse:
    session = _session(request)
    listing = _tasks(_c(request), session, dict(request.query_params))
    return _render(request, "_tasks.html", session, **listing)


def _task_context(c: Container, session: Session, task_id: str) -> dict[str, Any]:
    task = _task(c, session, task_id)
    view = task_view(c, task)
    with c.uow() as uow:
        storage = uow.tasks.storage(task.task_id)
    sent = next((d for kind, _, d in c.tasks.events(task.task_id) if kind == "created"), "")
    try:
        as_sent = json.loads(sent) if sent else None
    except ValueError:
        as_sent = sent  # cut at its length limit
    request: dict[str, Any] = {"as sent": as_sent, "validated": task.spec.to_json()}
    if storage is not None:
        request["storage"] = {
            "vendor": storage.vendor,
            "endpoint": storage.endpoint,
            "bucket": storage.bucket,
            "region": storage.region,
            "access_key": "(hidden)",
            "secret_key": "(hidden)",
        }
    rows = {x.name: x for x in c.tasks.files(task.task_id)}
    for f in view["files"]:
        f["here"] = local_copy(rows[f["name"]]) is not None
        f["playable"] = f["here"] and f["format"] in ("mp4", "hls")
        f["href"] = f"/console/tasks/{task.task_id}/files/{quote(f['name'])}"
    return {
        "task": view,
        "app_id": task.app_id,
        "request_json": request,
        "ended": task.state.terminal,
    }


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
def task_page(request: Request, task_id: str) -> HTMLResponse:
    session = _session(request)
    return _render(request, "task.html", session, **_task_context(_c(request), session, task_id))


@router.get("/tasks/{task_id}/live", response_class=HTMLResponse)
def task_live(request: Request, task_id: str) -> HTMLResponse:
    session = _session(request)
    context = _task_context(_c(request), session, task_id)
    page = _render(request, "_task.html", session, **context)
    if context["ended"]:
        page.status_code = 286  # htmx: swap this last one in, and stop polling
    return page


@router.post("/tasks/{task_id}/{action}")
async def task_action(request: Request, task_id: str, action: str) -> Response:
    c = _c(request)
    session = _checked(request, await _form(request))
    task = await run_in_threadpool(_task, c, session, task_id)
    do = {"stop": c.tasks.stop, "pause": c.tasks.pause, "resume": c.tasks.resume}.get(action)
    if do is None:
        raise CloudrecError.not_found(f"no action {action!r}")
    await run_in_threadpool(do, task.app_id, task.task_id)
    return RedirectResponse(f"/console/tasks/{task_id}", status_code=303)


@router.get("/tasks/{task_id}/files/{name:path}")
def task_file(request: Request, task_id: str, name: str) -> FileResponse:
    """A file for playback in the page (HTTP ranges, as ``<video>`` asks for them), or a
    segment of an HLS playlist the task wrote (beside the playlist, where the player asks
    for it)."""
    c = _c(request)
    task = _task(c, _session(request), task_id)
    files = c.tasks.files(task.task_id)
    found = next((f for f in files if f.name == name), None)
    path = local_copy(found) if found is not None else None
    if found is not None and path is not None:
        return FileResponse(
            path, media_type=MEDIA_TYPES.get(found.format, "application/octet-stream")
        )
    segment = hls_segment(files, name)
    if segment is None:
        raise CloudrecError.not_found(f"file {name!r} is not on this server")
    return FileResponse(segment, media_type=MEDIA_TYPES[FileFormat.TS])


def hls_segment(files: list[RecordedFile], name: str) -> Path | None:
    """``name`` as a segment beside one of ``files``' HLS playlists: the same folder, a
    ``.ts`` name with no path in it, in the playlist's local copy's directory."""
    folder, _, base = name.rpartition("/")
    if not base.endswith(".ts") or base != Path(base).name or base.startswith("."):
        return None
    for f in files:
        if f.format is not FileFormat.HLS or f.name.rpartition("/")[0] != folder:
            continue
        playlist = local_copy(f)
        if playlist is not None and (playlist.parent / base).is_file():
            return playlist.parent / base
    return None


# -- the operator -------------------------------------------------------------------------
def _ops(c: Container) -> dict[str, Any]:
    since = datetime.now(UTC) - timedelta(hours=24)
    workers: dict[str, list[Task]] = {}
    failed: list[Task] = []
    with c.uow() as uow:
        for task in uow.tasks.active():
            workers.setdefault(task.worker or "(none)", []).append(task)
    until = datetime.now(UTC) + timedelta(minutes=1)
    for app_id in [a.app_id for a in c.apps.list()]:
        _, ended = c.tasks.page(app_id, None, False, since, until, 0, 200)
        failed += [t for t in ended if t.state.value == "failed"]
    rows = [
        {
            "worker": handle,
            "tasks": tasks,
            "heartbeat": max((t.heartbeat_at for t in tasks if t.heartbeat_at), default=None),
            **process_load(handle),
        }
        for handle, tasks in sorted(workers.items())
    ]
    return {"workers": rows, "failed": sorted(failed, key=lambda t: t.created_at, reverse=True)}


def process_load(handle: str) -> dict[str, Any]:
    """CPU seconds and resident memory of a worker process on this machine (handles
    ``local:PID`` and ``host:PID:…``); nothing for others."""
    kind, _, rest = handle.partition(":")
    pid = rest.split(":")[0]
    if kind not in ("local", "host") or not pid.isdigit():
        return {}
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return {"gone": True}
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "cpu_s": (int(fields[11]) + int(fields[12])) / ticks,  # utime + stime
        "rss_mb": int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20,
    }


@router.get("/ops", response_class=HTMLResponse)
def ops_page(request: Request) -> HTMLResponse:
    session = _session(request)
    if not session.operator:
        raise CloudrecError.permission_denied("the operator's view: sign in with the admin token")
    return _render(request, "ops.html", session, **_ops(_c(request)))
