"""The Agora Cloud Recording routes in-process (httpx.ASGITransport, the real app, a real
database): each endpoint's success and every status and code the dialect answers with
(status-codes.mdx).  No worker runs: tasks stay as the API leaves them unless a test moves
them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from cloudrec.core.errors import CloudrecError
from cloudrec.core.tasks import FileFormat, FileStatus, RecordedFile, TaskState, TrackType
from tests.fakes import FakeClock
from tests.inprocess import InProcess, basic, in_process

APP = 20001
ROOM = "room1"
BASE = f"/v1/apps/{APP}/cloud_recording"
STORAGE = {
    "vendor": 11,
    "region": 0,
    "bucket": "agorabucket",
    "accessKey": "AK-SECRET",
    "secretKey": "SK-SECRET",
    "extensionParams": {"endpoint": "s3.example.com"},
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def api(database_url, data_dir, clock) -> Iterator[InProcess]:
    with in_process(database_url, data_dir, clock=clock, max_tasks_per_app=2) as api:
        app = api.container.apps.create(APP)
        api.secret = app.server_secret
        api.auth = basic(APP, app.server_secret)
        api.app.state.agora_stop_wait_s = 0.5
        api.publish(APP, ROOM, "s1", "123")
        yield api


def call(
    api: InProcess, method: str, path: str, body: Any = None, **headers: str
) -> httpx.Response:
    hdrs = {"Authorization": api.auth, "Content-Type": "application/json", **headers}
    hdrs = {k: v for k, v in hdrs.items() if v}
    return api.request(method, BASE + path, json=body, headers=hdrs)


def acquire(api: InProcess, uid: str = "527841", cname: str = ROOM) -> str:
    r = call(api, "POST", "/acquire", {"cname": cname, "uid": uid, "clientRequest": {}})
    assert r.status_code == 200, r.text
    assert r.json()["cname"] == cname and r.json()["uid"] == uid
    rid: str = r.json()["resourceId"]
    return rid


def start_body(uid: str = "527841", **client: Any) -> dict[str, Any]:
    return {
        "cname": ROOM,
        "uid": uid,
        "clientRequest": {
            "recordingConfig": {"streamTypes": 2, "streamMode": "standard"},
            "recordingFileConfig": {"avFileType": ["hls", "mp4"]},
            "storageConfig": STORAGE,
            **client,
        },
    }


def start(api: InProcess, uid: str = "527841", mode: str = "individual") -> tuple[str, str]:
    rid = acquire(api, uid)
    r = call(api, "POST", f"/resourceid/{rid}/mode/{mode}/start", start_body(uid))
    assert r.status_code == 200, r.text
    return rid, r.json()["sid"]


def stop_body(uid: str = "527841", **client: Any) -> dict[str, Any]:
    return {"cname": ROOM, "uid": uid, "clientRequest": client}


def set_state(api: InProcess, sid: str, state: TaskState) -> None:
    with api.container.uow() as uow:
        uow.tasks.update(sid, state=state)
        uow.commit()


def assert_failure(r: httpx.Response, status: int, code: int | None, reason: str | None = None):
    assert r.status_code == status, r.text
    if code is None:
        assert set(r.json()) == {"message"}
        return
    assert set(r.json()) == {"code", "reason"} and r.json()["code"] == code, r.text
    if reason is not None:
        assert r.json()["reason"] == reason


def test_acquire_start_query_stop(api):
    rid, sid = start(api)
    assert len(sid) == 32 and int(sid, 16) >= 0
    [task] = api.container.tasks.page(APP, ROOM, True, *_range(api), 0, 10)[1]
    assert task.task_id == sid and task.spec.user_ids == () and task.spec.dialect == "agora"
    assert api.executor.started == [sid]
    q = call(api, "GET", f"/resourceid/{rid}/sid/{sid}/mode/individual/query")
    assert q.status_code == 200, q.text
    assert q.json() == {
        "cname": ROOM,
        "uid": "527841",
        "resourceId": rid,
        "sid": sid,
        "serverResponse": {
            "status": 1,
            "fileListMode": "json",
            "fileList": [],
            "sliceStartTime": 0,
        },
    }
    set_state(api, sid, TaskState.RECORDING)
    with api.container.uow() as uow:
        uow.tasks.add_file(
            RecordedFile(
                task_id=sid,
                name=f"dir/{sid}_{ROOM}_123_s1_VA_20260101000000000.m3u8",
                path="/nowhere",
                format=FileFormat.HLS,
                status=FileStatus.RECORDING,
                stream_id="s1",
                user_id="123",
                track_type=TrackType.AUDIO_VIDEO,
                begin_ms=1767225600000,
            )
        )
        uow.commit()
    q = call(api, "GET", f"/resourceid/{rid}/sid/{sid}/mode/individual/query").json()
    assert q["serverResponse"]["status"] == 5
    assert q["serverResponse"]["fileList"] == [
        {
            "fileName": f"dir/{sid}_{ROOM}_123_s1_VA_20260101000000000.m3u8",
            "trackType": "audio_and_video",
            "uid": "123",
            "mixedAllUser": False,
            "isPlayable": False,
            "sliceStartTime": 1767225600,
        }
    ]
    s = call(api, "POST", f"/resourceid/{rid}/sid/{sid}/mode/individual/stop", stop_body())
    assert s.status_code == 200, s.text  # no worker: the upload never ends, "unknown"
    assert s.json()["serverResponse"]["uploadingStatus"] == "unknown"
    assert (s.json()["cname"], s.json()["uid"], s.json()["sid"]) == (ROOM, "527841", sid)
    q = call(api, "GET", f"/resourceid/{rid}/sid/{sid}/mode/individual/query").json()
    assert q["serverResponse"]["status"] == 6
    assert_failure(
        call(api, "POST", f"/resourceid/{rid}/sid/{sid}/mode/individual/stop", stop_body()),
        400,
        49,
        "invalid operation",
    )
    set_state(api, sid, TaskState.COMPLETED)
    for method, end in (("GET", "query"), ("POST", "stop")):
        r = call(api, method, f"/resourceid/{rid}/sid/{sid}/mode/individual/{end}", stop_body())
        assert_failure(r, 404, 404, "failed to find worker")


def _range(api: InProcess) -> tuple[datetime, datetime]:
    now = api.container.clock()
    return now - timedelta(days=1), now + timedelta(days=1)


def test_a_stop_waits_for_the_upload_and_an_empty_recording_is_206_435(api):
    rid, sid = start(api)
    api.app.state.agora_stop_wait_s = 5
    timer = threading.Timer(0.5, set_state, (api, sid, TaskState.COMPLETED))
    timer.start()
    r = call(api, "POST", f"/resourceid/{rid}/sid/{sid}/mode/individual/stop", stop_body())
    timer.join()
    assert_failure(r, 206, 435, "no recorded data")


def test_async_stop_answers_at_once(api):
    rid, sid = start(api)
    api.app.state.agora_stop_wait_s = 30
    body = stop_body(async_stop=True)
    r = call(api, "POST", f"/resourceid/{rid}/sid/{sid}/mode/individual/stop", body)
    assert r.status_code == 200 and r.json()["serverResponse"]["uploadingStatus"] == "unknown"


def test_authentication_is_401_with_a_message(api):
    path = "/acquire"
    body = {"cname": ROOM, "uid": "1", "clientRequest": {}}
    assert_failure(call(api, "POST", path, body, Authorization=""), 401, None)
    assert call(api, "POST", path, body, Authorization="").json() == {"message": "Unauthorized"}
    for header in (basic(APP, "wrong"), basic(APP + 1, api.secret), "Basic !!!", "Bearer x"):
        r = call(api, "POST", path, body, Authorization=header)
        assert r.json() == {"message": "Invalid authentication credentials"}, header
        assert r.status_code == 401
    other = api.request(
        "POST",
        "/v1/apps/abc/cloud_recording/acquire",
        json=body,
        headers={"Authorization": api.auth},
    )
    assert other.status_code == 401
    # An app id of digits Python's int() refuses (a superscript, 5000 of them), named in the
    # path and the header alike: 401 before any secret is read, never a 500.
    for appid in ("\u00b2", "9" * 5000):
        r = api.request(
            "POST",
            f"/v1/apps/{appid}/cloud_recording/acquire",
            json=body,
            headers={"Authorization": basic(appid, "x")},  # type: ignore[arg-type]
        )
        assert r.json() == {"message": "Invalid authentication credentials"}, appid
        assert r.status_code == 401


def test_wrong_routes_are_404_no_route(api):
    expected = {"message": "no Route matched with those values"}
    for method, path in (
        ("GET", "/acquire"),
        ("GET", "/resourceid/x/sid/y/mode/individual/update"),
        ("GET", "/resourceid/x/sid/y/mode/mix/updateLayout"),
        ("POST", "/resourceid/x/sid/y/mode/individual/query"),
        ("DELETE", "/resourceid/x/mode/individual/start"),
        ("POST", "/nothing"),
    ):
        r = call(api, method, path, {})
        assert (r.status_code, r.json()) == (404, expected), (method, path)


def test_more_than_twenty_requests_a_second_is_429(api):
    statuses = [
        call(api, "GET", "/resourceid/x/sid/y/mode/individual/query").status_code for _ in range(25)
    ]
    assert 429 in statuses
    r = call(api, "GET", "/resourceid/x/sid/y/mode/individual/query")
    assert r.json() == {"message": "API rate limit exceeded"}


def test_start_refusals(api):
    rid = acquire(api)
    path = f"/resourceid/{rid}/mode/individual/start"
    web = call(api, "POST", f"/resourceid/{rid}/mode/web/start", start_body())
    assert_failure(web, 400, 2)
    assert "web page" in web.json()["reason"] and "browser" in web.json()["reason"]
    assert_failure(call(api, "POST", f"/resourceid/{rid}/mode/other/start", start_body()), 400, 2)
    not_json = api.request(
        "POST", BASE + path, content=b"{oops", headers={"Authorization": api.auth}
    )
    assert_failure(not_json, 400, 2)
    assert "not JSON" in not_json.json()["reason"]
    assert_failure(call(api, "POST", path, [1, 2]), 400, 2)
    # The resource was acquired for uid 527841 in room1.
    r = call(api, "POST", path, start_body(uid="1"))
    assert_failure(r, 400, 2)
    assert "acquire" in r.json()["reason"]
    bad_rid = call(api, "POST", "/resourceid/JyvK8nXHuV1BE/mode/individual/start", start_body())
    assert_failure(bad_rid, 400, 2)
    assert call(api, "POST", path, start_body()).status_code == 200
    # The same start again: 201, already started.
    assert_failure(call(api, "POST", path, start_body()), 201, 7, "already started")
    # Another resource for the same cname and uid: 53, task conflict.
    rid2 = acquire(api)
    r = call(api, "POST", f"/resourceid/{rid2}/mode/individual/start", start_body())
    assert_failure(r, 400, 53, "task conflict")


def test_a_resource_expires_after_five_minutes_and_a_sid_after_its_hours(api, clock):
    rid = acquire(api)
    clock.advance(301)
    r = call(api, "POST", f"/resourceid/{rid}/mode/individual/start", start_body())
    assert_failure(r, 400, 2)
    assert "expired" in r.json()["reason"]
    r = call(
        api,
        "POST",
        "/acquire",
        {"cname": ROOM, "uid": "9", "clientRequest": {"resourceExpiredHour": 1}},
    )
    rid = r.json()["resourceId"]
    sid = call(api, "POST", f"/resourceid/{rid}/mode/individual/start", start_body("9")).json()[
        "sid"
    ]
    query = f"/resourceid/{rid}/sid/{sid}/mode/individual/query"
    assert call(api, "GET", query).status_code == 200
    assert_failure(call(api, "GET", query.replace("individual", "mix")), 400, 2)
    assert_failure(
        call(api, "GET", query.replace(rid, rid[:-3] + "abc").replace(rid.split(".")[0], "x")),
        404,
        404,
    )
    clock.advance(3601)
    assert_failure(call(api, "GET", query), 404, 404, "failed to find worker")


def test_the_apps_limit_is_406_at_acquire_and_502_at_start(api):
    spare = acquire(api, "3")
    start(api, "1")
    start(api, "2")
    r = call(api, "POST", "/acquire", {"cname": ROOM, "uid": "4", "clientRequest": {}})
    assert_failure(r, 400, 406, "vendor_over_load")
    r = call(api, "POST", f"/resourceid/{spare}/mode/individual/start", start_body("3"))
    assert_failure(r, 500, 502, "Failed to allocate worker")


def test_acquire_refusals(api):
    r = call(api, "POST", "/acquire", {"cname": "a room?", "uid": "1", "clientRequest": {}})
    assert_failure(r, 400, 401, "invalid_channel_name")
    body = {"cname": ROOM, "uid": "1", "clientRequest": {"resourceExpiredHour": 0}}
    r = call(api, "POST", "/acquire", body)
    assert_failure(r, 400, 2)
    assert "resourceExpiredHour" in r.json()["reason"]
    r = call(api, "POST", "/acquire", {"cname": ROOM, "uid": "9" * 5000, "clientRequest": {}})
    assert_failure(r, 400, 2)  # a uid of 5000 digits: code 2, not a 500


def test_a_stop_naming_another_cname_or_uid_is_code_2(api):
    rid, sid = start(api)
    path = f"/resourceid/{rid}/sid/{sid}/mode/individual/stop"
    assert_failure(call(api, "POST", path, stop_body(uid="1")), 400, 2)
    unknown = f"/resourceid/{rid}/sid/{'0' * 32}/mode/individual/stop"
    assert_failure(call(api, "POST", unknown, stop_body()), 404, 404)


def test_a_body_larger_than_the_limit_is_413_in_agoras_envelope(api):
    big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    r = api.request("POST", BASE + "/acquire", content=big, headers={"Authorization": api.auth})
    assert r.status_code == 413 and r.json()["code"] == 2 and "larger" in r.json()["reason"]


def test_storage_keys_never_come_back(api):
    rid, sid = start(api)
    q = call(api, "GET", f"/resourceid/{rid}/sid/{sid}/mode/individual/query").text
    s = call(api, "POST", f"/resourceid/{rid}/sid/{sid}/mode/individual/stop", stop_body()).text
    for text in (q, s):
        assert "AK-SECRET" not in text and "SK-SECRET" not in text


def test_update_layout_replaces_the_layout_of_a_running_mix_and_keeps_its_users(api):
    rid = acquire(api)
    body = start_body()
    body["clientRequest"]["recordingConfig"].update(
        subscribeAudioUids=["123"],
        subscribeVideoUids=["123"],
        transcodingConfig={"width": 640, "height": 360, "mixedVideoLayout": 1},
    )
    r = call(api, "POST", f"/resourceid/{rid}/mode/mix/start", body)
    assert r.status_code == 200, r.text
    sid = r.json()["sid"]
    path = f"/resourceid/{rid}/sid/{sid}/mode/mix/updateLayout"
    layout = {
        "mixedVideoLayout": 3,
        "backgroundColor": "#0000FF",
        "layoutConfig": [
            {"uid": "123", "x_axis": 0.5, "y_axis": 0, "width": 0.5, "height": 0.5},
        ],
    }
    r = call(api, "POST", path, {"cname": ROOM, "uid": "527841", "clientRequest": layout})
    assert r.json() == {"cname": ROOM, "uid": "527841", "resourceId": rid, "sid": sid}
    task = api.container.tasks.get(APP, sid)
    mix = task.spec.mix or {}
    assert (mix["width"], mix["height"], mix["auto_layout"], mix["background_color"]) == (
        640,
        360,
        None,
        "0000FF",
    )
    assert mix["inputs"][0]["box"] == {"x": 320, "y": 0, "w": 320, "h": 180}
    assert task.spec.user_ids == ("123",)
    # "Each call overwrites all previous layout settings": the defaults come back.
    r = call(api, "POST", path, {"cname": ROOM, "uid": "527841", "clientRequest": {}})
    assert r.status_code == 200
    mix = api.container.tasks.get(APP, sid).spec.mix or {}
    assert (mix["auto_layout"], mix["inputs"], mix["background_color"]) == (
        "floating",
        [],
        "000000",
    )
    bad = {"cname": ROOM, "uid": "527841", "clientRequest": {"mixedVideoLayout": 3}}
    assert_failure(call(api, "POST", path, bad), 400, 2)
    assert_failure(call(api, "POST", path.replace("/mix/", "/individual/"), bad), 400, 2)
    assert_failure(call(api, "POST", path.replace("/mix/", "/web/"), bad), 400, 2)
    other = {"cname": ROOM, "uid": "1", "clientRequest": {}}
    assert_failure(call(api, "POST", path, other), 400, 2)
    call(api, "POST", f"/resourceid/{rid}/sid/{sid}/mode/mix/stop", stop_body(async_stop=True))
    empty = {"cname": ROOM, "uid": "527841", "clientRequest": {}}
    assert_failure(call(api, "POST", path, empty), 404, 404, "failed to find worker")
    unknown = path.replace(sid, "f" * 32)
    assert_failure(call(api, "POST", unknown, empty), 404, 404, "failed to find worker")


MALFORMED = {
    "nested 5000 deep": b'{"cname": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "5000-digit integer": b'{"cname": ' + b"9" * 5000 + b"}",
    "NaN": b'{"cname": NaN}',
    "not UTF-8": b'{"cname": "\xff\xfe"}',
    "cut short": b'{"cname": "r',
    "a NUL": b'{"cname": "a\\u0000b", "uid": "1", "clientRequest": {}}',
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_body_is_code_2_never_a_500(api, name, caplog):
    r = api.request(
        "POST",
        BASE + "/acquire",
        content=MALFORMED[name],
        headers={"Authorization": api.auth, "Content-Type": "application/json"},
    )
    assert_failure(r, 400, 2)
    assert not [rec for rec in caplog.records if rec.exc_info]  # no traceback logged


def test_a_nul_in_the_url_is_code_2(api):
    r = call(api, "GET", "/resourceid/a%00b/sid/c/mode/individual/query")
    assert_failure(r, 400, 2)


def test_update_changes_the_users_of_a_running_task(api):
    rid, sid = start(api)  # every user
    path = f"/resourceid/{rid}/sid/{sid}/mode/individual/update"

    def update(**subscribe: Any) -> httpx.Response:
        body = {"cname": ROOM, "uid": "527841", "clientRequest": {"streamSubscribe": subscribe}}
        return call(api, "POST", path, body)

    both = {
        "audioUidList": {"subscribeAudioUids": ["123"]},
        "videoUidList": {"subscribeVideoUids": ["123"]},
    }
    r = update(**both)
    assert r.json() == {"cname": ROOM, "uid": "527841", "resourceId": rid, "sid": sid}
    assert api.container.tasks.get(APP, sid).spec.user_ids == ("123",)
    # One list alone must name the users the other already has.
    assert_failure(update(audioUidList={"subscribeAudioUids": ["456"]}), 400, 2)
    assert update(audioUidList={"subscribeAudioUids": ["123"]}).status_code == 200
    assert_failure(update(videoUidList={"unsubscribeVideoUids": ["9"]}), 400, 2)
    assert_failure(update(), 400, 2)
    every = {
        "audioUidList": {"subscribeAudioUids": ["#allstream#"]},
        "videoUidList": {"subscribeVideoUids": ["#allstream#"]},
    }
    assert update(**every).status_code == 200
    assert api.container.tasks.get(APP, sid).spec.user_ids == ()
    web = {"cname": ROOM, "uid": "527841", "clientRequest": {"webRecordingConfig": {}}}
    assert_failure(call(api, "POST", path, web), 400, 2)
    call(
        api, "POST", f"/resourceid/{rid}/sid/{sid}/mode/individual/stop", stop_body(async_stop=True)
    )
    assert_failure(update(**both), 404, 404, "failed to find worker")


def test_a_stopped_tasks_cname_and_uid_are_free_for_a_new_start(api):
    rid, sid = start(api)
    body = stop_body(async_stop=True)
    assert (
        call(api, "POST", f"/resourceid/{rid}/sid/{sid}/mode/individual/stop", body).status_code
        == 200
    )
    rid, again = start(api)  # the first is still exiting (no worker here to end it)
    assert again != sid


def test_a_start_takes_the_apps_callback_url_and_refuses_a_private_one(database_url, data_dir):
    """Agora's notifications go where the app's callback URL says (Agora's requests name no
    URL); a task started before it was set has none, and one set to a private address is
    refused at the start, as a private callbackurl is in the other dialects."""
    with in_process(database_url, data_dir, allow_private_targets=False) as api:
        app = api.container.apps.create(APP)
        api.auth = basic(APP, app.server_secret)
        api.publish(APP, ROOM, "s1", "123")
        _, before = start(api, uid="1001")
        assert api.container.tasks.get(APP, before).spec.callback_url is None
        with pytest.raises(CloudrecError, match="not an http"):
            api.container.apps.set_callback_url(APP, "ftp://ncs.example.com/cb")
        app = api.container.apps.set_callback_url(APP, "https://ncs.example.com/cb")
        assert app.callback_url == api.container.apps.get(APP).callback_url
        assert app.public_view()["callback_url"] == "https://ncs.example.com/cb"
        _, after = start(api, uid="1002")
        task = api.container.tasks.get(APP, after)
        assert task.spec.callback_url == "https://ncs.example.com/cb"
        api.container.apps.set_callback_url(APP, "http://127.0.0.1:9/cb")
        rid = acquire(api, "1003")
        r = call(api, "POST", f"/resourceid/{rid}/mode/individual/start", start_body("1003"))
        assert_failure(r, 400, 2)
        assert "the app's callback URL" in r.json()["reason"]
        assert api.container.apps.set_callback_url(APP, "").callback_url is None
