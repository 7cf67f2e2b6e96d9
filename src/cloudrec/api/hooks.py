"""Publish hooks for an external media server (nginx-rtmp ``on_publish``/``on_publish_done``).

nginx-rtmp POSTs ``application/x-www-form-urlencoded`` fields ``call, addr, clientid, app,
flashver, swfurl, tcurl, pageurl, name, type`` followed by the publish name's query string.  A
publisher uses ``rtmp://NGINX/{application}/{streamid}?appid=N&room=R&uid=U&token=T`` (``appid``
may be omitted when the nginx application is named by the app id).  2xx allows the publish, 403
refuses it.  The stream is then pulled from ``{tcurl}/{name}``.

Hooks are accepted from loopback clients, or from anywhere with ``?secret=`` equal to the
``hook_secret`` setting.
"""

from __future__ import annotations

import hmac
import logging
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, BackgroundTasks, Request, Response

from cloudrec.bootstrap import Container
from cloudrec.core.errors import CloudrecError
from cloudrec.core.rooms import StreamMeta
from cloudrec.core.service import PublishTarget, is_loopback
from cloudrec.media.probe import probe_stream

router = APIRouter(prefix="/hooks/rtmp", tags=["hooks"])
log = logging.getLogger("cloudrec.hooks")
SOURCE = "hook"


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", "replace")
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


def _refuse(exc: CloudrecError) -> Response:
    return Response(exc.message + "\n", status_code=403, media_type="text/plain")


@router.post("/on_publish", summary="nginx-rtmp on_publish: 2xx allows, 403 refuses")
async def on_publish(request: Request, background: BackgroundTasks) -> Response:
    c: Container = request.app.state.container
    form = await _form(request)
    addr = form.get("addr", "")
    try:
        _check_caller(request, c)
        target = _target(c, form)
    except CloudrecError as exc:
        c.rooms.refused(None, form.get("room"), form.get("name"), form.get("uid"), addr, exc)
        return _refuse(exc)
    try:
        c.rooms.authorize_publish(target, addr)
        pull_url = f"{form.get('tcurl', '').rstrip('/')}/{form.get('name', '')}"
        c.rooms.published(target, StreamMeta(), pull_url, SOURCE, addr)
    except CloudrecError as exc:
        return _refuse(exc)
    background.add_task(_probe_and_update, c, target, pull_url)
    return Response("ok\n", media_type="text/plain")


@router.post("/on_publish_done", summary="nginx-rtmp on_publish_done: the stream has ended")
async def on_publish_done(request: Request) -> Response:
    c: Container = request.app.state.container
    form = await _form(request)
    try:
        _check_caller(request, c)
    except CloudrecError as exc:
        return _refuse(exc)
    pull_url = f"{form.get('tcurl', '').rstrip('/')}/{form.get('name', '')}"
    closed = c.rooms.unpublished_by_url(SOURCE, pull_url, "publisher left", form.get("addr", ""))
    return Response(("ok" if closed else "not live") + "\n", media_type="text/plain")


def _probe_and_update(c: Container, target: PublishTarget, pull_url: str) -> None:
    """nginx lets a stream be played only after on_publish answers: probe it afterwards."""
    try:
        meta = probe_stream(pull_url, timeout_s=10.0)
    except CloudrecError as exc:
        log.warning(
            "stream.probe_failed", extra={"fields": {"url": pull_url, "error": exc.message}}
        )
        return
    c.rooms.update_meta(target, meta)
