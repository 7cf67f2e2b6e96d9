"""cloudrec's own API as a user runs it, with no bucket (the README's quick start): start a
recording of a live room, stop it, fetch the file from cloudrec itself (whole and by range) and
probe it; ``/metrics`` scraped before and after, its counters moved."""

from __future__ import annotations

import time

import av
import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.service import Service, ffmpeg_publish

APP = 1234
ROOM = "class-7"


def scrape(svc: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(svc.http + "/metrics", timeout=10)
    assert r.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def test_a_room_recorded_without_a_bucket_is_fetched_from_cloudrec(tmp_path):
    (tmp_path / "data").mkdir()
    svc = Service(tmp_path / "data").start()
    app = svc.create_app(APP)
    auth = (str(APP), app["server_secret"])
    pub = ffmpeg_publish(svc.publish_url(APP, ROOM, "s1", "--uid", "alice"), 120)
    try:
        assert len(svc.wait_streams(app, ROOM, 1)) == 1
        before = scrape(svc)
        base = f"{svc.http}/v1/apps/{APP}/tasks"
        r = httpx.post(base, json={"room_id": ROOM}, auth=auth, timeout=10)
        assert r.status_code == 201, r.text
        task_id = r.json()["task_id"]
        svc.wait_task(app, task_id, lambda t: t["state"] == "recording")
        time.sleep(5)
        assert httpx.post(f"{base}/{task_id}/stop", auth=auth, timeout=10).status_code == 200
        task = svc.wait_task(app, task_id, lambda t: t["state"] in ("completed", "failed"))
        assert task["state"] == "completed", task
        [f] = task["files"]
        assert f["status"] == "recorded" and f["url"] is None  # kept here, no bucket
        url = f"{base}/{task_id}/files/{f['name']}"
        whole = httpx.get(url, auth=auth, timeout=30)
        assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
        assert len(whole.content) == f["size"] > 0
        part = httpx.get(url, auth=auth, headers={"Range": "bytes=0-99"}, timeout=30)
        assert part.status_code == 206 and part.content == whole.content[:100]
        assert httpx.get(url, timeout=10).status_code == 401
        path = tmp_path / "fetched.mp4"
        path.write_bytes(whole.content)
        with av.open(str(path)) as c:
            video = c.streams.video[0]
            assert (video.codec_context.width, video.codec_context.height) == (320, 240)
            assert c.streams.audio[0].codec_context.name == "aac"
            frames = sum(1 for _ in c.decode(video))
        assert frames >= 4 * 25  # ~5 s recorded at 25 fps
        after = scrape(svc)
    finally:
        pub.kill()
        pub.wait()
        assert svc.stop() == 0
    ingest = ("cloudrec_ingest_received_bytes_total", ())
    assert after[ingest] > before[ingest] + 100_000  # ~5 s of 320x240 at least
    assert after[("cloudrec_tasks", (("state", "completed"),))] == 1
    assert after[("cloudrec_recorded_seconds_total", ())] >= 4
    started = (("method", "POST"), ("route", "/v1/apps/{appid}/tasks"), ("status", "201"))
    assert after[("cloudrec_http_requests_total", started)] == 1
