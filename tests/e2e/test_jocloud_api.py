"""The JoCloud recordoss API over HTTP: every documented code it can return, and the
document's own sample requests replayed verbatim but for the host."""

from __future__ import annotations

import base64
import copy
import json
import time
from pathlib import Path

import pytest

from tests.jocloud import JoCloud
from tests.service import Service, ffmpeg_publish

APP = 10034  # the document's samples use this AppID
# shared/ sits beside the repository (CI clones it there); /work/shared on a developer's box.
SPEC = next(
    p / "spec" / "004_320e92f0aa037e3f.txt"
    for p in (Path(__file__).resolve().parents[3] / "shared", Path("/work/shared"))
    if (p / "spec").is_dir()
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("jocloud")
    svc = Service(data_dir, env={"CLOUDREC_RESOURCE_TTL_S": "2"})
    svc.app = svc.create_app(APP)
    svc.start()
    # User 10266666 publishes in room abcabc (the sample's names) for the whole module.
    pub = ffmpeg_publish(svc.publish_url(APP, "abcabc", "s1", "--uid", "10266666"), 120)
    assert len(svc.wait_streams(svc.app, "abcabc", 1)) == 1
    yield svc, JoCloud(svc.http, APP, svc.app["server_secret"])
    pub.kill()
    pub.wait()
    assert svc.stop() == 0


def _sample_bodies() -> dict[str, dict]:
    """The JSON request bodies of the document, in order: startrecord, stoprecord,
    updatemixrecord."""
    text = Path(SPEC).read_text(encoding="utf-8")
    bodies, start = [], 0
    while (i := text.find("Request body contents\n{", start)) != -1:
        begin = text.index("{", i)
        depth = 0
        for j in range(begin, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                bodies.append(json.loads(text[begin : j + 1]))
                start = j
                break
    return dict(zip(["startrecord", "stoprecord", "updatemixrecord"], bodies, strict=True))


def test_the_documents_sample_requests_get_the_documented_answers(world):
    _, jo = world
    samples = _sample_bodies()
    a = jo.call("GET", "applyrecord", trace="23116613407505472693518435")
    assert a["code"] == 0 and a["message"] == "success" and len(a["resid"]) > 60
    assert a["traceId"] == "23116613407505472693518435"
    # The sample's resid was never issued here: 4012, whatever else the body says.
    s = jo.call(
        "POST", "startrecord", samples["startrecord"], trace="82719231231166134075054726935"
    )
    assert s["code"] == 4012 and "resid" in s["message"]
    assert s["traceId"] == "82719231231166134075054726935"
    # With a fresh resid the sample's mixed recording starts (user 10266666 publishes in abcabc).
    fresh = {**samples["startrecord"], "resid": jo.apply()}
    s = jo.call("POST", "startrecord", fresh)
    assert s["code"] == 0, s
    assert jo.stop(fresh["resid"], "abcabc", s["recordid"])["code"] == 0
    # Its resid and recordid were never issued here.
    for name in ("stoprecord", "updatemixrecord"):
        r = jo.call("POST", name, samples[name], trace="214325255213407589332213")
        assert r["code"] == 4013 and r["traceId"] == "214325255213407589332213"
    q = jo.call(
        "GET",
        "queryrecord/abcabc/ba1107310000565164da34f816f842da94d",
        trace="82719231231166134075054726935",
    )
    assert q["code"] == 4013


def test_a_source_recording_is_queried_while_it_runs_and_refused_after(world):
    svc, jo = world
    resid, record_id = jo.start("abcabc", "10266666")
    q = jo.call("GET", f"queryrecord/abcabc/{record_id}")
    assert q["code"] == 0 and q["recordid"] == record_id
    data = q["data"]
    assert (data["recordid"], data["appid"], data["roomid"]) == (record_id, APP, "abcabc")
    assert data["status"] in (0, 1) and data["createtime"] > 1.7e12
    # The same resid cannot start a second recording while this one runs.
    again = jo.call("POST", "startrecord", jo.start_body(resid, "abcabc", "10266666"))
    assert again["code"] == 4011
    # updatemixrecord on a source-stream task
    mix = jo.call(
        "POST",
        "updatemixrecord",
        {"resid": resid, "appid": APP, "roomid": "abcabc", "recordid": record_id, "mixconfig": {}},
    )
    assert mix["code"] == 4019
    stop = jo.stop(resid, "abcabc", record_id)
    assert stop["code"] == 0 and stop["recordid"] == record_id
    assert jo.stop(resid, "abcabc", record_id)["code"] == 4013
    # Stopped: 4013 at once, while the files are still being finalised and delivered.
    assert jo.call("GET", f"queryrecord/abcabc/{record_id}")["code"] == 4013
    deadline = time.monotonic() + 15
    while svc.get(f"/v1/apps/{APP}/tasks/{record_id}", svc.app).json()["state"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # A resid whose recording has ended is spent.
    spent = jo.call("POST", "startrecord", jo.start_body(resid, "abcabc", "10266666"))
    assert spent["code"] == 4012


def test_resids_expire_and_unknown_ones_are_refused(world):
    _, jo = world
    resid = jo.apply()
    time.sleep(2.2)  # CLOUDREC_RESOURCE_TTL_S=2 for this service
    r = jo.call("POST", "startrecord", jo.start_body(resid, "abcabc", "10266666"))
    assert r["code"] == 4012 and "expired" in r["message"]
    r = jo.call("POST", "startrecord", jo.start_body("nope", "abcabc", "10266666"))
    assert r["code"] == 4012


def test_a_room_or_user_not_publishing_is_4005(world):
    _, jo = world
    for room, uid in (("emptyroom", "10266666"), ("abcabc", "someoneelse")):
        r = jo.call("POST", "startrecord", jo.start_body(jo.apply(), room, uid))
        assert r["code"] == 4005, r


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_authentication_codes(world):
    _, jo = world
    ok = jo.headers()
    cases = [
        ({k: v for k, v in ok.items() if k != "Token"}, 1000),
        ({**ok, "Token": "Basic " + _b64(f"{APP}:wrong")}, 1001),
        ({**ok, "Token": "garbage!"}, 1001),
        ({**ok, "Token": "Basic " + _b64("99:" + jo.secret)}, 1001),
        ({k: v for k, v in ok.items() if k != "AppID"}, 1002),
        ({**ok, "AppID": "99"}, 1002),
    ]
    for headers, code in cases:
        r = jo.call("GET", "applyrecord", headers=headers, trace="auth")
        assert r["code"] == code, (headers, r)
        assert r["traceId"] == "auth" and r["message"]
    # Accepted forms: the Token without its "Basic " prefix, and a standard Authorization.
    token = _b64(f"{APP}:{jo.secret}")
    assert jo.call("GET", "applyrecord", headers={**ok, "Token": token})["code"] == 0
    no_token = {k: v for k, v in ok.items() if k != "Token"}
    std = {**no_token, "Authorization": "Basic " + token}
    assert jo.call("GET", "applyrecord", headers=std)["code"] == 0


def test_wrong_method_content_type_or_endpoint_is_http_404(world):
    _, jo = world
    body = jo.start_body("x", "abcabc", "10266666")
    assert jo.request("GET", "startrecord").status_code == 404
    assert jo.request("POST", "applyrecord", {}).status_code == 404
    assert jo.request("DELETE", "stoprecord").status_code == 404
    assert jo.request("POST", "recordall", body).status_code == 404
    text = {**jo.headers(), "Content-Type": "text/plain"}
    assert (
        jo.request("POST", "startrecord", raw=json.dumps(body).encode(), headers=text).status_code
        == 404
    )


def _mutations(jo: JoCloud) -> list[tuple[str, object]]:
    base = jo.start_body("RESID", "abcabc", "10266666")

    def without(key: str) -> dict:
        b = copy.deepcopy(base)
        b.pop(key)
        return b

    def with_(path: str, value: object) -> dict:
        b = copy.deepcopy(base)
        *parents, leaf = path.split(".")
        node = b
        for p in parents:
            node = node[p]
        node[leaf] = value
        return b

    return [
        ("missing resid", without("resid")),
        ("missing roomid", without("roomid")),
        ("case matters: Roomid", {**without("roomid"), "Roomid": "abcabc"}),
        ("recordtype as a string", with_("recordtype", "0")),
        ("recordtype 5", with_("recordtype", 5)),
        ("streamtype 3", with_("streamtype", 3)),
        ("missing uid", without("uid")),
        ("missing storagecfg", without("storagecfg")),
        ("vender 9", with_("storagecfg.vender", 9)),
        (
            "missing bucket",
            {**base, "storagecfg": {k: v for k, v in base["storagecfg"].items() if k != "bucket"}},
        ),
        ("slash in prefix", with_("storagecfg.fileprefix", ["a/b"])),
        ("prefix too long", with_("storagecfg.fileprefix", ["a" * 60, "b" * 60, "c" * 10])),
        ("appid differs", with_("appid", 10035)),
        ("appid missing", without("appid")),
        ("callbackurl not http", with_("callbackurl", "ftp://example.com/x")),
        ("callbackurl to loopback", with_("callbackurl", "http://127.0.0.1:9/cb")),
        ("callbackurl to metadata", with_("callbackurl", "http://169.254.169.254/latest")),
        ("callbackurl to a private name", with_("callbackurl", "http://localhost/cb")),
        ("callbackurl to mapped loopback", with_("callbackurl", "http://[::ffff:127.0.0.1]/")),
        ("storage endpoint private", with_("storagecfg.endpoint", "10.0.0.7")),
        ("roomid with a space", with_("roomid", "abc abc")),
        ("fileformat unknown", with_("fileformat", "avi")),
    ]


def test_every_malformed_startrecord_is_2101_with_a_message_naming_the_parameter(world):
    _, jo = world
    for label, body in _mutations(jo):
        r = jo.call("POST", "startrecord", body, trace=label.replace(" ", "-"))
        assert r["code"] == 2101, (label, r)
        assert r["message"] != "success" and len(r["message"]) > 10, label
    r = jo.call("POST", "startrecord", raw=b"{not json")
    assert r["code"] == 2101 and "not JSON" in r["message"]


def test_more_than_ten_requests_a_second_is_2105(world):
    svc, jo = world
    codes = []
    import httpx

    with httpx.Client(timeout=10) as client:
        url = f"{svc.http}/app/{APP}/v1/recordoss/applyrecord?traceId=burst"
        for _ in range(15):
            codes.append(client.get(url, headers=jo.headers()).json()["code"])
    assert codes.count(0) <= 10 and 2105 in codes
    time.sleep(1.1)
    assert jo.call("GET", "applyrecord")["code"] == 0


def test_storage_keys_never_come_back_in_answers(world):
    svc, jo = world
    resid, record_id = jo.start("abcabc", "10266666")
    answers = [jo.call("GET", f"queryrecord/abcabc/{record_id}")]
    answers.append(jo.stop(resid, "abcabc", record_id))
    task = svc.get(f"/v1/apps/{APP}/tasks/{record_id}", svc.app).text
    for text in [json.dumps(a) for a in answers] + [task]:
        assert "SKEXAMPLE" not in text and "AKIDEXAMPLE" not in text
