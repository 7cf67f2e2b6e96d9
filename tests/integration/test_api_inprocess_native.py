"""cloudrec's own start/list/stop API and file downloads, in-process (the real app over a real
database, no worker): requests as a user sends them, answers and refusals in cloudrec's
envelope, and files served from the spool or backup store with HTTP ranges."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from cloudrec.core.tasks import (
    FileFormat,
    FileStatus,
    RecordedFile,
    RecordingSpec,
    TaskState,
    TrackType,
)
from tests.inprocess import InProcess, basic, in_process

APP = 1234


@pytest.fixture
def api(database_url, data_dir) -> Iterator[InProcess]:
    with in_process(database_url, data_dir) as api:
        app = api.container.apps.create(APP)
        api.auth = basic(APP, app.server_secret)
        yield api


def start(api: InProcess, body: dict) -> tuple[int, dict]:
    r = api.post(f"/v1/apps/{APP}/tasks", json=body, headers={"Authorization": api.auth})
    return r.status_code, r.json()


def test_a_room_is_recorded_without_storage_and_stopped(api):
    api.publish(APP, "class-7", "s1", "alice")
    status, task = start(api, {"room_id": "class-7"})
    assert status == 201, task
    assert (task["room_id"], task["mode"], task["state"]) == ("class-7", "single", "initialising")
    assert api.executor.started == [task["task_id"]]
    spec = api.container.tasks.get(APP, task["task_id"]).spec
    assert spec.formats == (FileFormat.MP4,) and spec.dialect == "cloudrec"
    with api.container.uow() as uow:
        assert uow.tasks.storage(task["task_id"]) is None  # kept on this server
    listed = api.get(f"/v1/apps/{APP}/tasks", headers={"Authorization": api.auth}).json()
    assert [t["task_id"] for t in listed["tasks"]] == [task["task_id"]] and listed["total"] == 1
    path = f"/v1/apps/{APP}/tasks/{task['task_id']}/stop"
    stopped = api.post(path, headers={"Authorization": api.auth})
    assert stopped.status_code == 200 and stopped.json()["desired"] == "stopped"
    again = api.post(path, headers={"Authorization": api.auth})
    assert again.status_code == 412 and "already stopped" in again.json()["error"]["message"]


def test_a_mixed_start_with_storage_becomes_the_spec_asked(api):
    api.publish(APP, "r1", "s1", "alice")
    body = {
        "room_id": "r1",
        "mode": "mixed",
        "formats": ["mp4", "hls"],
        "mix": {"width": 642, "height": 360, "fps": 20, "layout": "vertical", "main_stream": "s1"},
        "storage": {
            "endpoint": "http://127.0.0.1:9000",
            "bucket": "rec",
            "access_key": "AK",
            "secret_key": "SK",
            "path_style": True,
        },
        "prefix": ["a", "b"],
    }
    status, task = start(api, body)
    assert status == 201, task
    spec = api.container.tasks.get(APP, task["task_id"]).spec
    assert spec.mix is not None
    assert (spec.mix["width"], spec.mix["fps"], spec.mix["auto_layout"]) == (644, 20, "vertical")
    assert spec.formats == (FileFormat.MP4, FileFormat.HLS) and spec.output_prefix == ("a", "b")
    with api.container.uow() as uow:
        target = uow.tasks.storage(task["task_id"])
    assert target is not None and (target.endpoint, target.path_style) == (
        "http://127.0.0.1:9000",
        True,
    )
    assert "SK" not in json.dumps(task)  # never a secret in an answer
    [created] = [e for e in task["events"] if e["kind"] == "created"]
    sent = json.loads(created["detail"])  # the request as sent, its secrets hidden
    assert sent["storage"]["secret_key"] == "(hidden)" and sent["mix"]["width"] == 642


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "body.room_id: Field required"),
        ({"room_id": "r1", "mode": "both"}, "body.mode: Input should be 'single' or 'mixed'"),
        ({"room_id": "r1", "formats": ["avi"]}, "body.formats.0"),
        ({"room_id": "r1", "mix": {"fps": 99}}, "body.mix.fps: Input should be less than"),
        ({"room_id": "r1", "mix": {}}, "mix is for mode 'mixed'"),
        ({"room_id": "r1", "media": "video", "formats": ["aac"]}, "hold audio only"),
        ({"room_id": "r1", "prefix": ["../x"]}, "prefix[0] '../x' must be"),
        ({"room_id": "r1", "prefix": [".."]}, "'..'"),
        ({"room_id": "r1", "users": ["a b"]}, "users[0] 'a b' must be"),
        ({"room_id": "r1", "extra": 1}, "body.extra: Extra inputs are not permitted"),
        ({"room_id": "r1", "callback_url": "ftp://x"}, "body.callback_url: String should match"),
        (
            {"room_id": "r1", "storage": {"bucket": "b", "access_key": "a", "secret_key": "s"}},
            "storage.endpoint is required for vendor s3",
        ),
        ({"room_id": "nobody-here"}, "room 'nobody-here' has no live stream"),
    ],
)
def test_a_wrong_start_is_refused_with_what_is_wrong(api, body, words):
    api.publish(APP, "r1", "s1", "alice")
    status, answer = start(api, body)
    assert status in (400, 412), answer
    assert words in answer["error"]["message"], answer
    assert api.executor.started == []


def test_a_malformed_body_is_a_400_in_the_envelope(api):
    for raw in (b"{", b"[" * 5000 + b"]" * 5000, b'"just a string"'):
        r = api.post(
            f"/v1/apps/{APP}/tasks",
            content=raw,
            headers={"Authorization": api.auth, "Content-Type": "application/json"},
        )
        assert r.status_code == 400, (raw[:10], r.text)
        assert r.json()["error"]["kind"] == "invalid_argument"


def test_an_unknown_path_under_v1_answers_in_the_envelope(api):
    r = api.get(f"/v1/apps/{APP}/nothing", headers={"Authorization": api.auth})
    assert r.status_code == 404 and r.json()["error"]["kind"] == "not_found"
    r = api.request("DELETE", f"/v1/apps/{APP}/tasks", headers={"Authorization": api.auth})
    assert r.status_code == 405 and "Method Not Allowed" in r.json()["error"]["message"]


def test_the_task_routes_need_the_apps_credentials(api):
    api.publish(APP, "r1", "s1", "alice")
    r = api.post(f"/v1/apps/{APP}/tasks", json={"room_id": "r1"})
    assert r.status_code == 401
    other = api.container.apps.create(4321)
    r = api.post(
        f"/v1/apps/{APP}/tasks",
        json={"room_id": "r1"},
        headers={"Authorization": basic(4321, other.server_secret)},
    )
    assert r.status_code == 403
    assert api.executor.started == []


def _recorded(api: InProcess, tmp_path, name: str, data: bytes, **fields) -> str:
    """A task with one finished file of ``data`` in the spool (or where ``fields`` say)."""
    task = api.container.tasks.start(APP, RecordingSpec(room_id="r1"), None)
    spooled = tmp_path / "spool-copy.mp4"
    spooled.write_bytes(data)
    f = RecordedFile(
        task.task_id,
        name,
        str(spooled),
        FileFormat.MP4,
        FileStatus.RECORDED,
        "s1",
        "alice",
        TrackType.AUDIO_VIDEO,
        1,
        size=len(data),
    )
    with api.container.uow() as uow:
        file_id = uow.tasks.add_file(f)
        if fields:
            uow.tasks.update_file(file_id, **fields)
        uow.tasks.update(task.task_id, state=TaskState.COMPLETED)
        uow.commit()
    return task.task_id


def test_a_file_on_this_server_is_served_whole_and_by_ranges(api, tmp_path):
    api.publish(APP, "r1", "s1", "alice")
    data = bytes(range(256)) * 40
    task_id = _recorded(api, tmp_path, "rec/a_1.mp4", data)
    url = f"/v1/apps/{APP}/tasks/{task_id}/files/rec/a_1.mp4"
    whole = api.get(url, headers={"Authorization": api.auth})
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    part = api.get(url, headers={"Authorization": api.auth, "Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert api.get(url).status_code == 401
    missing = api.get(url.replace("a_1", "b_1"), headers={"Authorization": api.auth})
    assert missing.status_code == 404 and "has no file" in missing.json()["error"]["message"]


def test_a_backed_up_file_is_served_from_the_backup_and_an_uploaded_one_says_where(api, tmp_path):
    api.publish(APP, "r1", "s1", "alice")
    backup = tmp_path / "backup-copy.mp4"
    backup.write_bytes(b"from the backup")
    task_id = _recorded(
        api,
        tmp_path,
        "rec/b.mp4",
        b"stale spool copy",
        status=FileStatus.BACKED_UP,
        backup_path=str(backup),
    )
    url = f"/v1/apps/{APP}/tasks/{task_id}/files/rec/b.mp4"
    assert api.get(url, headers={"Authorization": api.auth}).content == b"from the backup"
    gone = _recorded(
        api,
        tmp_path,
        "rec/c.mp4",
        b"",
        path=str(tmp_path / "deleted.mp4"),
        status=FileStatus.UPLOADED,
        url="https://bucket.example/rec/c.mp4",
    )
    r = api.get(f"/v1/apps/{APP}/tasks/{gone}/files/rec/c.mp4", headers={"Authorization": api.auth})
    assert r.status_code == 404
    assert "uploaded: https://bucket.example/rec/c.mp4" in r.json()["error"]["message"]


def test_the_openapi_publishes_the_start_request(api):
    spec = api.get("/openapi.json").json()
    op = spec["paths"]["/v1/apps/{appid}/tasks"]["post"]
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert {"room_id", "mode", "formats", "storage", "mix"} <= set(schema["properties"])
    assert "/v1/apps/{appid}/tasks/{task_id}/files/{name}" in spec["paths"]


def test_a_start_serve_did_not_answer_keeps_its_grace_for_the_lease_to_decide(api, monkeypatch):
    """An API process asked serve to start the worker and had no answer in time: the task is
    not handed to the reconciler as unstarted (that would start the same attempt twice)."""
    from cloudrec.core.recording import START_GRACE, StartUndecidedError

    def undecided(task_id: str, attempt: int = 1, units: int = 1) -> str:
        raise StartUndecidedError("serve did not answer")

    monkeypatch.setattr(api.executor, "start", undecided)
    api.publish(APP, "r1", "s1", "alice")
    status, answer = start(api, {"room_id": "r1"})
    assert status == 201, answer
    task = api.container.tasks.get(APP, answer["task_id"])
    assert task.worker == "starting" and task.lease_until is not None
    assert task.lease_until - task.created_at == START_GRACE
