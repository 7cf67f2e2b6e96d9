"""The console in-process (the real app over a real database, no worker): signing in, the
pages a user reads, the forms that change something and their CSRF check, and what another
app's session or no session gets."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from cloudrec.console.session import COOKIE
from cloudrec.core.tasks import RecordingSpec, StorageTarget, TaskState
from tests.inprocess import InProcess, in_process

APP = 1234


class Browser:
    """The app's client with a cookie jar, as a browser keeps one."""

    def __init__(self, api: InProcess) -> None:
        self.api = api
        self.cookies: dict[str, str] = {}

    def request(self, method: str, url: str, **kw):
        headers = dict(kw.pop("headers", {}))
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        r = self.api.request(method, url, headers=headers, **kw)
        for name, value in r.cookies.items():
            self.cookies[name] = value
        return r

    def login(self, **form: str):
        return self.request("POST", "/console/login", data=form)

    def csrf(self, page: str) -> str:
        match = re.search(r'name="csrf" value="([^"]+)"', page)
        assert match, page
        return match.group(1)


@pytest.fixture
def api(database_url, data_dir) -> Iterator[InProcess]:
    with in_process(database_url, data_dir, admin_token="op-token-123") as api:
        api.secret = api.container.apps.create(APP).server_secret
        yield api


def test_an_app_signs_in_sees_its_room_and_starts_a_recording_from_the_page(api):
    b = Browser(api)
    api.publish(APP, "class-7", "cam", "alice")
    assert b.request("GET", "/console/rooms").headers["location"] == "/console/login"
    wrong = b.login(app_id=str(APP), secret="nope")
    assert wrong.status_code == 303 and "wrong%20app%20id" in wrong.headers["location"]
    ok = b.login(app_id=str(APP), secret=api.secret)
    assert ok.status_code == 303 and ok.headers["location"] == "/console/rooms"
    assert "httponly" in ok.headers["set-cookie"].lower()
    assert "samesite=lax" in ok.headers["set-cookie"].lower()
    page = b.request("GET", "/console/rooms").text
    assert "class-7" in page and "alice" in page and "320x240" in page
    assert "h264/aac" in b.request("GET", "/console/rooms/live").text
    url = f"/console/apps/{APP}/rooms/class-7/record"
    forged = b.request("POST", url, data={"csrf": "x", "mode": "single"})
    assert forged.status_code == 403 and "reload the page" in forged.text
    assert api.executor.started == []
    started = b.request("POST", url, data={"csrf": b.csrf(page), "mode": "single", "format": "mp4"})
    assert started.status_code == 303
    task_id = started.headers["location"].rsplit("/", 1)[-1]
    assert api.executor.started == [task_id]
    task_page = b.request("GET", f"/console/tasks/{task_id}").text
    assert task_id in task_page and "initialising" in task_page and "created" in task_page
    listing = b.request("GET", "/console/tasks").text
    assert task_id in listing
    stop = b.request("POST", f"/console/tasks/{task_id}/stop", data={"csrf": b.csrf(task_page)})
    assert stop.status_code == 303
    assert api.container.tasks.get(APP, task_id).desired.value == "stopped"


def test_a_mixed_recording_from_the_page_gets_the_layout_asked(api):
    b = Browser(api)
    api.publish(APP, "r1", "cam", "alice")
    b.login(app_id=str(APP), secret=api.secret)
    csrf = b.csrf(b.request("GET", "/console/rooms").text)
    r = b.request(
        "POST",
        f"/console/apps/{APP}/rooms/r1/record",
        data={"csrf": csrf, "mode": "mixed", "layout": "vertical", "format": "hls"},
    )
    task = api.container.tasks.get(APP, r.headers["location"].rsplit("/", 1)[-1])
    assert task.spec.mix is not None and task.spec.mix["auto_layout"] == "vertical"
    assert [f.value for f in task.spec.formats] == ["hls"]
    nobody = b.request(
        "POST", f"/console/apps/{APP}/rooms/empty/record", data={"csrf": csrf, "mode": "single"}
    )
    assert nobody.status_code == 303 and "no%20live%20stream" in nobody.headers["location"]


