"""What a client can send over HTTP, and what it gets for it (issue 11; issue 10 item 8).

Every test drives the real application in-process (``httpx.ASGITransport``) over a real
SQLite database built by ``bootstrap``, as ``cloudrec serve`` builds it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from cloudrec.api.app import create_app
from cloudrec.bootstrap import Container, bootstrap
from cloudrec.config import load_settings
from cloudrec.core.tasks import Desired, RecordingSpec, Task, TaskState
from tests.jocloud import JoCloud
from tests.zego import Zego

APP = 4242
LOOPBACK = ("127.0.0.1", 40000)
MIB = 1024 * 1024


@dataclass
class World:
    c: Container
    app: FastAPI
    secret: str
    data_dir: Path
    pulled: list[int] = field(default_factory=list)

    @property
    def jocloud(self) -> JoCloud:
        return JoCloud("http://cloudrec", APP, self.secret)

    @property
    def zego(self) -> Zego:
        return Zego("http://cloudrec", APP, self.secret)


def _world(data_dir: Path, **settings: Any) -> Iterator[World]:
    c = bootstrap(load_settings({"data_dir": data_dir, **settings}, env={}))
    secret = c.apps.create(APP).server_secret
    try:
        yield World(c, create_app(c), secret, data_dir)
    finally:
        # Workers a test started (on the code before a fix): ours to end.
        for proc in list(getattr(c.executor, "_procs", {}).values()):
            proc.kill()
            proc.wait()
        c.engine.dispose()


@pytest.fixture
def world(data_dir: Path) -> Iterator[World]:
    yield from _world(data_dir)


async def _send(
    world: World, method: str, url: str, client: tuple[str, int] = LOOPBACK, **kw: Any
) -> httpx.Response:
    transport = httpx.ASGITransport(app=world.app, client=client, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://cloudrec") as http:
        return await http.request(method, url, timeout=60, **kw)


def send(world: World, method: str, url: str, **kw: Any) -> httpx.Response:
    return asyncio.run(_send(world, method, url, **kw))


def jocloud_url(uri: str) -> str:
    return f"/app/{APP}/v1/recordoss/{uri}?traceId=t-1"


def zego_start(folder: str = "record/") -> dict[str, Any]:
    return {
        "RoomId": "room1",
        "RecordInputParams": {"RecordMode": 1, "StreamType": 3},
        "RecordOutputParams": {"OutputFileFormat": "mp4", "OutputFolder": folder},
        "StorageParams": {
            "Vendor": 10,
            "Region": "us-east-1",
            "Bucket": "b",
            "AccessKeyId": "AK",
            "AccessKeySecret": "SK",
            "EndPoint": "s3.example.invalid",
        },
    }


def add_task(world: World, task_id: str, resource_id: str | None = None, **fields: Any) -> None:
    """A task row as ``TaskService.start`` writes it, moved on (``fields``) as a worker
    would move it: through the real repository."""
    task = Task(
        task_id=task_id,
        app_id=APP,
        spec=RecordingSpec(room_id="room1", dialect="zego"),
        state=TaskState.RECORDING,
        desired=Desired.RUNNING,
        created_at=datetime.now(UTC),
        resource_id=resource_id,
    )
    with world.c.uow() as uow:
        uow.tasks.add(task, None)
        if fields:
            uow.tasks.update(task_id, **fields)
        uow.commit()


# -- 1. paths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "folder", ["../../../../tmp/x", "record/../../x", "a/./b", "a\\..\\b", "a\x00b", "a\nb"]
)
def test_a_zego_output_folder_that_leaves_the_task_directory_is_refused_naming_the_field(
    world, folder
):
    """Bug (issue 11): OutputFolder kept its '..' parts, so "../../../../tmp/x" wrote the
    recordings outside the spool."""
    r = send(world, "POST", "/", params=world.zego.signed("StartRecord"), json=zego_start(folder))
    answer = r.json()
    assert (r.status_code, answer["Code"]) == (200, 300000004), answer
    assert "RecordOutputParams.OutputFolder" in answer["Message"]
    assert not (world.data_dir / "spool").exists()  # no task, no worker, nothing written


def test_a_zego_output_folder_of_plain_parts_is_kept(world):
    r = send(
        world,
        "POST",
        "/",
        params=world.zego.signed("StartRecord"),
        json=zego_start("/live/day-1/"),
    )
    assert r.json()["Code"] == 0, r.json()
    [task] = world.c.tasks.page(
        APP, None, True, datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC), 0, 10
    )[1]
    assert task.spec.output_prefix == ("live", "day-1")


@pytest.mark.parametrize("prefix", [["..", "x"], ["a/../b"], ["."], ["a\\b"]])
def test_a_jocloud_fileprefix_that_leaves_the_task_directory_is_refused(world, prefix):
    """issue 11: fileprefix parts are [A-Za-z0-9] only (the document's rule), so none climbs."""
    jo = world.jocloud
    body = jo.start_body("resid-x", "room1", "u1")
    body["storagecfg"]["fileprefix"] = prefix
    r = send(world, "POST", jocloud_url("startrecord"), json=body, headers=jo.headers())
    answer = r.json()
    assert (r.status_code, answer["code"]) == (200, 2101), answer
    assert "storagecfg.fileprefix" in answer["message"]


# -- 3. body size -----------------------------------------------------------------------------


def _streamed(world: World, total: int, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    """``total`` bytes of a JSON object, counting in ``world.pulled`` what was read of it."""

    async def body() -> AsyncIterator[bytes]:
        world.pulled.append(0)
        head = b'{"pad": "'
        yield head
        world.pulled[-1] += len(head)
        sent = len(head)
        while sent < total - 2:
            part = b"x" * min(chunk, total - 2 - sent)
            yield part
            sent += len(part)
            world.pulled[-1] += len(part)
        yield b'"}'
        world.pulled[-1] += 2

    return body()


DIALECTS = {
    "jocloud": (lambda w: jocloud_url("startrecord"), lambda w: {}, lambda a: a["code"] == 2101),
    "zego": (
        lambda w: "/",
        lambda w: w.zego.signed("StartRecord"),
        lambda a: a["Code"] == 300000004,
    ),
    "hooks": (lambda w: "/hooks/rtmp/on_publish", lambda w: {}, lambda a: "error" in a),
}


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_a_48_mb_body_is_refused_with_413_in_the_dialects_envelope_unread(
    world, dialect, declared, caplog
):
    """Bug (issue 11): request bodies were read whole with no limit: a 48 MB body was parsed
    and answered 200, ~42 MB held."""
    path, params, envelope = DIALECTS[dialect]
    total = 48 * MIB
    headers = {**world.jocloud.headers(), "Content-Type": "application/json"}
    if declared:
        headers["Content-Length"] = str(total)
    r = send(
        world,
        "POST",
        path(world),
        params=params(world),
        content=_streamed(world, total),
        headers=headers,
    )
    assert r.status_code == 413, r.text
    answer = r.json()
    assert envelope(answer), answer
    read = world.pulled[0] if world.pulled else 0
    # Declared: refused before the first byte; chunked: at most the limit and one chunk.
    assert read == 0 if declared else read <= MIB + 64 * 1024, read
    [logged] = [r for r in caplog.records if r.getMessage() == "http.body_refused"]
    assert logged.fields["limit"] == MIB  # type: ignore[attr-defined]


def test_a_body_within_the_limit_is_answered(world):
    jo = world.jocloud
    body = jo.start_body("resid-x", "room1", "u1", pad="x" * (MIB - 4096))
    r = send(world, "POST", jocloud_url("startrecord"), json=body, headers=jo.headers())
    assert (r.status_code, r.json()["code"]) == (200, 4012)  # read, parsed: the resid is unknown


def test_the_hooks_refuse_a_stranger_before_reading_the_body(world):
    """Bug (issue 11): the nginx hooks read the body before checking the caller."""
    r = send(
        world,
        "POST",
        "/hooks/rtmp/on_publish",
        client=("203.0.113.9", 40000),
        content=_streamed(world, 512 * 1024),
    )
    assert r.status_code == 403 and "neither loopback nor has the secret" in r.text
    assert world.pulled in ([], [0])  # not a byte of it read


# -- 4. pull URLs from configuration ---------------------------------------------------------


def hook_form(world: World) -> dict[str, str]:
    """What nginx-rtmp posts to on_publish for a publisher of cam1 in room1 (tcurl is the
    URL the publisher connected to: the client's to choose)."""
    return {
        "call": "publish",
        "app": "live",
        "name": "cam1",
        "tcurl": "http://10.0.0.1:8080/steal",
        "addr": "198.51.100.7",
        "appid": str(APP),
        "room": "room1",
        "uid": "bob",
        "token": world.c.apps.publish_token(APP, "room1", "cam1", 600),
    }


def test_a_hook_lists_the_pull_url_from_configuration_not_the_publishers_tcurl(world):
    """Bug (issue 11): the hooks built the pull URL from the client-controlled tcurl, so a
    publisher could point recorders at http://10.…, file: or concat:."""
    form = hook_form(world)
    r = send(world, "POST", "/hooks/rtmp/on_publish", data=form)
    assert r.status_code == 200, r.text
    [stream] = world.c.rooms.live(APP, "room1")
    assert stream.pull_url == "rtmp://127.0.0.1:1935/live/cam1"
    done = send(world, "POST", "/hooks/rtmp/on_publish_done", data=form)
    assert done.text == "ok\n" and world.c.rooms.live(APP, "room1") == []


# -- 6. the event loop never waits on the database --------------------------------------------


@pytest.mark.parametrize("endpoint", ["jocloud applyrecord", "zego StopRecord", "hook on_publish"])
def test_the_event_loop_answers_while_a_request_waits_for_a_database_lock(world, endpoint):
    """Bug (issue 11): JoCloud handlers were ``async`` but called the repositories directly
    (and ZEGO StopRecord, PauseRecord, DescribeRecordStatus): one SQLite lock wait froze the
    event loop that carries every HTTP request and RTMP connection."""
    if endpoint.startswith("jocloud"):
        method, url, kw = "GET", jocloud_url("applyrecord"), {"headers": world.jocloud.headers()}
    elif endpoint.startswith("zego"):
        add_task(world, "TASKZEGO00000001")
        kw = {"params": world.zego.signed("StopRecord"), "json": {"TaskId": "TASKZEGO00000001"}}
        method, url = "POST", "/"
    else:
        method, url, kw = "POST", "/hooks/rtmp/on_publish", {"data": hook_form(world)}
    db = sqlite3.connect(world.data_dir / "cloudrec.db", check_same_thread=False)
    db.isolation_level = None
    db.execute("BEGIN IMMEDIATE")  # the write lock, held by another connection
    answered, writing, released = threading.Event(), threading.Event(), threading.Event()

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            writing.set()  # the request's write: it waits for the lock from here on

    event.listen(world.c.engine, "before_cursor_execute", on_execute)

    def release() -> None:  # once the loop has answered, or after 5 s on the old code
        answered.wait(timeout=5)
        db.execute("ROLLBACK")
        released.set()

    holder = threading.Thread(target=release)
    holder.start()

    async def scenario() -> tuple[bool, httpx.Response, httpx.Response]:
        locked = asyncio.create_task(_send(world, method, url, **kw))
        # On the old code the loop itself is stuck in the write, so this returns only after
        # the lock is released.
        await asyncio.to_thread(writing.wait, 10)
        health = await _send(world, "GET", "/healthz")
        waiting = not released.is_set()  # answered while the lock was still held
        answered.set()
        return waiting, health, await locked

    try:
        waiting, health, locked = asyncio.run(scenario())
    finally:
        answered.set()
        holder.join()
        db.close()
    assert health.status_code == 200
    assert waiting, "the event loop answered only after the database lock was released"
    if endpoint.startswith("hook"):
        assert (locked.status_code, locked.text) == (200, "ok\n")
        return
    answer = locked.json()
    assert answer.get("code", answer.get("Code")) == 0, answer


# -- 7. malformed bodies -------------------------------------------------------------------


MALFORMED = {
    "nested 5000 deep": b'{"RoomId": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "5000-digit integer": b'{"RoomId": ' + b"9" * 5000 + b"}",
    "NaN": b'{"RoomId": NaN}',
    "not UTF-8": b'{"RoomId": "\xff\xfe"}',
    "cut short": b'{"RoomId": "r',
}


@pytest.mark.parametrize("body", list(MALFORMED))
@pytest.mark.parametrize("dialect", ["jocloud", "zego"])
def test_a_malformed_body_gets_the_dialects_parameter_error(world, dialect, body, caplog):
    """Bug (issue 11): a deeply nested JSON body was answered HTTP 500 with a traceback
    (RecursionError in parsing)."""
    raw = MALFORMED[body]
    if dialect == "jocloud":
        r = send(
            world, "POST", jocloud_url("startrecord"), content=raw, headers=world.jocloud.headers()
        )
        code = r.json()["code"]
    else:
        r = send(world, "POST", "/", params=world.zego.signed("StartRecord"), content=raw)
        code = r.json()["Code"]
    assert r.status_code == 200
    assert code == (2101 if dialect == "jocloud" else 300000004), r.text
    assert "not JSON" in r.text
    assert not [rec for rec in caplog.records if rec.exc_info]  # no traceback logged


# -- issue 10 item 8: queryrecord after a stop -----------------------------------------------


def test_queryrecord_answers_4013_once_stoprecord_was_called(world):
    """Bug (issue 10 item 8): queryrecord answered ``status: 1`` after stoprecord while the
    task was stopping or uploading (up to 3 days with a failing bucket); the document: after
    a stop, 4013."""
    jo = world.jocloud
    add_task(world, "rec1", resource_id="res1")
    q = send(world, "GET", jocloud_url("queryrecord/room1/rec1"), headers=jo.headers()).json()
    assert (q["code"], q["data"]["status"]) == (0, 1)
    stop = {"resid": "res1", "appid": APP, "roomid": "room1", "recordid": "rec1"}
    r = send(world, "POST", jocloud_url("stoprecord"), json=stop, headers=jo.headers())
    assert r.json()["code"] == 0
    q = send(world, "GET", jocloud_url("queryrecord/room1/rec1"), headers=jo.headers()).json()
    assert q["code"] == 4013, q


@pytest.mark.parametrize("state", [TaskState.STOPPING, TaskState.UPLOADING])
def test_queryrecord_answers_4013_while_a_task_that_stopped_on_its_own_delivers(world, state):
    """issue 10 item 8: a task that stopped by itself (idle, maximum time) is stopped too."""
    jo = world.jocloud
    add_task(world, "rec2", resource_id="res2", state=state)
    q = send(world, "GET", jocloud_url("queryrecord/room1/rec2"), headers=jo.headers()).json()
    assert q["code"] == 4013, q
    mix = {"resid": "res2", "appid": APP, "roomid": "room1", "recordid": "rec2", "mixconfig": {}}
    r = send(world, "POST", jocloud_url("updatemixrecord"), json=mix, headers=jo.headers())
    assert r.json()["code"] == 4013
