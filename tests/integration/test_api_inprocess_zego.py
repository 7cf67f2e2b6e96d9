"""The ZEGO Cloud Recording routes in-process (httpx.ASGITransport, the real app, a real
database): each Action's success and the documented return codes.  No worker runs: a test
that needs a recording in progress moves the task's state itself."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cloudrec.api.zego.auth import signature
from cloudrec.core.tasks import TaskState
from tests.inprocess import InProcess, in_process

APP = 1234567890
ROOM = "zroom"


@pytest.fixture
def api(database_url, data_dir) -> Iterator[InProcess]:
    with in_process(database_url, data_dir, max_tasks_per_app=4) as api:
        app = api.container.apps.create(APP)
        api.secret = app.server_secret
        api.publish(APP, ROOM, "stream1", "user1")
        yield api


def signed(api: InProcess, action: str, **over: str) -> dict[str, str]:
    ts = int(time.time())
    nonce = secrets.token_hex(8)
    params = {
        "Action": action,
        "AppId": str(APP),
        "SignatureNonce": nonce,
        "Timestamp": str(ts),
        "SignatureVersion": "2.0",
        "Signature": signature(APP, nonce, api.secret, ts),
    }
    return {**params, **over}


def call(
    api: InProcess,
    action: str,
    body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
    method: str = "POST",
) -> dict[str, Any]:
    r = api.request(
        method,
        "/",
        params=params or signed(api, action),
        content=json.dumps(body or {}).encode(),
        headers={"Content-Type": "text/plain"},  # JSON whatever the Content-Type says
    )
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    assert set(answer) >= {"Code", "Message", "RequestId"}, answer
    return answer


def storage() -> dict[str, Any]:
    return {
        "Vendor": 10,
        "Region": "us-east-1",
        "Bucket": "zegobucket",
        "AccessKeyId": "ZAK",
        "AccessKeySecret": "ZSK",
        "EndPoint": "s3.example.invalid",
        "S3ForcePathStyle": True,
    }


def start_body(**inp: Any) -> dict[str, Any]:
    return {
        "RoomId": ROOM,
        "RecordInputParams": {"RecordMode": 1, "StreamType": 3, **inp},
        "RecordOutputParams": {"OutputFileFormat": "mp4", "OutputFolder": "record/"},
        "StorageParams": storage(),
    }


def mix_body() -> dict[str, Any]:
    body = start_body(
        MixConfig={
            "MixOutputStreamId": "mixout",
            "MixOutputVideoConfig": {"Width": 640, "Height": 360, "Fps": 15, "Bitrate": 500_000},
        }
    )
    body["RecordInputParams"]["RecordMode"] = 2
    return body


def start(api: InProcess, body: dict[str, Any] | None = None) -> str:
    answer = call(api, "StartRecord", body or start_body())
    assert answer["Code"] == 0, answer
    task_id: str = answer["Data"]["TaskId"]
    return task_id


def set_state(api: InProcess, task_id: str, state: TaskState) -> None:
    """What the worker would write: the task is recording (or paused)."""
    with api.container.uow() as uow:
        uow.tasks.update(task_id, state=state)
        uow.commit()


def test_start_describe_and_stop_a_recording(api):
    task_id = start(api, start_body(RecordStreamList=[{"StreamId": "stream1"}]))
    assert len(task_id) == 16 and api.executor.started == [task_id]
    data = call(api, "DescribeRecordStatus", {"TaskId": task_id})["Data"]
    assert (data["RoomId"], data["RecordMode"], data["StreamType"], data["Status"]) == (
        ROOM,
        1,
        3,
        1,
    )
    assert "RecordFiles" not in data and data["RecordBeginTimestamp"] > 0
    set_state(api, task_id, TaskState.RECORDING)
    assert call(api, "DescribeRecordStatus", {"TaskId": task_id})["Data"]["Status"] == 2
    assert call(api, "StopRecord", {"TaskId": task_id, "RoomId": ROOM})["Code"] == 0
    assert api.container.tasks.get(APP, task_id).desired.value == "stopped"
    set_state(api, task_id, TaskState.COMPLETED)
    assert call(api, "DescribeRecordStatus", {"TaskId": task_id})["Data"]["Status"] == 3
    assert call(api, "StopRecord", {"TaskId": task_id})["Code"] == 300001001


def test_the_same_client_task_id_gives_the_same_task(api):
    first = start(api, start_body(ClientTaskId="order-42"))
    assert start(api, start_body(ClientTaskId="order-42")) == first
    assert start(api, start_body(ClientTaskId="order-43")) != first


def test_a_get_request_takes_the_body_from_the_query(api):
    task_id = start(api)
    params = signed(api, "DescribeRecordStatus", TaskId=task_id)
    answer = call(api, "DescribeRecordStatus", params=params, method="GET")
    assert answer["Code"] == 0 and answer["Data"]["RoomId"] == ROOM, answer


def test_describe_tasks_pages_the_recordings_of_a_time_range(api):
    since = int(time.time() * 1000) - 1
    ids = {start(api) for _ in range(3)}
    rng = {"StartTime": since, "EndTime": int(time.time() * 1000) + 60_000}
    page1 = call(api, "DescribeTasks", {"Status": 2, **rng, "PageSize": 2})["Data"]
    assert page1["TotalCount"] == 3 and len(page1["TaskidList"]) == 2
    page2 = call(api, "DescribeTasks", {"Status": 2, **rng, "PageSize": 2, "PageOffset": 2})
    listed = [t["TaskId"] for t in page1["TaskidList"] + page2["Data"]["TaskidList"]]
    assert set(listed) == ids and len(listed) == 3
    ended = call(api, "DescribeTasks", {"Status": 3, **rng})["Data"]
    assert ended["TotalCount"] == 0
    for bad in ({"Status": 1, **rng}, {"Status": 2}, {"Status": 2, **rng, "PageSize": 51}):
        assert call(api, "DescribeTasks", bad)["Code"] == 300000004, bad
    now = int(time.time() * 1000)
    wide = {"Status": 3, "StartTime": now - 5 * 86_400_000, "EndTime": now}
    assert call(api, "DescribeTasks", wide)["Code"] == 300000004


def test_an_app_id_too_large_for_any_app_is_refused_as_unknown_before_the_database(api):
    """Regression (issue 11): a ZEGO ``AppId`` or a JoCloud ``appid`` of 30 digits was looked
    up in the database as it was, before any credential was checked, and answered HTTP 500
    (SQLite: "Python int too large to convert to SQLite INTEGER"), from any network client."""
    big = "9" * 30
    params = {**signed(api, "StopRecord"), "AppId": big}
    answer = call(api, "StopRecord", {"TaskId": "X"}, params=params)
    assert answer["Code"] == 300000002, answer
    r = api.get(f"/app/{big}/v1/recordoss/applyrecord", headers={"AppID": big, "Token": big})
    assert r.status_code == 200 and r.json()["code"] in (1000, 1001), r.text
    token = "Basic " + base64.b64encode(f"{big}:x".encode()).decode()
    r = api.get(f"/app/{big}/v1/recordoss/applyrecord", headers={"AppID": big, "Token": token})
    assert r.status_code == 200 and r.json()["code"] == 1001, r.text
    r = api.get(f"/v1/apps/{big}/rooms", headers={"Authorization": token})
    assert r.status_code == 401, r.text


def test_a_nul_character_in_the_body_or_the_query_is_a_parameter_error(api):
    """Regression (issue 11): a ``TaskId`` (StopRecord, DescribeRecordStatus), a ``RoomId``
    (DescribeTasks) or a ``ClientTaskId`` holding ``\u0000``, or a ``SignatureNonce`` of
    ``%00``, reached the database, and PostgreSQL, whose text cannot hold NUL, answered
    HTTP 500."""
    now = int(time.time() * 1000)
    bodies = {
        "StopRecord": {"TaskId": "a\u0000b"},
        "DescribeRecordStatus": {"TaskId": "a\u0000b"},
        "DescribeTasks": {"Status": 2, "StartTime": now - 1000, "EndTime": now, "RoomId": "\0"},
        "StartRecord": start_body(ClientTaskId="x\u0000"),
    }
    for action, body in bodies.items():
        answer = call(api, action, body)
        assert answer["Code"] == 300000004 and "NUL" in answer["Message"], (action, answer)
    ts, nonce = int(time.time()), "a\x00b"
    params = {
        **signed(api, "StopRecord"),
        "SignatureNonce": nonce,
        "Signature": signature(APP, nonce, api.secret, ts),
        "Timestamp": str(ts),
    }
    answer = call(api, "StopRecord", {"TaskId": "X"}, params=params)
    assert answer["Code"] == 300000004 and "NUL" in answer["Message"], answer


def test_describe_tasks_refuses_numbers_that_are_not_integers_naming_the_field(api):
    """Regression (issue 11, found by schemathesis): ``PageSize: "x"``, ``PageOffset: [1]``,
    a ``PageOffset`` of 35 digits, ``StartTime: 1e400`` (JSON's infinity), a StartTime in the
    year 30000 and a ``RoomId`` that is an object were each answered HTTP 500 with a traceback
    in the log."""
    now = int(time.time() * 1000)
    rng = {"Status": 2, "StartTime": now - 60_000, "EndTime": now}
    cases = [
        ({**rng, "PageSize": "\x1ex"}, "PageSize"),
        ({**rng, "PageOffset": [1]}, "PageOffset"),
        ({**rng, "PageOffset": 44873255731460862055924203345936384}, "PageOffset"),
        ({**rng, "RoomId": {"a": 1}}, "RoomId"),
    ]
    for body, field in cases:
        answer = call(api, "DescribeTasks", body)
        assert answer["Code"] == 300000004 and field in answer["Message"], (body, answer)
    raw = b'{"Status": 2, "StartTime": 1e400, "EndTime": 1e400}'
    r = api.post("/", params=signed(api, "DescribeTasks"), content=raw)
    assert r.status_code == 200 and r.json()["Code"] == 300000004, r.text
    assert "StartTime" in r.json()["Message"]
    far = 30000 * 365 * 86_400_000
    answer = call(api, "DescribeTasks", {"Status": 2, "StartTime": far, "EndTime": far + 1})
    assert answer["Code"] == 300000004 and "StartTime" in answer["Message"], answer


def test_pause_resume_layout_and_snapshot_of_a_mix(api):
    task_id = start(api, mix_body())
    set_state(api, task_id, TaskState.RECORDING)
    assert call(api, "ResumeRecord", {"TaskId": task_id})["Code"] == 300001004  # not paused
    snap = call(api, "TakeSnapshot", {"TaskId": task_id})
    assert snap["Code"] == 0, snap
    layout = {"TaskId": task_id, "MixMode": 3, "MixMaxResolutionStreamId": "stream1"}
    assert call(api, "UpdateLayout", layout)["Code"] == 0
    mix = api.container.tasks.get(APP, task_id).spec.mix
    assert mix is not None
    assert (mix["auto_layout"], mix["main_stream_id"]) == ("horizontal", "stream1")
    assert call(api, "PauseRecord", {"TaskId": task_id})["Code"] == 0
    assert api.container.tasks.get(APP, task_id).desired.value == "paused"
    assert call(api, "ResumeRecord", {"TaskId": task_id})["Code"] == 0
    assert api.container.tasks.get(APP, task_id).desired.value == "running"


def test_a_single_stream_recording_has_no_layout_and_no_snapshot(api):
    task_id = start(api)
    set_state(api, task_id, TaskState.RECORDING)
    for action in ("UpdateLayout", "TakeSnapshot"):
        answer = call(api, action, {"TaskId": task_id})
        assert answer["Code"] == 300000004 and "single" in answer["Message"], answer


def test_unknown_tasks_and_actions_and_the_whiteboard_have_their_codes(api):
    assert call(api, "StopRecord", {"TaskId": "nope"})["Code"] == 300001000
    assert call(api, "DescribeRecordStatus", {"TaskId": "nope"})["Code"] == 300001000
    assert call(api, "StopRecord", {})["Code"] == 300000004  # no TaskId
    assert call(api, "NoSuchAction")["Code"] == 300000004
    assert call(api, "UpdateWhiteboard", {"TaskId": "x"})["Code"] == 300000004
    r = api.request("POST", "/", params=signed(api, "StartRecord"), content=b"{nope")
    assert r.json()["Code"] == 300000004 and "not JSON" in r.json()["Message"]


def test_the_per_app_limit_answers_300000006(api):
    for _ in range(4):
        start(api)
    answer = call(api, "StartRecord", start_body())
    assert answer["Code"] == 300000006, answer


def test_signatures_are_checked_with_the_documented_codes(api):
    ts = int(time.time())
    cases = [
        (signed(api, "DescribeTasks", Signature="0" * 32), 100000005),
        (signed(api, "DescribeTasks", Timestamp=str(ts - 700)), 100000004),
        (signed(api, "DescribeTasks", AppId="42"), 300000002),  # not activated here
        (signed(api, "DescribeTasks", SignatureVersion="1.0"), 300000004),
    ]
    for params, code in cases:
        assert call(api, "DescribeTasks", params=params)["Code"] == code, params
    # The signature covers the secret: another app's secret does not sign for this app.
    other = api.container.apps.create(APP + 1)
    nonce = "n-1"
    forged = signed(api, "DescribeTasks", SignatureNonce=nonce, Timestamp=str(ts))
    forged["Signature"] = signature(APP, nonce, other.server_secret, ts)
    assert call(api, "DescribeTasks", params=forged)["Code"] == 100000005
    # A correctly signed request passes once; its replay is refused.
    once = signed(api, "DescribeTasks")
    body = {"Status": 2, "StartTime": ts * 1000 - 1000, "EndTime": ts * 1000 + 1000}
    assert call(api, "DescribeTasks", body, params=once)["Code"] == 0
    assert call(api, "DescribeTasks", body, params=once)["Code"] == 100000005