def test_the_task_page_masks_the_storage_keys_and_shows_a_failed_upload(api):
    b = Browser(api)
    api.publish(APP, "r1", "cam", "alice")
    storage = StorageTarget("s3", "http://10.0.0.9:9000", "bkt", "AKID-VISIBLE", "SK-HIDDEN")
    task = api.container.tasks.start(APP, RecordingSpec(room_id="r1"), storage)
    with api.container.uow() as uow:
        uow.tasks.update(
            task.task_id, state=TaskState.FAILED, end_reason="upload failed", error="bucket gone"
        )
        uow.commit()
    b.login(app_id=str(APP), secret=api.secret)
    page = b.request("GET", f"/console/tasks/{task.task_id}").text
    assert "SK-HIDDEN" not in page and "AKID-VISIBLE" not in page and page.count("(hidden)") == 2
    assert "bucket gone" in page and "upload failed" in page
    assert 'hx-trigger="every 2s"' not in page  # ended: no more refreshing
    ended = b.request("GET", "/console/tasks?state=ended").text
    assert task.task_id in ended and "state-failed" in ended


def test_another_apps_session_sees_nothing_of_this_app(api):
    # a room name no random CSRF token in the page can contain by chance (a CI run once failed
    # on "r1" inside the sign-out form's token)
    room = "room-of-the-first-app"
    api.publish(APP, room, "cam", "alice")
    task = api.container.tasks.start(APP, RecordingSpec(room_id=room), None)
    other = api.container.apps.create(999)
    b = Browser(api)
    b.login(app_id="999", secret=other.server_secret)
    assert room not in b.request("GET", "/console/rooms").text
    assert b.request("GET", f"/console/tasks/{task.task_id}").status_code == 404
    assert task.task_id not in b.request("GET", "/console/tasks").text
    csrf = b.csrf(b.request("GET", "/console/rooms").text)
    r = b.request("POST", f"/console/tasks/{task.task_id}/stop", data={"csrf": csrf})
    assert r.status_code == 404
    r = b.request("POST", f"/console/apps/{APP}/rooms/{room}/record", data={"csrf": csrf})
    assert r.status_code == 403
    assert b.request("GET", "/console/ops").status_code == 403


def test_the_operator_sees_every_app_and_the_workers(api):
    api.publish(APP, "r1", "cam", "alice")
    task = api.container.tasks.start(APP, RecordingSpec(room_id="r1"), None)
    b = Browser(api)
    assert "wrong%20operator%20token" in b.login(admin_token="guess").headers["location"]
    b.login(admin_token="op-token-123")
    assert "r1" in b.request("GET", "/console/rooms").text
    ops = b.request("GET", "/console/ops").text
    assert task.task_id[:12] in ops and f"fake:{task.task_id}" in ops


def test_the_operator_sees_a_local_workers_cpu_and_memory():
    import os

    from cloudrec.console.routes import process_load

    mine = process_load(f"local:{os.getpid()}")
    assert mine["cpu_s"] > 0 and 10 < mine["rss_mb"] < 10_000  # this test process
    assert process_load(f"host:{os.getpid()}:t1:1")["rss_mb"] > 10  # a recorder host
    assert process_load("local:999999999") == {"gone": True}
    assert process_load("fake:x") == {}


def test_no_session_or_a_forged_one_goes_to_the_sign_in(api):
    b = Browser(api)
    fragment = b.request("GET", "/console/rooms/live", headers={"HX-Request": "true"})
    assert fragment.status_code == 401 and fragment.headers["HX-Redirect"] == "/console/login"
    b.login(app_id=str(APP), secret=api.secret)
    body, sig = b.cookies[COOKIE].rsplit(".", 1)
    b.cookies[COOKIE] = body + "." + ("0" if sig[0] != "0" else "1") + sig[1:]
    assert b.request("GET", "/console/rooms").headers["location"] == "/console/login"


def test_sign_ins_are_rate_limited_per_address(api):
    b = Browser(api)
    for _ in range(10):
        b.login(app_id=str(APP), secret="nope")
    r = b.login(app_id=str(APP), secret=api.secret)
    assert "too%20many%20sign-ins" in r.headers["location"]
    assert COOKIE not in b.cookies
