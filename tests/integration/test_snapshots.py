"""Screenshots of a live stream over real RTMP: each JPG shows the frame of its moment, also
when the GOP is longer than the interval and the stream has B-frames; none inside a pause."""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cloudrec.media.recorder.snapshots import SnapshotPlan, StreamSnapshotter, write_jpeg
from tests.media import IngestThread, wait_publisher

FPS = 25


@pytest.fixture
def rtmp() -> Iterator[IngestThread]:
    server = IngestThread(play_wait_s=3.0)
    yield server
    server.close()


def counter_publish(url: str, seconds: float, gop: int) -> subprocess.Popen[bytes]:
    """A 64x64 grey picture whose level is its frame number (16 + N, limited range), in real
    time; x264 veryfast keeps B-frames."""
    source = (
        f"color=c=black:s=64x64:r={FPS}:d={seconds},format=yuv420p,geq=lum='16+N':cb=128:cr=128"
    )
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re"]
    args += ["-f", "lavfi", "-i", source, "-c:v", "libx264", "-preset", "veryfast"]
    args += ["-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-pix_fmt", "yuv420p"]
    return subprocess.Popen([*args, "-f", "flv", url], stderr=subprocess.PIPE)


def frame_number(path: Path) -> int:
    with Image.open(path) as im:
        grey = np.asarray(im.convert("RGB"))[32, 32, 0]
    return round(int(grey) * 219 / 255)


@pytest.mark.slow  # a 7 s stream in real time
def test_each_screenshot_shows_its_moments_frame_with_a_long_gop_and_none_falls_in_a_pause(
    rtmp: IngestThread, tmp_path: Path
) -> None:
    publisher = counter_publish(rtmp.url("counter"), 7.0, gop=10 * FPS)
    rtmp.gate.wait_for("published")
    shots: list[tuple[Path, int, tuple[int, int], int]] = []

    def on_shot(path: Path, begin_ms: int, size: tuple[int, int], nbytes: int) -> int:
        shots.append((path, begin_ms, size, nbytes))
        return len(shots)

    start_at = time.time() + 1.5
    plan = SnapshotPlan(
        url=rtmp.url("counter"),
        directory=tmp_path,
        name=lambda ms: f"shot_{ms}.jpg",
        start_at=start_at,
        interval_s=1.0,
    )
    shooter = StreamSnapshotter(plan, on_shot, name="shots-counter")
    shooter.start()
    time.sleep(start_at + 0.5 - time.time())
    shooter.pause(start_at + 0.5)
    time.sleep(1.0)
    shooter.resume(start_at + 1.5)  # the moment 1 s after the start is left out
    time.sleep(start_at + 3.5 - time.time())
    shooter.stop(start_at + 3.5)  # moments 0, 2 and 3 s after the start; not 4
    shooter.join(15)
    assert not shooter.is_alive() and shooter.error is None, shooter.error
    assert shooter.ended_by == "stopped"
    assert [ms for _, ms, _, _ in shots] == [int((start_at + k) * 1000) for k in (0, 2, 3)]
    assert shooter.files == [1, 2, 3]
    for path, ms, size, nbytes in shots:
        assert path == tmp_path / f"shot_{ms}.jpg"
        assert size == (64, 64) and nbytes == path.stat().st_size
        assert not list(tmp_path.glob("*.part"))
    frames = [frame_number(path) for path, *_ in shots]
    # One second apart on the publisher's clock: 25 frames, whatever the GOP (10 s here);
    # one frame of slack for the clock estimate settling.
    steps = [b - a for a, b in itertools.pairwise(frames)]
    assert abs(steps[0] - 2 * FPS) <= 1 and abs(steps[1] - FPS) <= 1, frames
    assert frames[0] > 0  # the stream started before the first moment: not its first frame
    publisher.kill()
    wait_publisher(publisher)


def test_write_jpeg_writes_a_whole_file_with_the_picture(tmp_path: Path) -> None:
    rgb = np.zeros((36, 64, 3), np.uint8)
    rgb[:, :32] = (255, 0, 0)
    rgb[:, 32:] = (0, 0, 255)
    size = write_jpeg(rgb, tmp_path / "a" / "shot.jpg")
    with Image.open(tmp_path / "a" / "shot.jpg") as im:
        assert (im.format, im.size) == ("JPEG", (64, 36))
        pixels = np.asarray(im.convert("RGB")).astype(int)
    assert size == (tmp_path / "a" / "shot.jpg").stat().st_size
    assert pixels[18, 8, 0] > 200 and pixels[18, 56, 2] > 200
    assert not list((tmp_path / "a").glob("*.part"))
