"""The JoCloud ``recordoss`` routes in-process (httpx.ASGITransport, the real app, a real
database): each endpoint's success and the documented error codes.  No worker runs: tasks
stay as the API leaves them."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.fakes import FakeClock
from tests.inprocess import InProcess, in_process

APP = 10034
ROOM = "class1"


@pytest.fixture
def api(database_url, data_dir) -> Iterator[InProcess]:
    with in_process(database_url, data_dir, max_tasks_per_app=3) as api:
        app = api.container.apps.create(APP)
        api.secret = app.server_secret
        api.publish(APP, ROOM, "s1", "alice")
        yield api


def headers(app_id: int, secret: str, **over: str) -> dict[str, str]:
    token = base64.b64encode(f"{app_id}:{secret}".encode()).decode()
    return {
        "AppID": str(app_id),
        "Token": f"Basic {token}",
        "Content-Type": "application/json;charset=UTF-8",
        **over,
    }


def call(
    api: InProcess,
    method: str,
    uri: str,
    body: Any = None,
    *,
    hdrs: dict[str, str] | None = None,
    app_path: int | str = APP,
    content: bytes | None = None,
) -> httpx.Response:
    return api.request(
        method,
        f"/app/{app_path}/v1/recordoss/{uri}?traceId=t-1",
        json=body if content is None else None,
        content=content,
        headers=headers(APP, api.secret) if hdrs is None else hdrs,
    )


def answer(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, (r.status_code, r.text)
    body: dict[str, Any] = r.json()
    assert body["traceId"] == "t-1"
    return body


def start_body(resid: str, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resid": resid,
        "appid": APP,
        "roomid": ROOM,
        "recordtype": 0,
        "streamtype": 2,
        "uid": "alice",
        "storagecfg": {
            "vender": 0,
            "endpoint": "oss-cn-hangzhou.aliyuncs.com",
            "bucket": "recbucket",
            "accesskey": "AKIDEXAMPLE",
            "secretkey": "SKEXAMPLE",
            "fileprefix": ["rec"],
        },
    }
    body.update(over)
    return body


def apply(api: InProcess) -> str:
    a = answer(call(api, "GET", "applyrecord"))
    assert a["code"] == 0 and a["message"] == "success", a
    resid: str = a["resid"]
    return resid


def start(api: InProcess, **over: Any) -> tuple[str, str]:
    resid = apply(api)
    a = answer(call(api, "POST", "startrecord", start_body(resid, **over)))
    assert a["code"] == 0, a
    return resid, a["recordid"]


def test_apply_start_query_and_stop_a_recording(api):
    resid, record_id = start(api)
    assert api.executor.started == [record_id]
    q = answer(call(api, "GET", f"queryrecord/{ROOM}/{record_id}"))
    assert q["code"] == 0 and q["recordid"] == record_id
    data = q["data"]
    assert (data["recordid"], data["appid"], data["roomid"]) == (record_id, APP, ROOM)
    assert data["status"] == 0 and data["starttime"] == 0 and data["createtime"] > 0
    stop = {"resid": resid, "appid": APP, "roomid": ROOM, "recordid": record_id}
    s = answer(call(api, "POST", "stoprecord", stop))
    assert (s["code"], s["recordid"]) == (0, record_id)
    task = api.container.tasks.get(APP, record_id)
    assert task.desired.value == "stopped"


def test_a_resid_starts_one_recording_only(api):
    resid, _ = start(api)
    again = answer(call(api, "POST", "startrecord", start_body(resid)))
    assert again["code"] == 4011, again  # the task exists
    unknown = answer(call(api, "POST", "startrecord", start_body("no-such-resid")))
    assert unknown["code"] == 4012, unknown


def test_a_resid_expires_after_its_lifetime(database_url, data_dir):
    """The resid lives resource_ttl_s (the document: five minutes); time is the services'
    injected clock, moved by the test."""
    clock = FakeClock(datetime.now(UTC))
    with in_process(database_url, data_dir, clock=clock, resource_ttl_s=300) as api:
        api.secret = api.container.apps.create(APP).server_secret
        api.publish(APP, ROOM, "s1", "alice")
        fresh, stale = apply(api), apply(api)
        clock.advance(299)
        assert answer(call(api, "POST", "startrecord", start_body(fresh)))["code"] == 0
        clock.advance(2)
        r = answer(call(api, "POST", "startrecord", start_body(stale)))
        assert r["code"] == 4012 and "expired" in r["message"], r


def test_a_room_without_the_users_stream_is_4005(api):
    r = answer(call(api, "POST", "startrecord", start_body(apply(api), uid="bob")))
    assert r["code"] == 4005 and "bob" in r["message"], r


def test_the_per_app_limit_answers_2105(api):
    for _ in range(3):
        start(api)
    r = answer(call(api, "POST", "startrecord", start_body(apply(api))))
    assert r["code"] == 2105 and "already runs 3 recordings" in r["message"], r


@pytest.mark.parametrize(
    ("over", "code", "words"),
    [
        ({"recordtype": 9}, 2101, "recordtype"),
        ({"fileformat": "avi"}, 2101, "fileformat"),
        ({"fileformat": "aac", "recordtype": 1}, 4004, "audio only"),
        ({"appid": APP + 1}, 2101, "does not match"),
    ],
)
def test_a_malformed_or_unsupported_startrecord_names_the_parameter(api, over, code, words):
    r = answer(call(api, "POST", "startrecord", start_body(apply(api), **over)))
    assert r["code"] == code and words in r["message"], r


def test_h265_in_a_mix_is_4004_and_a_bad_size_2101(api):
    """Regression (issue 12): the test of these accepted 2101 or 4004 for either."""
    output = {"streamtype": 0, "videowidth": 640, "videoheight": 360, "videobitrate": 600,
              "videofps": 20, "videogop": 40, "videoencode": 101}  # fmt: skip
    for over, code in (({}, 4004), ({"videoencode": 100, "videowidth": 4000}, 2101)):
        mix = {"templateid": 1, "output": {**output, **over}}
        body = start_body(apply(api), streamtype=1, mixconfig=mix)
        body.pop("uid")
        r = answer(call(api, "POST", "startrecord", body))
        assert r["code"] == code and "mixconfig.output." in r["message"], r


def test_updatemixrecord_changes_a_mix_and_refuses_a_single_stream_recording(api):
    mix = {"templateid": 1, "output": {"streamtype": 2}}
    body = start_body(apply(api), streamtype=1, mixconfig=mix)
    body.pop("uid")
    a = answer(call(api, "POST", "startrecord", body))
    assert a["code"] == 0, a
    resid, record_id = body["resid"], a["recordid"]
    ids = {"resid": resid, "appid": APP, "roomid": ROOM, "recordid": record_id}
    new = {"templateid": 2, "output": {"streamtype": 2}}
    u = answer(call(api, "POST", "updatemixrecord", {**ids, "mixconfig": new}))
    assert u["code"] == 0, u
    assert api.container.tasks.get(APP, record_id).spec.mix["template_id"] == 2
    single_resid, single = start(api)
    ids = {"resid": single_resid, "appid": APP, "roomid": ROOM, "recordid": single}
    r = answer(call(api, "POST", "updatemixrecord", {**ids, "mixconfig": new}))
    assert r["code"] == 4019, r


def test_stop_and_query_of_an_unknown_recording_are_4013(api):
    resid, record_id = start(api)
    stop = {"resid": resid, "appid": APP, "roomid": ROOM, "recordid": "nope"}
    assert answer(call(api, "POST", "stoprecord", stop))["code"] == 4013
    assert answer(call(api, "GET", f"queryrecord/{ROOM}/nope"))["code"] == 4013
    assert answer(call(api, "GET", f"queryrecord/other/{record_id}"))["code"] == 4013
    wrong = {**stop, "recordid": record_id, "resid": apply(api)}
    assert answer(call(api, "POST", "stoprecord", wrong))["code"] == 4012
    r = answer(call(api, "GET", f"queryrecord/{ROOM}"))
    assert r["code"] == 2101 and "queryrecord/{roomid}/{recordid}" in r["message"], r


def test_credentials_are_checked_with_the_documented_codes(api):
    other = api.container.apps.create(APP + 1)
    no_token = {k: v for k, v in headers(APP, api.secret).items() if k != "Token"}
    no_app = {k: v for k, v in headers(APP, api.secret).items() if k != "AppID"}
    cases = [
        (no_token, 1000),
        (headers(APP, "wrong"), 1001),
        (headers(APP + 1, other.server_secret, AppID=str(APP)), 1001),  # another app's token
        (headers(APP + 1, api.secret, AppID=str(APP)), 1001),  # the secret, another app id
        (no_app, 1002),
        (headers(APP, api.secret, AppID=str(APP + 1)), 1002),  # header and URL differ
    ]
    for hdrs, code in cases:
        r = answer(call(api, "GET", "applyrecord", hdrs=hdrs))
        assert r["code"] == code, (hdrs, r)
    r = answer(call(api, "GET", "applyrecord", app_path="abc"))
    assert r["code"] == 1002, r
    assert api.container.tasks.page(APP, None, True, *_all_time(), 0, 10)[0] == 0


def _all_time():
    from datetime import UTC, datetime

    return datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)


def test_wrong_method_content_type_or_endpoint_is_http_404(api):
    assert call(api, "POST", "applyrecord", {}).status_code == 404
    assert call(api, "GET", "startrecord").status_code == 404
    assert call(api, "GET", "nosuchthing").status_code == 404
    assert call(api, "GET", "applyrecord/extra").status_code == 404
    text = {**headers(APP, api.secret), "Content-Type": "text/plain"}
    assert call(api, "POST", "startrecord", start_body("x"), hdrs=text).status_code == 404


def test_a_body_that_is_not_a_json_object_is_2101(api):
    r = answer(call(api, "POST", "startrecord", content=b"{nope"))
    assert r["code"] == 2101 and "not JSON" in r["message"], r
    r = answer(call(api, "POST", "startrecord", content=b"[1]"))
    assert r["code"] == 2101 and "JSON object" in r["message"], r


def test_a_nul_character_in_a_field_or_the_url_is_a_parameter_error(api):
    """Regression (issue 11): a ``recordid`` or ``resid`` holding ``\\u0000`` (body) or ``%00``
    (queryrecord's URL) reached the task lookup, and PostgreSQL, whose text cannot hold NUL,
    answered HTTP 500; cloudrec's own ``/v1/apps/{app}/tasks/a%00b`` too."""
    body = {"appid": APP, "resid": "r", "roomid": ROOM, "recordid": "a\u0000b"}
    stopped = answer(call(api, "POST", "stoprecord", body))
    assert stopped["code"] == 2101 and "NUL" in stopped["message"], stopped
    queried = answer(call(api, "GET", "queryrecord/class1/a%00b"))
    assert queried["code"] == 2101 and "NUL" in queried["message"], queried
    auth = headers(APP, api.secret)
    r = api.get(f"/v1/apps/{APP}/tasks/a%00b", headers={"Authorization": auth["Token"]})
    assert r.status_code == 404, r.text
