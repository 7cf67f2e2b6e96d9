"""``/openapi.json`` as a user's client generator reads it: every JoCloud endpoint and every
ZEGO Action is an operation of its own with its request schema and its answer schema in the
dialect's envelope, and the published ZEGO path answers as ``/?Action=`` does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from openapi_spec_validator import validate

from cloudrec.api.jocloud import routes as jocloud_routes
from cloudrec.api.zego import routes as zego_routes
from tests.inprocess import InProcess, in_process
from tests.integration.test_api_inprocess_zego import APP, ROOM, signed, start_body

# The vendors' documents: the JoCloud RESTful API's five endpoints, ZEGO's nine Actions.
JOCLOUD = {
    "applyrecord": ("get", "/app/{appid}/v1/recordoss/applyrecord"),
    "startrecord": ("post", "/app/{appid}/v1/recordoss/startrecord"),
    "stoprecord": ("post", "/app/{appid}/v1/recordoss/stoprecord"),
    "updatemixrecord": ("post", "/app/{appid}/v1/recordoss/updatemixrecord"),
    "queryrecord": ("get", "/app/{appid}/v1/recordoss/queryrecord/{roomid}/{recordid}"),
}
ZEGO = [
    "StartRecord",
    "StopRecord",
    "DescribeRecordStatus",
    "DescribeTasks",
    "UpdateLayout",
    "PauseRecord",
    "ResumeRecord",
    "TakeSnapshot",
    "UpdateWhiteboard",
]


@pytest.fixture
def api(database_url, data_dir) -> Iterator[InProcess]:
    with in_process(database_url, data_dir) as api:
        app = api.container.apps.create(APP)
        api.secret = app.server_secret
        api.publish(APP, ROOM, "stream1", "user1")
        yield api


@pytest.fixture
def doc(api: InProcess) -> dict[str, Any]:
    r = api.get("/openapi.json")
    assert r.status_code == 200
    document: dict[str, Any] = r.json()
    return document


def test_the_document_is_valid_openapi_3_1(doc):
    """What a client generator checks first (openapi-spec-validator: OpenAPI 3.1 and the JSON
    Schema of every body and answer)."""
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = doc["components"]["schemas"][name]
    return schema


def answer_schema(doc: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    return resolve(doc, op["responses"]["200"]["content"]["application/json"]["schema"])


def test_every_jocloud_endpoint_is_an_operation_with_its_request_and_answer_schemas(doc):
    assert set(jocloud_routes.ENDPOINTS) == set(JOCLOUD)  # served = documented
    for endpoint, (method, path) in JOCLOUD.items():
        op = doc["paths"][path][method]
        params = {(p["in"], p["name"]) for p in op["parameters"]}
        assert {("path", "appid"), ("header", "AppID"), ("header", "Token")} <= params, endpoint
        if method == "post":
            body = resolve(doc, op["requestBody"]["content"]["application/json"]["schema"])
            assert {"appid", "resid", "roomid"} <= set(body["properties"]), endpoint
            assert "appid" in body["required"], endpoint
        answer = answer_schema(doc, op)
        assert {"code", "message", "traceId"} <= set(answer["required"]), endpoint
    query = doc["paths"][JOCLOUD["queryrecord"][1]]["get"]
    assert {("path", "roomid"), ("path", "recordid")} <= {
        (p["in"], p["name"]) for p in query["parameters"]
    }
    start = resolve(doc, {"$ref": "#/components/schemas/JoCloudStartRecord"})
    mix = resolve(doc, start["properties"]["mixconfig"])
    output = resolve(doc, mix["properties"]["output"])
    assert output["properties"]["videowidth"] == {
        "type": "integer",
        "minimum": 16,
        "maximum": 1920,
        "description": "rounded to a multiple of 4",
    }
    # Only the published operations are listed: no catch-all.
    assert not [p for p in doc["paths"] if "{rest" in p]


def test_every_zego_action_is_an_operation_with_zegos_request_and_answer_schemas(doc):
    assert list(zego_routes.ACTIONS) == ZEGO  # served = documented
    for action in ZEGO:
        op = doc["paths"][f"/zego/{action}"]["post"]
        params = {p["name"]: p for p in op["parameters"] if p["in"] == "query"}
        assert set(params) == {
            "Action",
            "AppId",
            "SignatureNonce",
            "Timestamp",
            "SignatureVersion",
            "Signature",
        }, action
        assert params["Action"]["schema"]["enum"] == [action]
        body = resolve(doc, op["requestBody"]["content"]["application/json"]["schema"])
        assert body["properties"] and body["required"], action
        if action != "StartRecord" and action != "DescribeTasks":
            assert "TaskId" in body["required"], action
        answer = answer_schema(doc, op)
        assert {"Code", "Message", "RequestId"} <= set(answer["required"]), action
    start = resolve(doc, {"$ref": "#/components/schemas/ZegoStartRecordRequest"})
    assert start["required"] == ["RoomId", "RecordInputParams", "StorageParams"]
    inputs = resolve(doc, start["properties"]["RecordInputParams"])
    assert inputs["properties"]["MaxIdleTime"] == {
        "type": "integer",
        "minimum": 5,
        "maximum": 86400,
        "default": 30,
        "description": "seconds",
    }
    assert "/" not in doc["paths"]  # ZEGO's own form answers, but has no one schema


def zego_post(api: InProcess, path: str, params: dict[str, str], body: Any) -> dict[str, Any]:
    r = api.post(path, params=params, content=json.dumps(body).encode())
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def test_the_published_zego_path_answers_as_zegos_own_form(api):
    """A client generated from the document posts to ``/zego/StartRecord`` (with or without
    ``Action``); a ZEGO client posts to ``/?Action=StartRecord``: the same task service."""
    params = signed(api, "StartRecord")
    del params["Action"]
    started = zego_post(api, "/zego/StartRecord", params, start_body())
    assert started["Code"] == 0, started
    task_id = started["Data"]["TaskId"]
    status = zego_post(
        api, "/", signed(api, "DescribeRecordStatus"), {"TaskId": task_id}
    )  # ZEGO's own form sees the task the published path started
    assert status["Code"] == 0 and status["Data"]["RoomId"] == ROOM, status
    stopped = zego_post(api, "/zego/StopRecord", signed(api, "StopRecord"), {"TaskId": task_id})
    assert stopped["Code"] == 0, stopped
    assert api.container.tasks.get(APP, task_id).desired.value == "stopped"
    other = zego_post(api, "/zego/StopRecord", signed(api, "StartRecord"), start_body())
    assert other["Code"] == 300000004 and "path" in other["Message"], other
