"""cloudrec's own routes in-process (httpx.ASGITransport, the real app, a real database): the
room directory, tasks, the nginx-rtmp publish hooks and the health check, with their errors
as ``{"error": {"kind", "message"}}`` and HTTP statuses."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from cloudrec.core.tasks import RecordingSpec
from tests.conftest import free_port
from tests.inprocess import InProcess, basic, in_process

APP = 1234


@pytest.fixture
def api(database_url, data_dir) -> Iterator[InProcess]:
    with in_process(database_url, data_dir, hook_secret="hooksecret") as api:
        app = api.container.apps.create(APP)
        api.auth = basic(APP, app.server_secret)
        yield api


def test_healthz_answers_ok(api):
    r = api.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_rooms_and_streams_list_what_is_live(api):
    api.publish(APP, "room1", "s1", "alice")
    api.publish(APP, "room1", "s2", "bob")
    api.publish(APP, "room2", "s1", "carol")
    r = api.get(f"/v1/apps/{APP}/rooms", headers={"Authorization": api.auth})
    assert r.status_code == 200
    rooms = r.json()["rooms"]
    assert [(x["room_id"], x["stream_count"]) for x in rooms] == [("room1", 2), ("room2", 1)]
    r = api.get(f"/v1/apps/{APP}/rooms/room1/streams", headers={"Authorization": api.auth})
    streams = r.json()["streams"]
    assert sorted((s["stream_id"], s["user_id"]) for s in streams) == [
        ("s1", "alice"),
        ("s2", "bob"),
    ]
    first = next(s for s in streams if s["stream_id"] == "s1")
    assert (first["video_codec"], first["width"], first["height"]) == ("h264", 320, 240)
    assert first["pull_url"].endswith(f"/{APP}/room1/s1") and first["source"] == "embedded"


def test_the_directory_needs_the_apps_own_credentials(api):
    path = f"/v1/apps/{APP}/rooms"
    r = api.get(path)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    assert r.json()["error"]["kind"] == "unauthenticated"
    assert api.get(path, headers={"Authorization": basic(APP, "wrong")}).status_code == 401
    assert api.get(path, headers={"Authorization": "Basic !!!"}).status_code == 401
    other = api.container.apps.create(4321)
    r = api.get(path, headers={"Authorization": basic(4321, other.server_secret)})
    assert r.status_code == 403 and "not for app 1234" in r.json()["error"]["message"]
    bad_room = api.get(
        f"/v1/apps/{APP}/rooms/{'x' * 300}/streams", headers={"Authorization": api.auth}
    )
    assert bad_room.status_code == 400 and bad_room.json()["error"]["kind"] == "invalid_argument"


def test_a_task_is_shown_with_its_state_files_and_events(api):
    api.publish(APP, "room1", "s1", "alice")
    task = api.container.tasks.start(APP, RecordingSpec(room_id="room1"), None)
    r = api.get(f"/v1/apps/{APP}/tasks/{task.task_id}", headers={"Authorization": api.auth})
    assert r.status_code == 200
    body = r.json()
    assert (body["task_id"], body["app_id"], body["room_id"]) == (task.task_id, APP, "room1")
    assert (body["state"], body["desired"], body["files"]) == ("initialising", "running", [])
    assert [e["kind"] for e in body["events"]] == ["created"]
    missing = api.get(f"/v1/apps/{APP}/tasks/nope", headers={"Authorization": api.auth})
    assert missing.status_code == 404 and missing.json()["error"]["kind"] == "not_found"
    other = api.container.apps.create(4321)
    theirs = api.get(
        f"/v1/apps/4321/tasks/{task.task_id}",
        headers={"Authorization": basic(4321, other.server_secret)},
    )
    assert theirs.status_code == 404  # another app's task does not exist for it


def hook(api: InProcess, name: str, form: dict[str, str], query: str = "") -> tuple[int, str]:
    r = api.post(
        f"/hooks/rtmp/{name}{query}",
        content=urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    return r.status_code, r.text


def publish_form(**over: str) -> dict[str, str]:
    # The stream is pulled from tcurl/name: a closed loopback port, so the probe that follows
    # the answer fails at once and changes nothing.
    form = {
        "call": "publish",
        "addr": "203.0.113.7",
        "app": str(APP),
        "tcurl": f"rtmp://127.0.0.1:{free_port()}/{APP}",
        "name": "s1",
        "room": "room1",
        "uid": "alice",
        "token": "",
    }
    return {**form, **over}


def test_hooks_allow_a_publish_list_it_and_end_it(api):
    token = api.container.apps.publish_token(APP, "room1", "s1", 60)
    form = publish_form(token=token)
    assert hook(api, "on_publish", form) == (200, "ok\n")
    [live] = api.container.rooms.live(APP, "room1")
    assert (live.stream_id, live.user_id, live.source) == ("s1", "alice", "hook")
    # From configuration (hook_rtmp_base), never the publisher's tcurl (issue 11 #4).
    assert live.pull_url == f"{api.container.settings.hook_rtmp_base}/{form['app']}/s1"
    code, text = hook(api, "on_publish", form)  # the same stream twice
    assert code == 403 and text.strip()
    assert hook(api, "on_publish_done", form) == (200, "ok\n")
    assert api.container.rooms.live(APP) == []
    assert hook(api, "on_publish_done", form) == (200, "not live\n")


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"token": "1.bad"}, "token"),
        ({"app": "live"}, "no app id"),
    ],
)
def test_hooks_refuse_a_bad_publish_with_403_and_a_message(api, over, words):
    code, text = hook(api, "on_publish", publish_form(**over))
    assert code == 403 and words in text, text
    assert api.container.rooms.live(APP) == []


def test_hooks_from_elsewhere_need_the_hook_secret(api):
    token = api.container.apps.publish_token(APP, "room1", "s1", 60)
    form = publish_form(token=token)
    api.client = ("198.51.100.9", 40000)
    code, text = hook(api, "on_publish", form)
    assert code == 403 and "neither loopback nor has the secret" in text
    assert hook(api, "on_publish", form, "?secret=wrong")[0] == 403
    assert hook(api, "on_publish_done", form)[0] == 403
    assert hook(api, "on_publish", form, "?secret=hooksecret") == (200, "ok\n")
    assert hook(api, "on_publish_done", form, "?secret=hooksecret") == (200, "ok\n")
