"""Recorders pull with the internal pull credential, not the loopback exemption (issue 14):
a ``cloudrec serve`` with ``loopback_plays`` off and a ``pull_secret`` records a room as
before, while a player on the same machine without a token is refused."""

from __future__ import annotations

import time

import av
import httpx

from tests.media import pull_with_ffmpeg
from tests.service import Service, ffmpeg_publish

APP, ROOM = 78, "vault"


def test_a_recording_pulls_with_the_credential_and_a_local_player_without_a_token_is_refused(
    tmp_path,
):
    (tmp_path / "data").mkdir()
    env = {"CLOUDREC_LOOPBACK_PLAYS": "false", "CLOUDREC_PULL_SECRET": "cluster-pull-secret"}
    svc = Service(tmp_path / "data", env=env).start()
    app = svc.create_app(APP)
    auth = (str(APP), app["server_secret"])
    pub = ffmpeg_publish(svc.publish_url(APP, ROOM, "cam", "--uid", "ann"), 120)
    try:
        assert len(svc.wait_streams(app, ROOM, 1)) == 1
        played = pull_with_ffmpeg(
            f"rtmp://127.0.0.1:{svc.rtmp_port}/{APP}/{ROOM}/cam", tmp_path / "peek.flv"
        )
        assert played.returncode != 0
        refusals = [e for e in svc.log_events() if e.get("event") == "stream.play_refused"]
        assert [e.get("detail") for e in refusals] == ["token_missing"], refusals
        base = f"{svc.http}/v1/apps/{APP}/tasks"
        r = httpx.post(base, json={"room_id": ROOM}, auth=auth, timeout=10)
        assert r.status_code == 201, r.text
        task_id = r.json()["task_id"]
        svc.wait_task(app, task_id, lambda t: t["state"] == "recording" and t["files"])
        time.sleep(4)
        assert httpx.post(f"{base}/{task_id}/stop", auth=auth, timeout=10).status_code == 200
        task = svc.wait_task(app, task_id, lambda t: t["state"] in ("completed", "failed"))
        assert task["state"] == "completed", task
        [f] = task["files"]
        path = tmp_path / "rec.mp4"
        got = httpx.get(f"{base}/{task_id}/files/{f['name']}", auth=auth, timeout=30)
        path.write_bytes(got.content)
        with av.open(str(path)) as c:
            frames = sum(1 for _ in c.decode(c.streams.video[0]))
        assert frames >= 3 * 25  # ~4 s recorded at 25 fps, through the signed pull
    finally:
        pub.kill()
        pub.wait()
        assert svc.stop() == 0
