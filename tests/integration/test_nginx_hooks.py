"""An external media server: real nginx-rtmp calling cloudrec's publish hooks."""

from __future__ import annotations

import time

import av
import pytest

from tests.nginx import Nginx, nginx_available
from tests.service import Service, ffmpeg_publish

pytestmark = [
    pytest.mark.nginx,
    pytest.mark.slow,  # each test starts nginx and a service
    pytest.mark.skipif(not nginx_available(), reason="nginx with libnginx-mod-rtmp not installed"),
]
APP_ID = 1234


@pytest.fixture
def setup(data_dir, tmp_path):
    nginx = Nginx(tmp_path / "nginx")
    # Workers pull from the nginx the configuration names, never from the publisher's tcurl.
    svc = Service(data_dir, env={"CLOUDREC_HOOK_RTMP_BASE": f"rtmp://127.0.0.1:{nginx.port}"})
    svc.app = svc.create_app(APP_ID)
    svc.start()
    nginx.hooks = (
        f"on_publish http://127.0.0.1:{svc.http_port}/hooks/rtmp/on_publish;\n"
        f"on_publish_done http://127.0.0.1:{svc.http_port}/hooks/rtmp/on_publish_done;"
    )
    nginx.start()
    yield svc, nginx
    nginx.stop()
    assert svc.stop() == 0


def _token(svc: Service, room: str, stream: str) -> str:
    url = svc.publish_url(APP_ID, room, stream)
    return url.rsplit("token=", 1)[1]


def _wait_meta(svc: Service, room: str, timeout_s: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        streams = svc.streams(svc.app, room)
        if streams and streams[0]["video_codec"]:
            return streams[0]
        time.sleep(0.2)
    raise AssertionError(f"no probed stream in room {room}: {svc.streams(svc.app, room)}")


def test_a_publish_through_nginx_is_allowed_listed_probed_and_ended(setup):
    svc, nginx = setup
    token = _token(svc, "room1", "cam1")
    url = f"{nginx.url()}/cam1?appid={APP_ID}&room=room1&uid=bob&token={token}"
    pub = ffmpeg_publish(url, seconds=20, size="320x240", rate=25)
    try:
        s = _wait_meta(svc, "room1")
        assert (s["stream_id"], s["user_id"], s["source"]) == ("cam1", "bob", "hook")
        assert s["pull_url"] == f"{nginx.url()}/cam1"
        assert (s["video_codec"], s["audio_codec"], s["width"], s["height"]) == (
            "h264",
            "aac",
            320,
            240,
        )
        with av.open(s["pull_url"], options={"rw_timeout": "10000000"}, timeout=10) as c:
            frame = next(c.decode(video=0))
            assert (frame.width, frame.height) == (320, 240)
    finally:
        pub.terminate()
        pub.wait()
    assert svc.wait_streams(svc.app, "room1", 0) == []
    kinds = [e["event"] for e in svc.log_events() if e["event"].startswith("stream.")]
    assert kinds == ["stream.published", "stream.unpublished"]


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("appid=1234&room=room1", "token_missing"),
        ("appid=1234&room=room1&token=1.bad", "token_invalid"),
        ("appid=77&room=room1&token=1.bad", "app_unknown"),
    ],
)
def test_nginx_refuses_a_publish_when_the_hook_says_403(setup, query, reason):
    svc, nginx = setup
    pub = ffmpeg_publish(f"{nginx.url()}/cam1?{query}", seconds=5)
    assert pub.wait(timeout=30) != 0
    refusals = [e for e in svc.log_events() if e["event"] == "stream.publish_refused"]
    assert refusals and refusals[-1]["detail"] == reason
    assert svc.streams(svc.app, "room1") == []


def test_a_hook_without_app_id_is_refused_with_a_message(setup):
    svc, _ = setup
    import httpx

    r = httpx.post(
        f"{svc.http}/hooks/rtmp/on_publish", content="call=publish&app=live&name=x", timeout=5
    )
    assert r.status_code == 403
    assert "no app id" in r.text
