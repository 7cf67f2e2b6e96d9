"""ZEGO's mix options end to end, as a ZEGO client sets them: FillBlank and FillFrame (a
camera turned off, a publisher gone), a view's BackgroundImage for a stream that never came,
MixOutputBackgroundImage, the image watermark, the timestamp watermark, IsAlwaysMix, and the
callback (event 3) for a picture that cannot be fetched.  Checked by pixels of the file
downloaded from the bucket."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import av
import numpy as np
import pytest

from tests.e2e.test_record_mixed import colour_at, colour_publish, frames_of
from tests.e2e.test_record_mixed_overlays import MAGENTA, QUADRANTS, Pictures, png, quadrant_png
from tests.e2e.test_zego_api import download, mix_body, wait_status, zego_service
from tests.receiver import Receiver

APP = 1234567891
FPS = 15
GREEN = (0, 255, 0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    pics = Pictures(
        {
            "/green.png": png(64, 36, GREEN),
            "/magenta.png": png(100, 60, MAGENTA),
            "/quadrants.png": quadrant_png(160, 120),
        }
    )
    with zego_service(tmp_path_factory.mktemp("zmix"), APP) as (svc, s3, zego):
        yield svc, s3, zego, pics
    pics.close()
    s3.stop()


def camera_off_publish(url: str, colour: str, video_s: int, tmp: Path, seconds: int = 120):
    """A solid colour for ``video_s`` seconds, then sound only (the camera turned off).
    ffmpeg stops publishing when one of several live inputs ends, so the media is made
    first, then published from the file in real time."""
    path = tmp / f"camera-off-{colour}.flv"
    subprocess.run(
        [
            *("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"),
            *("-f", "lavfi", "-i", f"color=c={colour}:size=320x240:rate=25:duration={video_s}"),
            *("-f", "lavfi", "-i", f"sine=frequency=500:sample_rate=48000:duration={seconds}"),
            *("-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p"),
            *("-c:a", "aac", "-b:a", "96k", "-f", "flv", str(path)),
        ],
        check=True,
    )
    return subprocess.Popen(
        [
            *("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re"),
            *("-i", str(path), "-c", "copy"),
            # Else the muxer holds the sound back up to 10 s waiting for pictures to
            # interleave with, once there are none.
            *("-max_interleave_delta", "100000", "-f", "flv", url),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def view(stream: str, left: int, top: int, **more: object) -> dict:
    return {
        "StreamId": stream,
        "Left": left,
        "Top": top,
        "Right": left + 320,
        "Bottom": top + 180,
        "Layer": 1,
        **more,
    }


def mean(rgb: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> tuple[int, ...]:
    return tuple(int(v) for v in rgb[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0))


def near(colour: tuple[int, ...], want: tuple[int, ...], tol: int = 40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(colour, want, strict=True))


def test_fill_frame_colour_fill_blank_view_background_canvas_and_watermarks(world, tmp_path):
    svc, s3, zego, pics = world
    room = "zfill"
    receiver = Receiver()
    red = camera_off_publish(
        svc.publish_url(APP, room, "z-red", "--uid", "ured"), "red", 6, tmp_path
    )
    blue = colour_publish(svc.publish_url(APP, room, "z-blue", "--uid", "ublue"), "blue", 700)
    try:
        assert len(svc.wait_streams(svc.app, room, 2)) == 2
        body = mix_body(
            room,
            MixMode=1,
            MixOutputStreamId="fill",
            MixInputList=[
                view("z-red", 0, 0),
                view("z-blue", 320, 0),
                view("z-none", 0, 180, BackgroundImage=pics.url("/green.png")),
            ],
            MixOutputBackgroundImage=pics.url("/quadrants.png"),
            MixOutputWatermarkImage=pics.url("/magenta.png"),
            MixOutputWatermarkImageConfig={"Left": 500, "Top": 200, "Right": 600, "Bottom": 300},
            MixOutputWatermarkTimestampConfig={"FontSize": 24},
            DefaultMixStreamBackgroundImage=pics.url("/missing.png"),
        )
        body["RecordInputParams"]["FillBlank"] = True
        body["RecordInputParams"]["FillFrame"] = {
            "FrameFillMode": 2,
            "FrameFillColor": 0xFFFF0000,
        }
        body["RecordOutputParams"]["CallbackUrl"] = receiver.url

        def kill_blue() -> None:
            time.sleep(5)
            blue.kill()
            blue.wait()

        task_id = zego.record(body, 14, kill_blue)
        files = wait_status(zego, task_id, 3)["RecordFiles"]
    finally:
        for p in (red, blue):
            p.kill()
            p.wait()
    [f] = files
    frames = frames_of(download(s3, f, tmp_path))
    assert len(frames) > 10 * FPS
    early, late = frames[2 * FPS], frames[-FPS]
    # Early: both publishers in their views; the absent stream's view shows its
    # BackgroundImage; the canvas background image (quadrants, stretched) where no view is,
    # the watermark image over it.
    assert colour_at(early, 160, 90) == "red"
    assert colour_at(early, 400, 60) == "blue"
    assert near(mean(early, 20, 200, 300, 340), GREEN)
    assert near(mean(early, 340, 320, 480, 350), QUADRANTS[3])  # bottom-right quadrant
    assert near(mean(early, 520, 220, 580, 280), MAGENTA)
    # The timestamp watermark: white text in the upper right corner, over the blue view.
    corner = early[4:40, 400:640]
    white = (corner.min(axis=2) > 200).sum()
    assert white > 100, white
    assert (early[4:40, 320:380].min(axis=2) > 200).sum() == 0  # not at the left of it
    # Late: red's camera is off (sound goes on) and blue has gone: both views show
    # FrameFillColor 0xFFFF00 (yellow); the view of the stream that never came stays green.
    assert near(mean(late, 20, 60, 300, 160), (255, 255, 0)), mean(late, 20, 60, 300, 160)
    # The view of the stream that left (FillBlank keeps it).  Regression: about one run in two
    # it showed the canvas background, when a worker tick between the pull's end and the
    # stream's leaving replaced its reader and the new reader's missing picture was kept.
    departed = mean(late, 340, 60, 620, 160)
    assert near(departed, (255, 255, 0)), departed
    assert near(mean(late, 20, 200, 300, 340), GREEN)
    # The default view background could not be fetched: ZEGO callback event 3, type 3.
    deadline = time.monotonic() + 10
    while not [b for b in receiver.bodies() if b.get("event_type") == 3]:
        assert time.monotonic() < deadline, receiver.bodies()
        time.sleep(0.2)
    [failed] = [b for b in receiver.bodies() if b["event_type"] == 3]
    assert failed["detail"] == {"image_type": 3, "image_url": pics.url("/missing.png")}
    assert failed["task_id"] == task_id
    receiver.stop()


def test_last_frame_fill_and_a_gone_stream_without_fill_blank(world, tmp_path):
    """FrameFillMode 1 (the default): a camera turned off keeps its last picture; without
    FillBlank a named stream that left shows the background colour."""
    svc, s3, zego, _ = world
    room = "zlast"
    red = camera_off_publish(
        svc.publish_url(APP, room, "l-red", "--uid", "lred"), "red", 5, tmp_path
    )
    blue = colour_publish(svc.publish_url(APP, room, "l-blue", "--uid", "lblue"), "blue", 700)
    try:
        assert len(svc.wait_streams(svc.app, room, 2)) == 2
        body = mix_body(
            room,
            MixMode=1,
            MixOutputStreamId="last",
            MixInputList=[view("l-red", 0, 0), view("l-blue", 320, 0)],
            MixOutputBackgroundColor=0x00FF0000,
        )

        def kill_blue() -> None:
            time.sleep(4)
            blue.kill()
            blue.wait()

        task_id = zego.record(body, 13, kill_blue)
        [f] = wait_status(zego, task_id, 3)["RecordFiles"]
    finally:
        for p in (red, blue):
            p.kill()
            p.wait()
    frames = frames_of(download(s3, f, tmp_path))
    early, late = frames[2 * FPS], frames[-FPS]
    assert colour_at(early, 400, 60) == "blue"
    assert colour_at(late, 160, 90) == "red"  # the last picture, camera off
    assert near(mean(late, 340, 20, 620, 160), (0, 255, 0))  # blue gone: background


def test_is_always_mix_records_an_empty_room_from_the_start(world, tmp_path):
    _, s3, zego, _ = world
    body = mix_body("zempty", MixOutputStreamId="empty", IsAlwaysMix=True)
    body["RecordInputParams"]["MixConfig"]["MixOutputBackgroundColor"] = 0x0000FF00
    task_id = zego.record(body, 4)
    [f] = wait_status(zego, task_id, 3)["RecordFiles"]
    assert f["Duration"] >= 3000, f
    frames = frames_of(download(s3, f, tmp_path))
    assert near(mean(frames[len(frames) // 2], 0, 0, 640, 360), (0, 0, 255))


def tone_peaks(path: Path, freqs: tuple[int, ...]) -> dict[int, float]:
    """Each frequency's spectral peak over the median of the last 2 s of the sound."""
    with av.open(str(path)) as c:
        pcm = np.concatenate([fr.to_ndarray().mean(axis=0) for fr in c.decode(audio=0)])
    mono = pcm.astype(np.float64)[-96000:]
    spectrum = np.abs(np.fft.rfft(mono))
    hz = np.fft.rfftfreq(len(mono), 1 / 48000)
    floor = float(np.median(spectrum))
    return {f: float(spectrum[(hz > f - 20) & (hz < f + 20)].max()) / floor for f in freqs}


