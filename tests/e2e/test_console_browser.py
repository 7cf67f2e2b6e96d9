"""The console in a real browser: Debian's chromium driven by Playwright against ``cloudrec
serve`` with a real publisher.  Sign in as an app, see the room and its live stream, start a
recording from the page, stop it, see it completed and play its MP4 in the page (the video
element's duration within 1 s of the file's); a recording whose bucket cannot be reached shows
its upload errors.  ``CLOUDREC_TEST_SCREENSHOTS=DIR`` keeps the pages' screenshots there
(docs/console.md shows them)."""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.service import Service, ffmpeg_publish

APP = 1234
ROOM = "class-7"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

playwright = pytest.importorskip("playwright.sync_api")

# Play the page's video for a second: its duration, position and picture size.
PLAY = """async () => {
    const v = document.querySelector('video.player');
    if (v.readyState < 1)
        await new Promise(r => v.addEventListener('loadedmetadata', r));
    v.muted = true;
    await v.play();
    await new Promise(r => setTimeout(r, 1000));
    return [v.duration, v.currentTime, v.videoWidth, v.videoHeight];
}"""


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (scripts/install-test-deps installs it)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("CLOUDREC_TEST_SCREENSHOTS") or tmp_path / "shots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_a_user_records_a_room_from_the_console_and_plays_it(tmp_path, browser):
    (tmp_path / "data").mkdir()
    svc = Service(tmp_path / "data", env={"CLOUDREC_ALLOW_PRIVATE_TARGETS": "true"}).start()
    app = svc.create_app(APP)
    out = shots(tmp_path)
    pub = ffmpeg_publish(svc.publish_url(APP, ROOM, "cam", "--uid", "alice"), 120)
    try:
        assert len(svc.wait_streams(app, ROOM, 1)) == 1
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(svc.http + "/console/")
        page.fill("#app-login input[name=app_id]", str(APP))
        page.fill("#app-login input[name=secret]", app["server_secret"])
        page.click("#app-login button")
        page.wait_for_url("**/console/rooms")
        room = page.locator(f"section.room[data-room='{ROOM}']")
        room.locator("tr.stream", has_text="alice").wait_for()
        assert "320x240" in room.inner_text()
        preview = room.locator("img.preview")
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=preview.element_handle()
        )
        size = preview.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert size == [320, 240]  # the stream's own picture, scaled to 320 wide
        picture = Image.open(
            io.BytesIO(page.request.get(svc.http + (preview.get_attribute("src") or "")).body())
        )
        assert np.asarray(picture.convert("L")).std() > 20  # testsrc2's bars, not a blank
        page.screenshot(path=str(out / "console-rooms.png"))

        room.locator("button", has_text="Start recording").click()
        page.wait_for_url("**/console/tasks/*")
        task_id = page.url.rsplit("/", 1)[-1]
        page.locator("#state", has_text="recording").wait_for(timeout=30_000)  # htmx refresh
        started = time.monotonic()
        time.sleep(5)
        page.click("button#stop")
        page.locator("#state", has_text="completed").wait_for(timeout=45_000)
        recorded_s = time.monotonic() - started
        video = page.locator("video.player")
        video.wait_for(timeout=10_000)
        duration = page.evaluate(PLAY)
        task = svc.task(app, task_id)
        [f] = task["files"]
        assert f["status"] == "recorded"
        assert abs(duration[0] - f["duration_ms"] / 1000) < 1.0, (duration, f)
        assert 4 <= duration[0] <= recorded_s + 3, (duration, recorded_s)
        assert duration[1] > 0.3  # it plays: the browser decoded the file
        assert duration[2:] == [320, 240]
        page.screenshot(path=str(out / "console-task.png"), full_page=True)
        page.goto(svc.http + "/console/tasks?state=ended")
        assert task_id in page.locator("table.tasks").inner_text()

        # HLS, played through the shipped hls.js (chromium has no HLS of its own).
        page.goto(svc.http + "/console/rooms")
        room.locator("select[name=format]").select_option("hls")
        room.locator("button", has_text="Start recording").click()
        page.wait_for_url("**/console/tasks/*")
        hls_task = page.url.rsplit("/", 1)[-1]
        page.locator("#state", has_text="recording").wait_for(timeout=30_000)
        time.sleep(5)
        page.click("button#stop")
        page.locator("#state", has_text="completed").wait_for(timeout=45_000)
        page.locator("video[data-hls]").wait_for(timeout=10_000)
        played = page.evaluate(PLAY.replace("video.player", "video[data-hls]"))
        [playlist] = [f for f in svc.task(app, hls_task)["files"] if f["format"] == "hls"]
        assert played[0] > 3 and played[1] > 0.3 and played[2:] == [320, 240], played
        assert abs(played[0] - playlist["duration_ms"] / 1000) < 1.5, (played, playlist)

        # A recording whose bucket cannot be reached: the page shows why.
        r = httpx.post(
            f"{svc.http}/v1/apps/{APP}/tasks",
            auth=(str(APP), app["server_secret"]),
            timeout=10,
            json={
                "room_id": ROOM,
                "storage": {
                    "endpoint": "http://127.0.0.1:9",
                    "bucket": "gone",
                    "access_key": "AK",
                    "secret_key": "SK",
                },
            },
        )
        assert r.status_code == 201, r.text
        failing = r.json()["task_id"]
        svc.wait_task(app, failing, lambda t: t["state"] == "recording")
        time.sleep(2)
        httpx.post(
            f"{svc.http}/v1/apps/{APP}/tasks/{failing}/stop",
            auth=(str(APP), app["server_secret"]),
            timeout=10,
        )
        page.goto(f"{svc.http}/console/tasks/{failing}")
        page.locator("td.upload-error", has_text="unreachable").first.wait_for(timeout=60_000)
        page.screenshot(path=str(out / "console-upload-failed.png"), full_page=True)
        request = page.locator("pre").inner_text()
        assert '"secret_key": "(hidden)"' in request and '"access_key": "(hidden)"' in request
    finally:
        pub.kill()
        pub.wait()
        assert svc.stop() == 0
