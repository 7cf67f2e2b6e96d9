"""The single-stream recorder against the embedded RTMP server: a pre-encoded FLV published
untouched by ffmpeg (``-c copy``), recorded by a :class:`StreamRecorder`, and the file's
packets compared with the source's, video and audio alike."""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from cloudrec.core.tasks import FileFormat, Media, TrackType
from cloudrec.media.recorder.remux import RecorderPlan, StreamRecorder
from tests.media import IngestThread, wait_publisher, write_flv


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("remux") / "source.flv"
    return write_flv(path, duration_s=4.0, gop=10, sample_rate=48000, channels=2)


@pytest.fixture
def rtmp() -> Iterator[IngestThread]:
    server = IngestThread(play_wait_s=5.0)
    yield server
    server.close()


def hashes(path: Path, kind: str) -> list[str]:
    with av.open(str(path)) as c:
        streams = c.streams.video if kind == "video" else c.streams.audio
        if not streams:
            return []
        return [hashlib.sha1(bytes(p)).hexdigest() for p in c.demux(streams[0]) if p.size]


def is_run_of(recorded: list[str], published: list[str]) -> bool:
    """Whether ``recorded`` is a contiguous run of ``published`` (a tone's audio packets may
    repeat, so every place the first one occurs is tried)."""
    n = len(recorded)
    starts = [i for i, h in enumerate(published) if h == recorded[0]]
    return n > 0 and any(published[i : i + n] == recorded for i in starts)


def record(rtmp: IngestThread, source: Path, out: Path, media: Media, fmt: FileFormat) -> Any:
    """Publish ``source`` in real time and record it from its start until the source ends;
    the recorder and what its callbacks were told."""
    publisher = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(source),
         "-c", "copy", "-f", "flv", rtmp.url("s1")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    opened: list[tuple[FileFormat, Path, TrackType]] = []
    closed: dict[int, dict[str, object]] = {}

    def on_open(fmt: FileFormat, path: Path, track: TrackType, begin_ms: int, size: Any) -> int:
        opened.append((fmt, path, track))
        return len(opened)

    plan = RecorderPlan(
        url=rtmp.url("s1"),
        media=media,
        formats=(fmt,),
        directory=out,
        name=lambda f, track, begin: f"rec_{track.name}.{f.value}",
        start_at=time.time(),
    )
    recorder = StreamRecorder(plan, on_open, lambda i, fields: closed.update({i: fields}), "rec")
    recorder.start()
    code, err = wait_publisher(publisher, 30)
    assert code == 0, err
    recorder.join(30)
    assert not recorder.is_alive() and recorder.error is None, recorder.error
    return recorder, opened, closed


def test_a_recording_holds_a_run_of_the_published_video_and_audio_packets_byte_for_byte(
    rtmp: IngestThread, source: Path, tmp_path: Path
) -> None:
    """Regression (issue 12): a recorder that dropped every audio packet of an audio+video
    stream passed, because only video packets were compared with what was published (audio
    was checked by the presence of its stream)."""
    _, opened, closed = record(rtmp, source, tmp_path, Media.AUDIO_VIDEO, FileFormat.MP4)
    [(fmt, path, track)] = opened
    assert (fmt, track) == (FileFormat.MP4, TrackType.AUDIO_VIDEO)
    # What the recorder reports is what the file holds.
    assert closed[1]["size"] == path.stat().st_size
    with av.open(str(path)) as c:
        spans = [
            (p.pts * p.time_base, (p.pts + p.duration) * p.time_base) for p in c.demux() if p.size
        ]
    probed_ms = float(max(e for _, e in spans) - min(s for s, _ in spans)) * 1000
    assert abs(closed[1]["duration_ms"] - probed_ms) <= 100, (closed[1], probed_ms)
    for kind in ("video", "audio"):
        recorded, published = hashes(path, kind), hashes(source, kind)
        assert len(recorded) >= len(published) // 2, (kind, len(recorded), len(published))
        assert is_run_of(recorded, published), kind
    with av.open(str(path)) as c:
        first = next(p for p in c.demux(c.streams.video[0]) if p.size)
        assert first.is_keyframe


def test_an_audio_recording_holds_every_audio_packet_and_no_video(
    rtmp: IngestThread, source: Path, tmp_path: Path
) -> None:
    _, opened, _ = record(rtmp, source, tmp_path, Media.AUDIO, FileFormat.MP4)
    [(_, path, track)] = opened
    assert track is TrackType.AUDIO
    assert hashes(path, "video") == []
    recorded, published = hashes(path, "audio"), hashes(source, "audio")
    assert is_run_of(recorded, published)