def test_stream_config_list_takes_only_the_sound_or_only_the_picture(world, tmp_path):
    """MixConfig.StreamConfigList: red is taken for its sound only (StreamType 1), blue for
    its picture only (2): red's cell of the grid shows the background and the mix has red's
    tone and not blue's."""
    svc, s3, zego, _ = world
    room = "zconfig"
    red = colour_publish(svc.publish_url(APP, room, "k-red", "--uid", "kred"), "red", 500)
    blue = colour_publish(svc.publish_url(APP, room, "k-blue", "--uid", "kblue"), "blue", 900)
    try:
        assert len(svc.wait_streams(svc.app, room, 2)) == 2
        body = mix_body(
            room,
            MixMode=2,
            MixOutputStreamId="config",
            StreamConfigList=[
                {"StreamId": "k-red", "StreamType": 1},
                {"StreamId": "k-blue", "StreamType": 2},
            ],
        )
        task_id = zego.record(body, 6)
        [f] = wait_status(zego, task_id, 3)["RecordFiles"]
    finally:
        for p in (red, blue):
            p.kill()
            p.wait()
    path = download(s3, f, tmp_path)
    last = frames_of(path)[-FPS]
    cells = {colour_at(last, 160, 180), colour_at(last, 480, 180)}
    assert cells == {"black", "blue"}, cells  # red's cell: the (black) background
    peaks = tone_peaks(path, (500, 900))
    assert peaks[500] > 50 and peaks[900] < peaks[500] / 1000, peaks  # 900 Hz: codec noise


def test_a_user_publishing_two_streams_has_both_in_the_grid(world, tmp_path):
    """ZEGO lays out streams, not users: a camera and a screen share of one user are two
    cells of the grid."""
    svc, s3, zego, _ = world
    room = "zdual"
    pubs = [
        colour_publish(svc.publish_url(APP, room, f"d-{c}", "--uid", "dual"), c, 500)
        for c in ("red", "blue")
    ]
    try:
        assert len(svc.wait_streams(svc.app, room, 2)) == 2
        task_id = zego.record(mix_body(room, MixMode=2, MixOutputStreamId="dual"), 5)
        [f] = wait_status(zego, task_id, 3)["RecordFiles"]
    finally:
        for p in pubs:
            p.kill()
            p.wait()
    last = frames_of(download(s3, f, tmp_path))[-FPS]
    assert {colour_at(last, 160, 180), colour_at(last, 480, 180)} == {"red", "blue"}
