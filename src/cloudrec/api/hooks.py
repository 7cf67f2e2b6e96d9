"""Publish hooks for an external media server (nginx-rtmp ``on_publish``/``on_publish_done``).

nginx-rtmp POSTs ``application/x-www-form-urlencoded`` fields ``call, addr, clientid, app,
flashver, swfurl, tcurl, pageurl, name, type`` followed by the publish name's query string.  A
publisher uses ``rtmp://NGINX/{application}/{streamid}?appid=N&room=R&uid=U&token=T`` (``appid``
may be omitted when the nginx application is named by the app id).  2xx allows the publish, 403
refuses it.  The stream is then pulled from ``{hook_rtmp_base}/{app}/{name}`` (a setting; the
client's ``tcurl`` is not trusted).

Hooks are accepted from loopback clients, or from anywhere with ``?secret=`` equal to the
``hook_secret`` setting; the caller is checked before the body is read.
"""

from __future__ import annotations

import hmac
import logging
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, BackgroundTasks, Request, Response
from starlette.concurrency import run_in_threadpool

from cloudrec.bootstrap import Container
from cloudrec.core.errors import CloudrecError
from cloudrec.core.paths import part_problem
from cloudrec.core.rooms import StreamMeta, check_id
from cloudrec.core.service import PublishTarget, is_loopback
from cloudrec.media.probe import probe_stream

router = APIRouter(prefix="/hooks/rtmp", tags=["hooks"])
log = logging.getLogger("cloudrec.hooks")
SOURCE = "hook"


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", "replace")  # bounded: BodyLimit
    return dict(parse_qsl(body, keep_blank_values=True))


def _check_caller(request: Request, c: Container) -> None:
    secret = c.settings.hook_secret
    given = request.query_params.get("secret", "")
    if secret and hmac.compare_digest(secret, given):
        return
    client = request.client.host if request.client else ""
    if not is_loopback(client):
        raise CloudrecError.permission_denied("hook caller is neither loopback nor has the secret")


def _target(c: Container, form: dict[str, str]) -> PublishTarget:
    app, name = form.get("app", "").strip("/"), form.get("name", "")
    app_s = form.get("appid") or (app if app.isdigit() else "")
    if not app_s.isdigit():
        raise CloudrecError.invalid_argument(
            f"no app id: add appid=N to the stream name's query (nginx app {app!r})"
        )
    room = form.get("room", "")
    args: dict[str, str] = {k: form[k] for k in ("uid", "token") if k in form}
    stream_name = name + ("?" + urlencode(args) if args else "")
    return c.rooms.understand(int(app_s), room, stream_name)


def pull_url(c: Container, form: dict[str, str]) -> str:
    """``{hook_rtmp_base}/{app}/{name}``: where workers pull the stream, from configuration.
    The publisher's own ``tcurl`` is never used: it could point recorders at any URL
    (issue 11)."""
    app, name = form.get("app", "").strip("/"), form.get("name", "")
    for what, part in (("app", app), ("name", name)):
        check_id(f"hook field {what}", part)
        if (problem := part_problem(part)) is not None:
            raise CloudrecError.invalid_argument(f"hook field {what} {part!r} {problem}")
    return f"{c.settings.hook_rtmp_base.rstrip('/')}/{app}/{name}"


def _refuse(exc: CloudrecError) -> Response:
    return Response(exc.message + "\n", status_code=403, media_type="text/plain")


@router.post("/on_publish", summary="nginx-rtmp on_publish: 2xx allows, 403 refuses")
async def on_publish(request: Request, background: BackgroundTasks) -> Response:
    c: Container = request.app.state.container
    try:  # the caller first: nothing of the body is read for a stranger
        _check_caller(request, c)
    except CloudrecError as exc:
        client = request.client.host if request.client else ""
        await run_in_threadpool(c.rooms.refused, None, None, None, None, client, exc)
        return _refuse(exc)
    form = await _form(request)
    answer, published = await run_in_threadpool(_publish, c, form)
    if published is not None:
        background.add_task(_probe_and_update, c, *published)
    return answer


def _publish(
    c: Container, form: dict[str, str]
) -> tuple[Response, tuple[PublishTarget, str] | None]:
    """Allow (and list) or refuse a publish (in a worker thread: it waits on the database)."""
    addr = form.get("addr", "")
    try:
        target = _target(c, form)
        url = pull_url(c, form)
    except CloudrecError as exc:
        c.rooms.refused(None, form.get("room"), form.get("name"), form.get("uid"), addr, exc)
        return _refuse(exc), None
    try:
        c.rooms.authorize_publish(target, addr)
        c.rooms.published(target, StreamMeta(), url, SOURCE, addr)
    except CloudrecError as exc:
        return _refuse(exc), None
    return Response("ok\n", media_type="text/plain"), (target, url)


@router.post("/on_publish_done", summary="nginx-rtmp on_publish_done: the stream has ended")
async def on_publish_done(request: Request) -> Response:
    c: Container = request.app.state.container
    try:
        _check_caller(request, c)
    except CloudrecError as exc:
        return _refuse(exc)
    form = await _form(request)
    closed = await run_in_threadpool(_unpublish, c, form)
    return Response(("ok" if closed else "not live") + "\n", media_type="text/plain")


def _unpublish(c: Container, form: dict[str, str]) -> bool:
    try:
        url = pull_url(c, form)
    except CloudrecError:
        return False  # never listed
    return c.rooms.unpublished_by_url(SOURCE, url, "publisher left", form.get("addr", ""))


def _probe_and_update(c: Container, target: PublishTarget, url: str) -> None:
    """nginx lets a stream be played only after on_publish answers: probe it afterwards."""
    try:
        meta = probe_stream(url, timeout_s=10.0)
    except CloudrecError as exc:
        log.warning("stream.probe_failed", extra={"fields": {"url": url, "error": exc.message}})
        return
    c.rooms.update_meta(target, meta)
