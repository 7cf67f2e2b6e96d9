"""Mixed recording end to end, the pictures over and under the inputs: text and timestamp
watermarks, image watermarks, the background image and the patch modes, with the pictures
served over HTTP on loopback (the service runs with ``CLOUDREC_ALLOW_PRIVATE_TARGETS``).
Checked by pixels of the downloaded file: mean colours of small regions, binarised masks."""

from __future__ import annotations

import io
import itertools
import math
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from cloudrec.media.compositor.overlay import find_cjk_font
from tests.e2e.test_record_mixed import APP, ROOM, colour_publish, frames_of, output
from tests.e2e.test_record_single import fetched, storage_service, wait_task
from tests.jocloud import JoCloud
from tests.s3server import FaultyS3

FPS = 20
W, H = 640, 360
GREEN, MAGENTA, YELLOW = (0, 255, 0), (255, 0, 255), (255, 255, 0)
TEXT = "cloudrec 录制"
TEXT_AT, TEXT_SIZE = (20, 20), 32
STAMP_AT, STAMP_SIZE = (20, 290), 28
QUADRANTS = ((0, 255, 255), (255, 255, 255), (255, 128, 0), (128, 0, 255))  # TL TR BL BR


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def quadrant_png(width: int, height: int) -> bytes:
    """Four solid quadrants (QUADRANTS: top-left, top-right, bottom-left, bottom-right)."""
    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    for i, colour in enumerate(QUADRANTS):
        x, y = (i % 2) * width // 2, (i // 2) * height // 2
        draw.rectangle((x, y, x + width // 2 - 1, y + height // 2 - 1), fill=colour)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class Pictures:
    """A small HTTP server on loopback: fixed paths to PNG bytes, 404 for anything else."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requested: list[str] = []
        pictures = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                pictures.requested.append(self.path)
                body = pictures.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    s3 = FaultyS3().start()
    s3.client().create_bucket(Bucket="recbucket")
    svc = storage_service(
        tmp_path_factory.mktemp("overlays"), s3, CLOUDREC_ALLOW_PRIVATE_TARGETS="1"
    )
    pics = Pictures(
        {
            "/green.png": png(64, 36, GREEN),
            "/magenta.png": png(100, 60, MAGENTA),
            "/quadrants.png": quadrant_png(160, 120),
        }
    )
    red = colour_publish(svc.publish_url(APP, ROOM, "cam-red", "--uid", "red"), "red", 440)
    assert len(svc.wait_streams(svc.app, ROOM, 1)) == 1
    yield svc, JoCloud(svc.http, APP, svc.app["server_secret"]), pics
    red.kill()
    red.wait()
    assert svc.stop() == 0
    pics.close()
    s3.stop()


def box(uid: str, x: int, y: int, w: int, h: int) -> dict:
    return {
        "uid": uid,
        "roomid": ROOM,
        "streamtype": 0,
        "layoutX": x,
        "layoutY": y,
        "layoutW": w,
        "layoutH": h,
        "crop": 1,
    }


def start_mix(jo: JoCloud, mixconfig: dict) -> tuple[str, str]:
    resid = jo.apply()
    body = jo.start_body(resid, ROOM, "", streamtype=1, mixconfig=mixconfig)
    body.pop("uid")
    answer = jo.call("POST", "startrecord", body)
    assert answer["code"] == 0, answer
    return resid, answer["recordid"]


def finish_mix(svc, jo: JoCloud, resid: str, record_id: str) -> tuple[dict, dict, list]:
    assert jo.stop(resid, ROOM, record_id)["code"] == 0
    return collect(svc, record_id)


def collect(svc, record_id: str) -> tuple[dict, dict, list]:
    """The stopped recording's task once completed, its one file and the file's frames."""
    task = wait_task(svc, record_id, {"completed", "failed"}, timeout_s=30)
    assert task["state"] == "completed", task
    [f] = task["files"]
    return task, f, frames_of(fetched(svc, task, f))


def mean(frame: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    return frame[y : y + h, x : x + w].reshape(-1, 3).astype(np.float64).mean(axis=0)


def near(actual: np.ndarray, expected: tuple[float, float, float], tol: float = 25) -> bool:
    return bool(np.all(np.abs(actual - np.array(expected, dtype=np.float64)) <= tol))


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def ink(text: str, size: int) -> np.ndarray:
    """An independent Pillow rendering of ``text`` in Noto Sans CJK SC: a boolean mask of its
    ink, the pen at the top-left corner (anchor ``la``)."""
    font = ImageFont.truetype(str(find_cjk_font()), size, index=2)
    _, _, right, bottom = font.getbbox(text)
    img = Image.new("L", (math.ceil(right), math.ceil(bottom)), 0)
    ImageDraw.Draw(img).text((0, 0), text, font=font, fill=255)
    return np.asarray(img) >= 128


def best_match(glyphs: np.ndarray, picture: np.ndarray, x0: int, y0: int) -> tuple[float, int, int]:
    """The correlation of ``glyphs`` with the bright pixels of ``picture`` (luma), best over
    placements of its top-left corner within 12 px right of and below ``(x0, y0)``."""
    h, w = glyphs.shape
    mask = glyphs.astype(np.float64).reshape(-1)
    best = (-1.0, 0, 0)
    for dy in range(13):
        for dx in range(13):
            region = picture[y0 + dy : y0 + dy + h, x0 + dx : x0 + dx + w]
            seen = (region >= 128).astype(np.float64).reshape(-1)
            r = float(np.corrcoef(mask, seen)[0, 1]) if seen.std() > 0 else 0.0
            best = max(best, (r, dx, dy))
    return best


@pytest.fixture(scope="module")
def overlays(world):
    """One recording with everything over the picture: a green background image, red in a
    small box, a text watermark, the timestamp, a magenta image watermark opaque and at half
    alpha, and an image watermark whose URL answers 404."""
    svc, jo, pics = world
    mix = {
        "input": [box("red", 240, 120, 120, 90)],
        "output": output(
            W,
            H,
            FPS,
            2 * FPS,
            background={
                "color": "0000FF",
                "image": {"url": pics.url("/green.png"), "scale": 1},
            },
            watermark={
                "textList": [
                    {
                        "content": TEXT,
                        "x": TEXT_AT[0],
                        "y": TEXT_AT[1],
                        "size": TEXT_SIZE,
                        "color": "FFFF00",
                        "backgroundColor": "000080",
                    }
                ],
                "timestamp": {
                    "format": "%H:%M:%S",
                    "x": STAMP_AT[0],
                    "y": STAMP_AT[1],
                    "size": STAMP_SIZE,
                    "color": "FFFFFF",
                    "backgroundColor": "000000",
                },
                "imageList": [
                    {
                        "url": pics.url("/magenta.png"),
                        "x": 500,
                        "y": 250,
                        "width": 100,
                        "height": 60,
                        "scale": 1,
                        "alpha": 1.0,
                    },
                    {
                        "url": pics.url("/magenta.png"),
                        "x": 380,
                        "y": 250,
                        "width": 100,
                        "height": 60,
                        "scale": 1,
                        "alpha": 0.5,
                    },
                    {
                        "url": pics.url("/missing.png"),
                        "x": 500,
                        "y": 20,
                        "width": 100,
                        "height": 60,
                        "scale": 1,
                    },
                ],
            },
        ),
    }
    resid, record_id = start_mix(jo, mix)
    time.sleep(5)
    task, f, frames = finish_mix(svc, jo, resid, record_id)
    # The task as the API lists it after the end, events included.
    task = svc.get(f"/v1/apps/{APP}/tasks/{record_id}", svc.app).json()
    return task, f, frames


def test_a_text_watermark_shows_its_text_in_its_colour_on_its_background_where_asked(overlays):
    _, _, frames = overlays
    still = np.mean(np.stack(frames[-10:]).astype(np.float64), axis=0)  # static: average noise
    glyphs = ink(TEXT, TEXT_SIZE)
    r, dx, dy = best_match(glyphs, luma(still), *TEXT_AT)
    assert r >= 0.8, r
    # The ink starts just inside the box (a few pixels of padding), not elsewhere.
    assert 1 <= dx <= 8 and 1 <= dy <= 8, (dx, dy)
    gx, gy = TEXT_AT[0] + dx, TEXT_AT[1] + dy
    region = still[gy : gy + glyphs.shape[0], gx : gx + glyphs.shape[1]]
    # Away from the ink (2 px of margin against blur and chroma subsampling): the box colour.
    grown = np.zeros_like(glyphs)
    for sy in range(-2, 3):
        for sx in range(-2, 3):
            grown |= np.roll(np.roll(glyphs, sy, axis=0), sx, axis=1)
    assert near(region[~grown].mean(axis=0), (0, 0, 128), 20)
    # On the ink: yellow (strokes of 3-4 px lose some saturation to 4:2:0 chroma).
    core = glyphs.copy()
    for sy in (-1, 1):
        core &= np.roll(glyphs, sy, axis=0)
    on_ink = region[core].mean(axis=0)
    assert on_ink[0] > 180 and on_ink[1] > 180 and on_ink[2] < 100, on_ink
    # The box ends a few pixels right of the ink: beyond it, the background image.
    right = gx + glyphs.shape[1] + 12
    assert near(mean(still, right, 30, 8, 20), GREEN)


def test_the_timestamp_changes_every_second_and_only_then(overlays):
    _, f, frames = overlays
    begin = f["begin_ms"] / 1000
    sample = ink("00:00:00", STAMP_SIZE)
    x, y = STAMP_AT
    # The box's bright pixels (white text on black), a little wider than the rendered text.
    boxes = [
        luma(fr)[y : y + sample.shape[0] + 16, x : x + sample.shape[1] + 24] >= 128 for fr in frames
    ]
    # Frame n shows the time begin + n / fps; group the frames by their second, leaving out
    # those within a frame of a change.
    seconds: dict[int, list[int]] = {}
    for n in range(len(frames)):
        t = begin + n / FPS
        if 1 / FPS < t % 1 < 1 - 1 / FPS:
            seconds.setdefault(math.floor(t), []).append(n)
    assert len(seconds) >= 4
    # Within a second: the same picture. Not checked in the file's first second, where the
    # encoder refines its first, coarse keyframe over the next frames (up to ~20 pixels flip).
    steady = [ns for ns in seconds.values() if ns[0] >= FPS]
    assert len(steady) >= 3
    for ns in steady:
        changed = [int((boxes[n] != boxes[ns[0]]).sum()) for n in ns]
        assert max(changed) <= 8, (ns, changed)
    # A second later: another picture. Consecutive seconds differ in 59 pixels or more in a
    # rendering of the digits (9 -> 0 the least).
    firsts = [ns[len(ns) // 2] for _, ns in sorted(seconds.items())]
    for a, b in itertools.pairwise(firsts):
        assert (boxes[b] != boxes[a]).sum() >= 20, (a, b)
    # And the picture is the time of the frame: it matches a rendering of that time better
    # than one of the second before or after.
    for sec, ns in seconds.items():
        shown = luma(np.mean(np.stack([frames[n] for n in ns]).astype(np.float64), axis=0))
        score = {
            d: best_match(
                ink(datetime.fromtimestamp(sec + d, UTC).strftime("%H:%M:%S"), STAMP_SIZE),
                shown,
                x,
                y,
            )[0]
            for d in (-1, 0, 1)
        }
        assert score[0] >= 0.8 and score[0] > max(score[-1], score[1]), (sec, score)


def test_the_background_image_shows_where_no_input_is_and_image_watermarks_blend(overlays):
    _, _, frames = overlays
    last = frames[-1]
    for x, y in ((40, 150), (600, 150), (300, 20), (200, 330)):  # around everything else
        assert near(mean(last, x - 4, y - 4, 8, 8), GREEN), (x, y)
    assert near(mean(last, 290, 155, 20, 20), (255, 0, 0), 40)  # red in its box
    assert near(mean(last, 530, 265, 40, 30), MAGENTA)  # the opaque watermark
    # Alpha 0.5: half magenta, half the green under it.
    assert near(mean(last, 410, 265, 40, 30), (127.5, 127.5, 127.5), 20)
    # The edges of the watermarks are where asked: green just outside them.
    assert near(mean(last, 604, 270, 6, 20), GREEN)
    assert near(mean(last, 520, 314, 40, 6), GREEN)


def test_a_picture_that_cannot_be_fetched_is_reported_and_the_recording_goes_on(overlays, world):
    task, f, frames = overlays
    _, _, pics = world
    assert task["state"] == "completed"
    assert f["size"] > 0 and len(frames) >= 2.5 * FPS
    failed = [e["detail"] for e in task["events"] if e["kind"] == "image_failed"]
    assert len(failed) == 1 and failed[0].startswith(pics.url("/missing.png")), task["events"]
    assert "/missing.png" in pics.requested
    # Nothing painted where it would have been: the background image.
    assert near(mean(frames[-1], 530, 35, 40, 30), GREEN)


@pytest.fixture(scope="module")
def patched(world):
    """Four recordings started together, one per patch mode, each with the same layout: red
    (publishing), "ghost" (never publishing) and "yellow", who publishes when they start and
    leaves halfway."""
    svc, jo, pics = world
    yellow = colour_publish(
        svc.publish_url(APP, ROOM, "cam-yellow", "--uid", "yellow"), "yellow", 660
    )
    try:
        assert len(svc.wait_streams(svc.app, ROOM, 2)) == 2
        layout = [
            box("red", 0, 0, 160, 120),
            box("ghost", 240, 0, 160, 120),
            box("yellow", 480, 0, 160, 120),
        ]
        started = {}
        for mode in (0, 1, 2, 3):
            extra = {"patchUrl": pics.url("/quadrants.png")} if mode == 3 else {}
            mix = {
                "input": layout,
                "output": output(
                    W, H, FPS, 2 * FPS, patch=mode, background={"color": "00FF00"}, **extra
                ),
            }
            started[mode] = start_mix(jo, mix)
        for _, record_id in started.values():
            assert wait_task(svc, record_id, {"recording"})["state"] == "recording"
        time.sleep(3)  # inputs show within 1-2 s
    finally:
        yellow.kill()
        yellow.wait()
    left_at = time.time()
    time.sleep(3)
    for resid, record_id in started.values():
        assert jo.stop(resid, ROOM, record_id)["code"] == 0
    out = {}
    for mode, (_, record_id) in started.items():
        _, f, frames = collect(svc, record_id)
        out[mode] = (f, frames, left_at)
    return out


def box_colours(frame: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "red": mean(frame, 60, 40, 40, 40),
        "ghost": mean(frame, 300, 40, 40, 40),
        "yellow": mean(frame, 540, 40, 40, 40),
    }


def after_leaving(f: dict, frames: list, left_at: float) -> list[np.ndarray]:
    """The frames from 1.5 s after the yellow publisher left (time to notice) to the end."""
    first = math.ceil((left_at + 1.5 - f["begin_ms"] / 1000) * FPS)
    assert len(frames) - first >= FPS // 2
    return frames[first:]


def test_patch_0_shows_the_background_for_an_input_without_a_picture(patched):
    f, frames, left_at = patched[0]
    for fr in after_leaving(f, frames, left_at):
        c = box_colours(fr)
        assert near(c["red"], (255, 0, 0), 40)
        assert near(c["ghost"], GREEN)
        assert near(c["yellow"], GREEN)
    assert any(near(box_colours(fr)["yellow"], YELLOW, 40) for fr in frames)  # it was there


def test_patch_1_shows_black_for_an_input_without_a_picture(patched):
    f, frames, left_at = patched[1]
    for fr in after_leaving(f, frames, left_at):
        c = box_colours(fr)
        assert near(c["red"], (255, 0, 0), 40)
        assert near(c["ghost"], (0, 0, 0))
        assert near(c["yellow"], (0, 0, 0))
    assert any(near(box_colours(fr)["yellow"], YELLOW, 40) for fr in frames)


def test_patch_2_keeps_the_last_frame_of_an_input_that_left(patched):
    """Regression: Mixer.update dropped the reader of an input that left the room, and its
    last picture with it, so patch mode 2 painted black instead of the last frame."""
    f, frames, left_at = patched[2]
    assert any(near(box_colours(fr)["yellow"], YELLOW, 40) for fr in frames)
    for fr in after_leaving(f, frames, left_at):
        c = box_colours(fr)
        assert near(c["red"], (255, 0, 0), 40)
        assert near(c["ghost"], (0, 0, 0))  # never had a frame: black, as documented
        assert near(c["yellow"], YELLOW, 40), c["yellow"]


def test_patch_3_shows_the_patch_image_scaled_into_the_box(patched):
    f, frames, left_at = patched[3]
    for fr in after_leaving(f, frames, left_at):
        assert near(box_colours(fr)["red"], (255, 0, 0), 40)
        for bx in (240, 480):  # ghost and yellow: the 4 quadrants of the picture, in place
            for i, colour in enumerate(QUADRANTS):
                x, y = bx + 20 + (i % 2) * 80, 15 + (i // 2) * 60
                assert near(mean(fr, x, y, 40, 30), colour, 30), (bx, i)
    assert any(near(box_colours(fr)["yellow"], YELLOW, 40) for fr in frames)
